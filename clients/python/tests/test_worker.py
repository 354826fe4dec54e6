"""The client and worker against a real ``rota serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rota
from rota.testing import RotaServer

import app_tasks
from app_tasks import Nap, Resize, Thumbnail


def test_a_typed_round_trip_with_async_and_sync_handlers(server: RotaServer, start_worker) -> None:
    start_worker(app_tasks.registry, queues=["media"], url=server.url)
    client = server.client()
    handle = client.enqueue(app_tasks.resize, Resize(url="s3://a.png", width=8))
    assert handle.result(timeout=20) == Thumbnail(url="s3://a.png", pixels=64)
    # The policy declared on the task travelled with the job.
    assert handle.status().raw["max_attempts"] == 3
    doubled = client.enqueue_many(app_tasks.double, [1, 2, 3])
    assert [h.result(timeout=20) for h in doubled] == [2, 4, 6]
    # Untyped, by kind, for producers without the worker code.
    raw = client.enqueue("math.double", 21, queue="media")
    assert raw.result(timeout=20) == 42


def test_the_async_client_has_the_same_methods(server: RotaServer, start_worker) -> None:
    start_worker(app_tasks.registry, queues=["media"], url=server.url)

    async def main() -> Thumbnail:
        async with rota.AsyncClient(server.url) as client:
            handle = await client.enqueue(app_tasks.resize, Resize(url="x", width=3))
            return await handle.result(timeout=20)

    assert asyncio.run(main()) == Thumbnail(url="x", pixels=9)


def test_retry_then_dead_with_the_traceback_then_retried_by_group(server: RotaServer, start_worker) -> None:
    app_tasks.BROKEN["yes"] = True
    start_worker(app_tasks.registry, queues=["media"], url=server.url)
    client = server.client()
    handle = client.enqueue(app_tasks.parse, "abc")
    with pytest.raises(rota.JobFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.attempts == 2
    assert failed.value.error_type == "ValueError"
    assert "cannot parse 'abc'" in failed.value.message
    assert failed.value.traceback and "raise ValueError" in failed.value.traceback
    # The fix is deployed; the whole group is retried at once.
    app_tasks.BROKEN["yes"] = False
    groups = client.dead_groups()
    assert len(groups) == 1 and groups[0]["count"] == 1
    client.retry_dead(group=groups[0]["group"])
    assert handle.result(timeout=20) == 3


def test_arguments_that_do_not_decode_fail_for_good_naming_the_field(server: RotaServer, start_worker) -> None:
    start_worker(app_tasks.registry, queues=["media"], url=server.url)
    client = server.client()
    bad = client.enqueue("images.resize", {"url": "x", "width": "wide"}, queue="media")
    with pytest.raises(rota.JobFailed) as failed:
        bad.result(timeout=20)
    assert failed.value.attempts == 1, "not retried"
    assert "`width`" in failed.value.message and "images.resize" in failed.value.message
    good = client.enqueue(app_tasks.resize, Resize(url="y", width=2))
    assert good.result(timeout=20).pixels == 4


def test_progress_is_visible_while_running_and_result_returns_at_completion(server: RotaServer, start_worker) -> None:
    registry = rota.Registry()
    release = threading.Event()

    @registry.task("report.build", queue="media")
    def build(n: int, ctx: rota.Context) -> int:
        ctx.progress(50, "half way")
        release.wait(20)
        return n

    start_worker(registry, queues=["media"], url=server.url)
    client = server.client()
    handle = client.enqueue(build, 7)
    deadline = time.monotonic() + 10
    while handle.progress() != (50, "half way"):
        assert time.monotonic() < deadline, "progress never showed"
        time.sleep(0.05)
    waited: list[float] = []

    def wait() -> None:
        handle.result(timeout=30)
        waited.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    released = time.monotonic()
    release.set()
    waiter.join(20)
    assert waited, "result() never returned"
    # Through the long poll: not a polling interval after completion.
    assert waited[0] - released < 0.5, waited[0] - released


def test_a_result_the_server_refuses_fails_that_job_and_the_worker_goes_on(server: RotaServer, start_worker) -> None:
    registry = rota.Registry()

    @registry.task("text.echo", queue="media", max_attempts=3)
    async def echo(text: str) -> str:
        return "a\x00b" if text == "nul" else text

    worker = start_worker(registry, queues=["media"], url=server.url, concurrency=4)
    client = server.client()
    handles = [client.enqueue(echo, text) for text in ["a", "b", "nul", "c", "d"]]
    with pytest.raises(rota.JobFailed) as failed:
        handles[2].result(timeout=20)
    assert failed.value.attempts == 1, "not retried: the same result would be refused again"
    assert "result refused by the server" in failed.value.message
    assert "NUL" in failed.value.message
    assert [handles[i].result(timeout=20) for i in (0, 1, 3, 4)] == ["a", "b", "c", "d"]
    assert worker.running
    assert client.enqueue(echo, "after").result(timeout=20) == "after"


def test_a_cancel_reaches_a_running_async_handler(server: RotaServer, start_worker) -> None:
    registry = rota.Registry()
    seen: list[str] = []

    @registry.task("wait.forever", queue="media")
    async def forever(n: int, ctx: rota.Context) -> None:
        seen.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    start_worker(registry, queues=["media"], url=server.url)
    client = server.client()
    handle = client.enqueue(forever, 1)
    deadline = time.monotonic() + 10
    while "started" not in seen:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    asked = time.monotonic()
    handle.cancel()
    with pytest.raises(rota.JobCancelled):
        handle.result(timeout=10)
    assert "cancelled" in seen
    assert time.monotonic() - asked < 3


def test_a_cpu_bound_sync_handler_keeps_its_lease() -> None:
    with RotaServer('[queues.cpu]\nlease = "2s"\n') as server:
        worker = rota.Worker(app_tasks.registry, queues=["cpu"], url=server.url, concurrency=1)
        client = server.client()
        handle = client.enqueue(app_tasks.spin, 5.0)

        async def main() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(worker.arun(stop))
            await asyncio.to_thread(handle.result, 30)
            stop.set()
            await running

        asyncio.run(main())
        status = handle.status()
        assert status.state == "completed"
        assert status.attempt == 1, "the lease (2 s) was never lost during 5 s of CPU"


def test_sigterm_hands_unfinished_leases_back_and_another_worker_completes_them(server: RotaServer, start_worker, tmp_path: Path) -> None:
    log = tmp_path / "done.log"
    path = os.pathsep.join(p for p in [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")] if p)
    env = dict(os.environ, ROTA_TEST_LOG=str(log), PYTHONPATH=path)
    client = server.client()
    handles = client.enqueue_many(app_tasks.nap, [Nap(seconds=60) for _ in range(4)])
    worker = subprocess.Popen(
        [sys.executable, "-m", "rota.cli", "app_tasks:registry", "--queue", "default",
         "--concurrency", "4", "--grace", "1", "--url", server.url],
        env=env, cwd=os.path.dirname(__file__),
    )
    deadline = time.monotonic() + 15
    while sum(h.status().state == "running" for h in handles) < 4:
        assert time.monotonic() < deadline, "the jobs never ran"
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    # At once, not after the lease: available again, no attempt used.
    states = [h.status() for h in handles]
    assert [s.state for s in states] == ["available"] * 4
    os.environ["ROTA_TEST_NAP"] = "0"
    os.environ["ROTA_TEST_LOG"] = str(log)
    try:
        start_worker(app_tasks.registry, queues=["default"], url=server.url)
        assert [h.result(timeout=20) for h in handles] == ["rested"] * 4
    finally:
        del os.environ["ROTA_TEST_NAP"]
        del os.environ["ROTA_TEST_LOG"]
    lines = log.read_text().split()
    ids = lines[0::2]
    assert sorted(ids) == sorted(h.id for h in handles), "none lost, none twice"
    assert all(h.status().attempt == 1 for h in handles)


def test_a_mistyped_flag_fails_once_with_a_suggestion() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "rota.cli", "app_tasks:registry", "--concurency", "4"],
        capture_output=True, text=True, cwd=os.path.dirname(__file__),
    )
    assert run.returncode == 2
    assert "did you mean --concurrency?" in run.stderr


def test_the_two_clients_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")} - {"close", "aclose"}

    assert public(rota.Client) == public(rota.AsyncClient)
    assert public(rota.JobHandle) == public(rota.AsyncJobHandle)


def test_a_schedule_carries_the_task_policy_and_errors_name_the_field(server: RotaServer) -> None:
    client = server.client()
    created = client.create_schedule("nightly", "0 3 * * *", app_tasks.parse, "x", timezone="Europe/Berlin")
    assert created["queue"] == "media" and created["timezone"] == "Europe/Berlin"
    fired = client.trigger_schedule("nightly")["job"]
    # The task's retry policy travels with scheduled runs too.
    assert fired["max_attempts"] == 2 and fired["backoff"] == {"intervals": ["1s"]}
    with pytest.raises(rota.RotaError) as bad:
        client.create_schedule("broken", "not cron", app_tasks.parse, "x")
    assert bad.value.code == "invalid_field" and bad.value.field == "cron"
    with pytest.raises(rota.JobNotFound):
        client.job("01a23838-9e9d-73be-a1c0-7f965b6312f4").status()
    with pytest.raises(rota.RotaError) as undeclared:
        client.enqueue("x", {}, queue="nobody-reads-this")
    assert undeclared.value.code == "queue_not_declared"


def test_drain_runs_a_real_worker_until_the_queues_are_empty(server: RotaServer) -> None:
    app_tasks.BROKEN["yes"] = False
    client = server.client()
    client.enqueue_many(app_tasks.double, [1, 2, 3])
    client.enqueue("images.resize", {"url": "x"}, queue="media")  # width missing: dead
    counts = rota.testing.drain(server, app_tasks.registry, queues=["media"])
    assert counts.get("completed") == 3 and counts.get("dead") == 1


def test_sync_handlers_run_in_a_pool_of_long_lived_processes(start_worker) -> None:
    with RotaServer('[queues.cpu]\nlease = "2s"\n') as server:
        start_worker(app_tasks.registry, queues=["cpu"], url=server.url, concurrency=4, processes=2)
        client = server.client()
        handles = client.enqueue_many(app_tasks.whoami, [4, 1, 1, 1, 1, 1])
        first = handles[0]
        deadline = time.monotonic() + 20
        seen: set[int] = set()
        while first.status().state != "completed":
            progress, _ = first.progress()
            if progress is not None:
                seen.add(progress)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pids = {h.result(timeout=20) for h in handles}
        assert os.getpid() not in pids, "ran in child processes"
        assert 1 <= len(pids) <= 2, f"at most the pool's two processes, reused: {pids}"
        assert seen & {25, 50, 75}, f"progress from the child reached the API: {seen}"


def test_start_up_mistakes_fail_once_with_a_clear_line() -> None:
    server = RotaServer()  # no queue declared

    def worker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rota.cli", *args, "--url", server.url],
            capture_output=True, text=True, cwd=os.path.dirname(__file__), timeout=30,
        )

    missing = worker("no_such_module:registry")
    assert missing.returncode == 2 and "cannot import 'no_such_module'" in missing.stderr
    typo = worker("app_tasks:registry", "--queue", "medai")
    assert typo.returncode == 2 and "did you mean media?" in typo.stderr
    # The task's queue exists in code but was never declared on this server.
    undeclared = worker("app_tasks:registry", "--queue", "cpu")
    server.stop()
    assert undeclared.returncode == 2 and "not declared" in undeclared.stderr, undeclared.stderr
