"""``Client`` and ``AsyncClient``: the same methods, blocking or awaitable."""

from __future__ import annotations

import datetime as dt
import os
import time
import urllib.parse
from typing import Any, Generic, TypeVar, Union, overload

import httpx

from .errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout, RotaError
from .task import Task
from .transport import Transport
from .wire import duration, job_request

A = TypeVar("A")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:7700"
#: Longest one long-poll request waits (the server's limit).
WAIT_STEP = 60.0
FINAL = ("completed", "dead", "cancelled")


def _settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    base = (url or os.environ.get("ROTA_URL") or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"url: expected something like {DEFAULT_URL}, got {base!r}")
    token = token if token is not None else os.environ.get("ROTA_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return base, headers


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.is_success:
        return body
    raise RotaError.from_problem(response.status_code, body)


def _decoded(status: int, body: Any) -> Any:
    if 200 <= status < 300:
        return body
    raise RotaError.from_problem(status, body)


def _path(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _enqueue_body(task_or_kind: Union[Task[Any, Any], str], args: Any, options: dict[str, Any]) -> dict[str, Any]:
    from .codec import to_json

    queue = options.pop("queue", None)
    if isinstance(task_or_kind, Task):
        o = task_or_kind.options
        return job_request(
            queue or o.queue,
            task_or_kind.kind,
            to_json(args),
            max_attempts=o.max_attempts,
            backoff=list(o.backoff) if o.backoff else None,
            timeout=o.timeout,
            **options,
        )
    if queue is None:
        raise ValueError(f"enqueue({task_or_kind!r}, ...): give queue= for an untyped job")
    return job_request(queue, task_or_kind, to_json(args), **options)


class JobStatus:
    """A job as the server last saw it (``raw`` is the whole document)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.id: str = raw["id"]
        self.state: str = raw["state"]
        self.attempt: int = raw.get("attempt", 0)
        self.progress: int | None = raw.get("progress")
        self.progress_message: str | None = raw.get("progress_message")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    def __repr__(self) -> str:
        return f"JobStatus(id={self.id!r}, state={self.state!r}, attempt={self.attempt})"


def _outcome(task: Task[Any, R] | None, status: JobStatus) -> R:
    raw = status.raw
    if status.state == "completed":
        result = raw.get("result")
        return task.decode_result(result) if task is not None else result  # type: ignore[return-value]
    if status.state == "cancelled":
        raise JobCancelled(status.id)
    errors = raw.get("errors") or [{}]
    last = errors[-1]
    message = str(last.get("message", ""))
    error_type = message.split(":", 1)[0] if ":" in message else "Error"
    raise JobFailed(status.id, status.attempt, error_type, message, last.get("backtrace"))


class JobHandle(Generic[R]):
    """An enqueued job whose result is an ``R``."""

    def __init__(self, client: Client, job_id: str, task: Task[Any, R] | None, duplicate: bool = False) -> None:
        self.client = client
        self.id = job_id
        self.task = task
        self.duplicate = duplicate

    def status(self) -> JobStatus:
        return JobStatus(self.client._get(f"/v1/jobs/{_path(self.id)}"))

    def progress(self) -> tuple[int | None, str | None]:
        s = self.status()
        return s.progress, s.progress_message

    def cancel(self) -> JobStatus:
        return JobStatus(self.client._post(f"/v1/jobs/{_path(self.id)}/cancel", {}))

    def result(self, timeout: float | None = None) -> R:
        """Waits (through the server's long poll) until the job is final: its result, or
        :class:`JobFailed` / :class:`JobCancelled`; :class:`ResultTimeout` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_STEP if deadline is None else max(0.001, deadline - time.monotonic())
            raw = self.client._get(f"/v1/jobs/{_path(self.id)}?wait={duration(min(left, WAIT_STEP))}")
            status = JobStatus(raw)
            if status.is_final:
                return _outcome(self.task, status)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, status.state)

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"


class AsyncJobHandle(Generic[R]):
    """An enqueued job whose result is an ``R`` (awaitable methods)."""

    def __init__(self, client: AsyncClient, job_id: str, task: Task[Any, R] | None, duplicate: bool = False) -> None:
        self.client = client
        self.id = job_id
        self.task = task
        self.duplicate = duplicate

    async def status(self) -> JobStatus:
        return JobStatus(await self.client._get(f"/v1/jobs/{_path(self.id)}"))

    async def progress(self) -> tuple[int | None, str | None]:
        s = await self.status()
        return s.progress, s.progress_message

    async def cancel(self) -> JobStatus:
        return JobStatus(await self.client._post(f"/v1/jobs/{_path(self.id)}/cancel", {}))

    async def result(self, timeout: float | None = None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_STEP if deadline is None else max(0.001, deadline - time.monotonic())
            raw = await self.client._get(f"/v1/jobs/{_path(self.id)}?wait={duration(min(left, WAIT_STEP))}")
            status = JobStatus(raw)
            if status.is_final:
                return _outcome(self.task, status)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, status.state)


class Client:
    """A blocking client for one Rota server (``ROTA_URL``, ``ROTA_TOKEN`` by default).
    Safe to share between threads."""

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 90.0) -> None:
        self.url, headers = _settings(url, token)
        self._http = Transport(self.url, headers, timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        return _decoded(*self._http.request("GET", path))

    def _post(self, path: str, body: Any) -> Any:
        return _decoded(*self._http.request("POST", path, body))

    @overload
    def enqueue(self, task: Task[A, R], args: A, *, delay: float | None = ..., at: dt.datetime | None = ...,
                priority: int | None = ..., unique_key: str | None = ..., queue: str | None = ...) -> JobHandle[R]: ...

    @overload
    def enqueue(self, task: str, args: Any, *, delay: float | None = ..., at: dt.datetime | None = ...,
                priority: int | None = ..., unique_key: str | None = ..., queue: str | None = ...) -> JobHandle[Any]: ...

    def enqueue(self, task: Union[Task[Any, Any], str], args: Any, *, delay: float | None = None,
                at: dt.datetime | None = None, priority: int | None = None, unique_key: str | None = None,
                queue: str | None = None) -> JobHandle[Any]:
        """Enqueues one job: a task with its arguments (its queue and retry policy travel
        with it), or a kind by name with ``queue=`` for producers without the worker code."""
        body = _enqueue_body(task, args, dict(delay=delay, at=at, priority=priority, unique_key=unique_key, queue=queue))
        answer = self._post("/v1/jobs", body)
        return JobHandle(self, answer["job"]["id"], task if isinstance(task, Task) else None, answer.get("duplicate", False))

    def enqueue_many(self, task: Task[A, R], args: list[A], **options: Any) -> list[JobHandle[R]]:
        """Enqueues many jobs of one task in one request, all or none."""
        bodies = [_enqueue_body(task, a, dict(options)) for a in args]
        answer = self._post("/v1/jobs/batch?return=ids", {"jobs": bodies})
        return [JobHandle(self, i, task) for i in answer["ids"]]

    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle on a job enqueued elsewhere."""
        return JobHandle(self, job_id, None)

    def declare_queue(self, name: str, **config: Any) -> dict[str, Any]:
        """Declares a queue (or updates it): ``concurrency=``, ``max_attempts=``,
        ``backoff=[30, 60]``, ``lease=`` seconds and the rest of the API's fields."""
        return dict(_decoded(*self._http.request("PUT", f"/v1/queues/{_path(name)}", _queue_body(config))))

    def create_schedule(self, name: str, cron: str, task: Task[Any, Any], args: Any, **fields: Any) -> dict[str, Any]:
        """Creates or replaces a schedule that enqueues ``task`` with ``args`` (its policy
        included); ``fields`` are the API's (``timezone``, ``misfire``, ...)."""
        return dict(self._post("/v1/schedules", _schedule_body(name, cron, task, args, fields)))

    def schedules(self) -> list[dict[str, Any]]:
        return list(self._get("/v1/schedules")["schedules"])

    def trigger_schedule(self, name: str) -> Any:
        return self._post(f"/v1/schedules/{_path(name)}/trigger", {})

    def dead(self, **query: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode(query)
        return list(self._get(f"/v1/dead{'?' + q if q else ''}")["jobs"])

    def dead_groups(self) -> list[dict[str, Any]]:
        return list(self._get("/v1/dead/groups")["groups"])

    def retry_dead(self, *, ids: list[str] | None = None, group: str | None = None, queues: list[str] | None = None) -> Any:
        return self._post("/v1/dead/retry", _selection(ids, group, queues))

    def purge_dead(self, *, ids: list[str] | None = None, group: str | None = None, queues: list[str] | None = None) -> int:
        return int(self._post("/v1/dead/purge", _selection(ids, group, queues))["count"])


class AsyncClient:
    """The same methods as :class:`Client`, awaitable."""

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 90.0) -> None:
        self.url, headers = _settings(url, token)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, path: str) -> Any:
        return _answer(await self._http.get(path))

    async def _post(self, path: str, body: Any) -> Any:
        return _answer(await self._http.post(path, json=body))

    @overload
    async def enqueue(self, task: Task[A, R], args: A, *, delay: float | None = ..., at: dt.datetime | None = ...,
                      priority: int | None = ..., unique_key: str | None = ..., queue: str | None = ...) -> AsyncJobHandle[R]: ...

    @overload
    async def enqueue(self, task: str, args: Any, *, delay: float | None = ..., at: dt.datetime | None = ...,
                      priority: int | None = ..., unique_key: str | None = ..., queue: str | None = ...) -> AsyncJobHandle[Any]: ...

    async def enqueue(self, task: Union[Task[Any, Any], str], args: Any, *, delay: float | None = None,
                      at: dt.datetime | None = None, priority: int | None = None, unique_key: str | None = None,
                      queue: str | None = None) -> AsyncJobHandle[Any]:
        body = _enqueue_body(task, args, dict(delay=delay, at=at, priority=priority, unique_key=unique_key, queue=queue))
        answer = await self._post("/v1/jobs", body)
        return AsyncJobHandle(self, answer["job"]["id"], task if isinstance(task, Task) else None, answer.get("duplicate", False))

    async def enqueue_many(self, task: Task[A, R], args: list[A], **options: Any) -> list[AsyncJobHandle[R]]:
        bodies = [_enqueue_body(task, a, dict(options)) for a in args]
        answer = await self._post("/v1/jobs/batch?return=ids", {"jobs": bodies})
        return [AsyncJobHandle(self, i, task) for i in answer["ids"]]

    def job(self, job_id: str) -> AsyncJobHandle[Any]:
        return AsyncJobHandle(self, job_id, None)

    async def declare_queue(self, name: str, **config: Any) -> dict[str, Any]:
        return dict(_answer(await self._http.put(f"/v1/queues/{_path(name)}", json=_queue_body(config))))

    async def create_schedule(self, name: str, cron: str, task: Task[Any, Any], args: Any, **fields: Any) -> dict[str, Any]:
        return dict(await self._post("/v1/schedules", _schedule_body(name, cron, task, args, fields)))

    async def schedules(self) -> list[dict[str, Any]]:
        return list((await self._get("/v1/schedules"))["schedules"])

    async def trigger_schedule(self, name: str) -> Any:
        return await self._post(f"/v1/schedules/{_path(name)}/trigger", {})

    async def dead(self, **query: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode(query)
        return list((await self._get(f"/v1/dead{'?' + q if q else ''}"))["jobs"])

    async def dead_groups(self) -> list[dict[str, Any]]:
        return list((await self._get("/v1/dead/groups"))["groups"])

    async def retry_dead(self, *, ids: list[str] | None = None, group: str | None = None, queues: list[str] | None = None) -> Any:
        return await self._post("/v1/dead/retry", _selection(ids, group, queues))

    async def purge_dead(self, *, ids: list[str] | None = None, group: str | None = None, queues: list[str] | None = None) -> int:
        return int((await self._post("/v1/dead/purge", _selection(ids, group, queues)))["count"])


def _schedule_body(name: str, cron: str, task: Task[Any, Any], args: Any, fields: dict[str, Any]) -> dict[str, Any]:
    job = _enqueue_body(task, args, {})
    return {"name": name, "cron": cron, **job, **fields}


def _queue_body(config: dict[str, Any]) -> dict[str, Any]:
    body = dict(config)
    if "backoff" in body and isinstance(body["backoff"], (list, tuple)):
        body["backoff"] = {"intervals": [duration(b) for b in body["backoff"]]}
    for key in ("lease", "timeout"):
        if isinstance(body.get(key), (int, float)):
            body[key] = duration(body[key])
    return body


def _selection(ids: list[str] | None, group: str | None, queues: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ids:
        body["ids"] = ids
    if group:
        body["group"] = group
    if queues:
        body["queues"] = queues
    if not body:
        raise ValueError("name the dead jobs: ids=, group= or queues=")
    return body


__all__ = ["AsyncClient", "AsyncJobHandle", "Client", "JobHandle", "JobNotFound", "JobStatus"]
