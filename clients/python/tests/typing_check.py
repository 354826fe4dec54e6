"""Checked by ``mypy --strict`` (not run): the types users get from the public API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typing_extensions import assert_type

import rota

registry = rota.Registry()


@dataclass
class Resize:
    url: str
    width: int


@registry.task("images.resize", queue="media")
async def resize(args: Resize, ctx: rota.Context) -> str:
    return args.url


@registry.task("math.double")
def double(n: int) -> int:
    return n * 2


def produce(client: rota.Client) -> None:
    assert_type(resize, rota.Task[Resize, str])
    assert_type(double, rota.Task[int, int])
    handle = client.enqueue(resize, Resize("a", 1), delay=5)
    assert_type(handle, rota.JobHandle[str])
    assert_type(handle.result(timeout=1), str)
    assert_type(client.enqueue_many(double, [1, 2]), list[rota.JobHandle[int]])
    assert_type(client.enqueue("any.kind", {"x": 1}, queue="q"), rota.JobHandle[Any])
    # Arguments of the wrong type are refused (strict mode flags an unneeded ignore).
    client.enqueue(resize, 5)  # type: ignore[misc]


async def produce_async(client: rota.AsyncClient) -> None:
    handle = await client.enqueue(double, 2)
    assert_type(handle, rota.AsyncJobHandle[int])
    assert_type(await handle.result(), int)
