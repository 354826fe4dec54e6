"""Email, payment and data-sync work on three queues, each with its own worker concurrency.
The queue is part of each task, so producer and worker cannot spell it differently.

    rota serve &                                  # http://127.0.0.1:7700
    python clients/python/examples/queues.py      # ROTA_URL=... for another server

In production each queue gets its own worker process:

    rota-worker examples.queues:registry --queue emails --concurrency 32
    rota-worker examples.queues:registry --queue payments --concurrency 1
"""

from __future__ import annotations

from dataclasses import dataclass

import rota

registry = rota.Registry()


@dataclass
class Email:
    to: str


@dataclass
class Charge:
    order: int
    cents: int


@registry.task("email.send", queue="emails")
async def send_email(email: Email) -> None:
    print(f"email to {email.to}")


@registry.task("payment.charge", queue="payments", max_attempts=10, backoff=[5, 30, 300])
def charge(c: Charge) -> str:
    return f"charged {c.cents} cents for order {c.order}"


@registry.task("sync.account", queue="sync", timeout=300)
async def sync_account(account: int, ctx: rota.Context) -> int:
    ctx.progress(100, f"account {account} synced")
    return 3


def main() -> None:
    client = rota.Client()
    for queue in registry.queues():
        client.declare_queue(queue)
    workers = [
        rota.BackgroundWorker(rota.Worker(registry, queues=["emails"], concurrency=32)),
        rota.BackgroundWorker(rota.Worker(registry, queues=["payments"], concurrency=1)),
        rota.BackgroundWorker(rota.Worker(registry, queues=["sync"], concurrency=4)),
    ]
    emails = client.enqueue_many(send_email, [Email(f"user{i}@example.com") for i in range(10)])
    receipt = client.enqueue(charge, Charge(order=42, cents=1999), unique_key="charge:42")
    synced = client.enqueue(sync_account, 7)
    for handle in emails:
        handle.result(timeout=30)
    print(receipt.result(timeout=30))
    print(f"synced {synced.result(timeout=30)} records")
    for worker in workers:
        worker.stop()


if __name__ == "__main__":
    main()
