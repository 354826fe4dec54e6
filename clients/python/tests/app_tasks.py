"""Tasks the tests run, in-process and under a real ``rota-worker`` process."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import rota

registry = rota.Registry()


@dataclass
class Resize:
    url: str
    width: int


@dataclass
class Thumbnail:
    url: str
    pixels: int


@registry.task("images.resize", queue="media", max_attempts=3)
async def resize(args: Resize, ctx: rota.Context) -> Thumbnail:
    return Thumbnail(url=args.url, pixels=args.width * args.width)


@registry.task("math.double", queue="media")
def double(n: int) -> int:
    return n * 2


BROKEN = {"yes": True}


@registry.task("flaky.parse", queue="media", max_attempts=2, backoff=[1])
def parse(text: str) -> int:
    if BROKEN["yes"]:
        raise ValueError(f"cannot parse {text!r}")
    return len(text)


@dataclass
class Nap:
    seconds: float


@registry.task("sleep.nap", queue="default")
async def nap(args: Nap, ctx: rota.Context) -> str:
    log = os.environ.get("ROTA_TEST_LOG")
    seconds = float(os.environ.get("ROTA_TEST_NAP", args.seconds))
    await asyncio.sleep(seconds)
    if log:
        with open(log, "a") as f:
            f.write(f"{ctx.id} {os.getpid()}\n")
    return "rested"


@registry.task("cpu.spin", queue="cpu")
def spin(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@registry.task("cpu.whoami", queue="cpu")
def whoami(rounds: int, ctx: rota.Context) -> int:
    for i in range(rounds):
        ctx.progress(int(100 * (i + 1) / rounds), f"round {i + 1}")
        time.sleep(0.3)
    return os.getpid()
