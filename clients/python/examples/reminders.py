"""An event job that enqueues a delayed reminder job. Neither task sets a retry policy: both
take their queue's (declared once, on the queue), so a reminder enqueued from inside a
handler retries exactly like the event that made it.

    rota serve &
    python clients/python/examples/reminders.py
"""

from __future__ import annotations

from dataclasses import dataclass

import rota

registry = rota.Registry()
client = rota.Client()


@dataclass
class SignedUp:
    user: str


@registry.task("reminders.send", queue="reminders")
def send_reminder(user: str) -> str:
    return f"reminded {user}"


@registry.task("events.signed_up", queue="reminders")
def signed_up(event: SignedUp) -> str:
    handle = client.enqueue(send_reminder, event.user, delay=2)  # days, in real life
    return handle.id


def main() -> None:
    client.declare_queue("reminders", max_attempts=8, backoff=[10, 60, 600])
    worker = rota.BackgroundWorker(rota.Worker(registry, concurrency=4))
    event = client.enqueue(signed_up, SignedUp(user="ada"))
    reminder = client.job(event.result(timeout=30))
    print(reminder.result(timeout=30))
    for handle in (event, reminder):
        status = handle.status()
        print(f"{status.raw['kind']}: max_attempts {status.raw['max_attempts']}, backoff {status.raw['backoff']}")
    worker.stop()


if __name__ == "__main__":
    main()
