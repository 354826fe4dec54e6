"""Task options and argument types: retry_on / discard_on, pydantic models, the fixture."""

from __future__ import annotations

import pydantic
import pytest

import rota
import rota.codec
import rota.testing

rota_server = rota.testing.rota_server_fixture(["opts"])

registry = rota.Registry()


class Order(pydantic.BaseModel):
    id: int
    total: float


class Receipt(pydantic.BaseModel):
    order: int
    charged: float


class Transient(Exception):
    pass


@registry.task("orders.charge", queue="opts", max_attempts=5, backoff=[1], retry_on=(Transient,))
def charge(order: Order) -> Receipt:
    if order.id == 0:
        raise ValueError("order 0 does not exist")  # not a Transient: not retried
    return Receipt(order=order.id, charged=order.total)


@registry.task("orders.audit", queue="opts", max_attempts=5, discard_on=(KeyError,))
def audit(n: int) -> int:
    raise KeyError(n)


def test_pydantic_models_round_trip_and_their_errors_name_the_field(rota_server: rota.testing.RotaServer, start_worker) -> None:
    start_worker(registry, url=rota_server.url)
    client = rota_server.client()
    assert client.enqueue(charge, Order(id=7, total=9.5)).result(timeout=20) == Receipt(order=7, charged=9.5)
    bad = client.enqueue("orders.charge", {"id": "seven", "total": 1}, queue="opts")
    with pytest.raises(rota.JobFailed) as failed:
        bad.result(timeout=20)
    assert failed.value.attempts == 1 and "id" in failed.value.message


def test_retry_on_and_discard_on_decide_what_is_retried(rota_server: rota.testing.RotaServer, start_worker) -> None:
    start_worker(registry, url=rota_server.url)
    client = rota_server.client()
    for handle in (client.enqueue(charge, Order(id=0, total=1)), client.enqueue(audit, 3)):
        with pytest.raises(rota.JobFailed) as failed:
            handle.result(timeout=20)
        assert failed.value.attempts == 1, f"not retried: {failed.value.message}"


@registry.task("orders.slow", queue="opts", max_attempts=1, timeout=1)
async def slow(n: int) -> int:
    import asyncio

    await asyncio.sleep(30)
    return n


def test_a_handler_past_its_timeout_fails_with_a_timeout_error(rota_server: rota.testing.RotaServer, start_worker) -> None:
    start_worker(registry, url=rota_server.url)
    handle = rota_server.client().enqueue(slow, 1)
    with pytest.raises(rota.JobFailed) as failed:
        handle.result(timeout=20)
    assert failed.value.error_type == "TimeoutError", failed.value.message


def test_tokens_from_the_environment_and_problems_for_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    secret = "rota_test_token_produce"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    config = f'[[token]]\nname = "producer"\nscope = "produce"\nhash = "sha256:{digest}"\n'
    with rota.testing.RotaServer(config, queues=["opts"]) as server:
        with pytest.raises(rota.RotaError) as refused:
            rota.Client(server.url, token="").enqueue("k", {}, queue="opts")
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
        monkeypatch.setenv("ROTA_URL", server.url)
        monkeypatch.setenv("ROTA_TOKEN", secret)
        handle = rota.Client().enqueue("k", {}, queue="opts")
        assert handle.status().state == "available"


def test_typeddict_arguments_are_checked_naming_the_field() -> None:
    from typing import TypedDict

    class Point(TypedDict):
        x: int
        y: int

    assert rota.codec.from_json(Point, {"x": 1, "y": 2}) == {"x": 1, "y": 2}
    with pytest.raises(rota.DecodeError) as missing:
        rota.codec.from_json(Point, {"x": 1})
    assert missing.value.field == "y"
    with pytest.raises(rota.DecodeError) as wrong:
        rota.codec.from_json(list[Point], [{"x": 1, "y": "2"}])
    assert wrong.value.field == "[0].y"
