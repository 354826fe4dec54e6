"""A thumbnail task that fails: retried 3 times (the policy is on the task, so it applies
wherever the job is enqueued from), then dead with its Python traceback; after the fix, the
whole error group is retried at once.

    rota serve &
    python clients/python/examples/thumbnail.py
    rota dead groups                              # the group, its count and message
"""

from __future__ import annotations

from dataclasses import dataclass

import rota

registry = rota.Registry()
FIXED = {"yes": False}


@dataclass
class Thumb:
    image: str
    width: int


@registry.task("images.thumbnail", queue="media", max_attempts=3, backoff=[1, 2])
def thumbnail(job: Thumb, ctx: rota.Context) -> str:
    print(f"attempt {ctx.attempt} at {job.image}")
    if not FIXED["yes"]:
        header = b""
        header[0]  # a corrupt image: IndexError
    return f"{job.width}px thumbnail of {job.image}"


def main() -> None:
    client = rota.Client()
    client.declare_queue("media")
    worker = rota.BackgroundWorker(rota.Worker(registry, concurrency=4))
    handle = client.enqueue(thumbnail, Thumb(image="s3://bucket/corrupt.png", width=128))
    try:
        handle.result(timeout=60)
    except rota.JobFailed as dead:
        print(f"dead after {dead.attempts} attempts: {dead.message}")
        print((dead.traceback or "").strip().splitlines()[-3:])
    FIXED["yes"] = True  # the fix is deployed
    group = next(g for g in client.dead_groups() if "images.thumbnail" in g["kinds"])
    client.retry_dead(group=group["group"])
    print(handle.result(timeout=60))
    worker.stop()


if __name__ == "__main__":
    main()
