"""Task options and argument types: retry_on / discard_on, pydantic models, the fixture."""

from __future__ import annotations

import pydantic
import pytest

import rota
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
