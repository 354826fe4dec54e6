"""A nightly report on a schedule that lives in the server, not in a worker: restarting or
redeploying workers loses no run (a slot that comes due while no worker runs waits as an
available job). The schedule carries the task's retry policy.

    rota serve &
    python clients/python/examples/nightly.py
    rota schedules list                           # nightly-report, next slot 03:00 Berlin
"""

from __future__ import annotations

import rota

registry = rota.Registry()


@registry.task("reports.nightly", queue="reports", max_attempts=5)
def nightly_report(recipients: list[str]) -> int:
    print(f"report sent to {len(recipients)} recipient(s)")
    return len(recipients)


def main() -> None:
    client = rota.Client()
    client.declare_queue("reports")
    schedule = client.create_schedule(
        "nightly-report", "0 3 * * *", nightly_report, ["ops@example.com"],
        timezone="Europe/Berlin", misfire="latest",
    )
    print(f"schedule {schedule['name']} next at {schedule['next_slot']}")
    # A worker runs, then stops (a deploy)...
    rota.BackgroundWorker(rota.Worker(registry, concurrency=1)).stop()
    # ...a slot comes due while no worker runs (here: triggered by hand); it waits...
    run = client.job(client.trigger_schedule("nightly-report")["job"]["id"])
    print(f"while no worker runs: {run.status().state}")
    # ...and the restarted worker runs it.
    worker = rota.BackgroundWorker(rota.Worker(registry, concurrency=1))
    print(f"after the restart: reached {run.result(timeout=30)} recipient(s)")
    worker.stop()


if __name__ == "__main__":
    main()
