"""Errors: problems the server answered, and what became of jobs."""

from __future__ import annotations

from typing import Any


class RotaError(Exception):
    """The server answered with a problem (``application/problem+json``).

    ``code`` is stable (``queue_not_declared``, ``job_not_found``, ``queue_full``, ...),
    ``detail`` says what went wrong and names the field, ``field`` is that field.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{detail} ({code})")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.retry_after = retry_after

    @classmethod
    def from_problem(cls, status: int, body: Any) -> RotaError:
        if not isinstance(body, dict):
            return cls(status, "unexpected_answer", f"HTTP {status}: {str(body)[:200]}")
        kind = JobNotFound if body.get("code") == "job_not_found" else cls
        return kind(
            int(body.get("status", status)),
            str(body.get("code", "unknown")),
            str(body.get("detail", "")),
            body.get("field"),
            body.get("retry_after"),
        )


class JobNotFound(RotaError):
    """No job has this id (never confused with a job that is still pending)."""


class JobFailed(Exception):
    """The job is dead: it failed its last attempt, or was discarded.

    ``error_type``, ``message`` and ``traceback`` are the last attempt's, as the worker
    reported them (text only: nothing is ever unpickled).
    """

    def __init__(
        self, job_id: str, attempts: int, error_type: str, message: str, traceback: str | None
    ) -> None:
        super().__init__(f"job {job_id} is dead after {attempts} attempt(s): {message}")
        self.job_id = job_id
        self.attempts = attempts
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class JobCancelled(Exception):
    """The job was cancelled."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class ResultTimeout(TimeoutError):
    """``result(timeout=...)`` ran out while the job was still pending or running."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} is still {state}")
        self.job_id = job_id
        self.state = state


class Retry(Exception):
    """Raise from a handler to run the job again after ``delay`` seconds without using an
    attempt (a snooze)."""

    def __init__(self, delay: float = 30.0) -> None:
        super().__init__(f"retry in {delay}s")
        self.delay = delay


class Discard(Exception):
    """Raise from a handler to fail the job for good: it goes to dead without retries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
