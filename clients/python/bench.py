"""Throughput of the Python client and worker against a real ``rota serve``.

    ROTA_BIN=target/release/rota python clients/python/bench.py [--jobs 20000]

Prints single enqueues/s (one synchronous client), enqueue_many jobs/s (batches of 1,000)
and the drain rate of one worker process (no-op async handler).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import rota
from rota.testing import RotaServer

registry = rota.Registry()


@registry.task("bench.noop", queue="bench")
async def noop(i: int) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with RotaServer(queues=["bench"]) as server:
        client = server.client()
        started = time.perf_counter()
        for i in range(args.single):
            client.enqueue(noop, i)
        single = args.single / (time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, args.jobs, 1000):
            client.enqueue_many(noop, list(range(start, min(start + 1000, args.jobs))))
        many = args.jobs / (time.perf_counter() - started)
        total = args.jobs + args.single
        worker = rota.Worker(registry, queues=["bench"], concurrency=args.concurrency, url=server.url)

        async def drain() -> float:
            stop = asyncio.Event()
            running = asyncio.create_task(worker.arun(stop))
            began = time.perf_counter()
            async with rota.AsyncClient(server.url) as ac:
                while True:
                    view = await ac._get("/v1/queues/bench")
                    counts = view["counts"]
                    if counts.get("completed", 0) >= total:
                        break
                    await asyncio.sleep(0.01)
            took = time.perf_counter() - began
            stop.set()
            await running
            return total / took

        rate = asyncio.run(drain())
        print(f"single enqueue: {single:,.0f}/s  enqueue_many: {many:,.0f} jobs/s  "
              f"drain (1 process, concurrency {args.concurrency}): {rate:,.0f} jobs/s")


if __name__ == "__main__":
    main()
