"""What the OpenAPI document cannot say, for Schemathesis' ``positive_data_acceptance``
check (S1, crates/rota-cli/tests/security.rs): requests drawn from the document are mended
where a rule spans fields or needs a lookup, so that "the server accepts every request the
document allows" holds for the rest. Every rule here is also in a description:

- no NUL character inside free-form JSON (``args``, ``result``, ``checkpoint``): no store
  keeps one;
- which cron expressions parse, and which time zones exist;
- a debounce's ``max_wait`` is at least its ``period``; an exponential backoff's ``max`` at
  least its ``initial``.

And one thing JSON Schema allows that a typed server does not: ``498.0`` is an ``integer``
to JSON Schema, a float to serde; integral floats are sent as integers.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: Any) -> float | None:
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", text) if isinstance(text, str) else None
    return int(match.group(1)) * _UNIT[match.group(2)] if match else None


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _mend_backoff(backoff: Any) -> None:
    exp = backoff.get("exponential") if isinstance(backoff, dict) else None
    if isinstance(exp, dict):
        initial, longest = _seconds(exp.get("initial")), _seconds(exp.get("max"))
        if initial is not None and longest is not None and longest < initial:
            exp["max"] = exp["initial"]


def _mend_job(job: Any) -> None:
    if not isinstance(job, dict):
        return
    _mend_backoff(job.get("backoff"))
    debounce = job.get("debounce")
    if isinstance(debounce, dict):
        period, wait = _seconds(debounce.get("period")), _seconds(debounce.get("max_wait"))
        if period is not None and wait is not None and wait < period:
            debounce["max_wait"] = debounce["period"]


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    body = _without_nul(body)
    operation = getattr(ctx, "operation", None)
    path = getattr(operation, "path", "")
    if not isinstance(body, dict):
        return body
    if path == "/v1/jobs":
        _mend_job(body)
    elif path == "/v1/jobs/batch":
        for job in body.get("jobs") or []:
            _mend_job(job)
    elif path == "/v1/schedules":
        body["cron"] = "@hourly"
        if body.get("timezone") is not None:
            body["timezone"] = "UTC"
        _mend_backoff(body.get("backoff"))
    elif path == "/v1/queues/{name}":
        _mend_backoff(body.get("backoff"))
    return body


@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    return _without_nul(query)


@schemathesis.hook
def map_path_parameters(ctx: Any, parameters: Any) -> Any:
    return _without_nul(parameters)
