"""Regenerating embeddings: the handler reports progress (never blocking its work), the
caller watches it and waits for ``result()``, which returns as soon as the job completes
(the server's long poll, not a polling loop).

    rota serve &
    python clients/python/examples/embeddings.py
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import rota

registry = rota.Registry()


@dataclass
class Regenerate:
    collection: str
    documents: int


@registry.task("embeddings.regenerate", queue="ml", timeout=600)
async def regenerate(job: Regenerate, ctx: rota.Context) -> int:
    import asyncio

    for done in range(1, job.documents + 1):
        await asyncio.sleep(0.05)
        ctx.progress(done * 100 // job.documents, f"{done}/{job.documents} of {job.collection}")
    return job.documents


def main() -> None:
    client = rota.Client()
    client.declare_queue("ml")
    worker = rota.BackgroundWorker(rota.Worker(registry, concurrency=2))
    handle = client.enqueue(regenerate, Regenerate(collection="handbook", documents=40))
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            percent, message = handle.progress()
            if percent is not None:
                print(f"{percent:>3} % {message}")
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    print(f"regenerated {handle.result(timeout=120)} vectors")
    done.set()
    watcher.join()
    worker.stop()


if __name__ == "__main__":
    main()
