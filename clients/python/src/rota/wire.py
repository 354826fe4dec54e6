"""The shapes of the `/v1` wire: durations and job requests."""

from __future__ import annotations

import datetime as dt
from typing import Any


def duration(seconds: float) -> str:
    """``90`` → ``"90s"``, ``0.25`` → ``"250ms"``: the server's duration text."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def timestamp(at: dt.datetime) -> str:
    """An aware datetime as RFC 3339 (naive datetimes are refused: whose local time?)."""
    if at.tzinfo is None:
        raise ValueError("at: give an aware datetime (with tzinfo), such as datetime.now(timezone.utc)")
    return at.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def job_request(
    queue: str,
    kind: str,
    args: Any,
    *,
    delay: float | None = None,
    at: dt.datetime | None = None,
    priority: int | None = None,
    unique_key: str | None = None,
    max_attempts: int | None = None,
    backoff: list[float] | None = None,
    timeout: float | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` (only what is set)."""
    if delay is not None and at is not None:
        raise ValueError("give either delay or at, not both")
    body: dict[str, Any] = {"queue": queue, "kind": kind, "args": args}
    if delay is not None:
        body["delay"] = duration(delay)
    if at is not None:
        body["run_at"] = timestamp(at)
    if priority is not None:
        body["priority"] = priority
    if unique_key is not None:
        body["unique_key"] = unique_key
    if max_attempts is not None:
        body["max_attempts"] = max_attempts
    if backoff:
        body["backoff"] = {"intervals": [duration(b) for b in backoff]}
    if timeout is not None:
        body["timeout"] = duration(timeout)
    if tags:
        body["tags"] = list(tags)
    return body


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"1m 30s"`` → ``90.0``: the server's duration text, in seconds."""
    total, number, unit = 0.0, "", ""
    for ch in text.replace(" ", "") + "\0":
        if ch.isdigit() or ch == ".":
            if unit:
                total += float(number) * _UNITS[unit]
                number, unit = "", ""
            number += ch
        elif ch.isalpha():
            unit += ch
        else:
            if number:
                if unit not in _UNITS:
                    raise ValueError(f"not a duration: {text!r}")
                total += float(number) * _UNITS[unit]
    return total
