"""The worker: one asyncio control plane per process.

It long-polls for at most its free slots, runs async handlers on the loop and sync handlers
on a bounded thread pool (so they never starve the loop, and a CPU-bound handler keeps its
lease: heartbeats run on the loop), sends one batched heartbeat per interval (cancellations
come back with it, progress goes with it), and reports outcomes in batches. On SIGTERM it
stops fetching, waits up to the grace period, cancels what is left and hands those leases
back so another worker takes them at once, flushes, and returns; a second signal skips the
wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import httpx

from .client import _settings
from .codec import DecodeError, to_json
from .errors import Discard, Retry
from .context import Context, _Running
from .processes import ChildContext, ProcessPool
from .task import Registry, Task
from .wire import duration, parse_duration

#: Longest one fetch waits for a job (also the longest an idle worker takes to stop).
FETCH_WAIT = 2.0
#: Longest a fetch waits for the rest of the slots to free up while some are busy.
FETCH_GATHER = 0.002
#: Longest a running job waits to hear it was cancelled.
CANCEL_CHECK = 1.0
#: Most outcomes per report request.
REPORT_BATCH = 1000
#: How long a completion waits for a fetch to take it along (``/v1/complete-and-fetch``)
#: before the reporter sends it on its own.
RIDE_GRACE = 0.005
VERSION = "rota-python 0.1.0"


class WorkerError(Exception):
    """The worker cannot work at all (a queue not declared, a bad token)."""


@dataclass
class _Report:
    kind: str  # complete | fail | hand-back | outbox (a completion waits in the outbox)
    job: str
    token: int
    body: dict[str, Any]


class Worker:
    """Runs the tasks of ``registry`` from ``queues`` (every queue its tasks use when not
    given), ``concurrency`` jobs at a time."""

    def __init__(
        self,
        registry: Registry,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        url: str | None = None,
        token: str | None = None,
        grace: float = 10.0,
        name: str | None = None,
        threads: int | None = None,
        processes: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: must be at least 1, got {concurrency}")
        if not registry.tasks:
            raise ValueError("registry: register at least one task")
        self.registry = registry
        self.queues = list(queues) if queues else registry.queues()
        known = registry.queues()
        for queue in self.queues:
            if queue not in known:
                # A queue no task goes to: a typo would leave every job where nobody looks.
                close = difflib.get_close_matches(queue, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else f" (tasks go to: {', '.join(known)})"
                raise ValueError(f"queues: no task of this registry goes to queue {queue!r}{hint}")
        self.kinds = sorted(k for k, t in registry.tasks.items() if t.options.queue in self.queues)
        self.concurrency = concurrency
        self.url, self._headers = _settings(url, token)
        self.grace = grace
        self.name = name or socket.gethostname()
        self.id = f"{self.name}:{os.getpid()}"
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads or concurrency, thread_name_prefix="rota-handler"
        )
        if processes is not None and processes < 1:
            raise ValueError(f"processes: must be at least 1, got {processes}")
        self.processes = processes
        self._pool: ProcessPool | None = None
        self._running: dict[str, _Running] = {}
        self._lease = 30.0

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT (blocking)."""
        asyncio.run(self.arun(handle_signals=True))

    async def arun(self, stop: asyncio.Event | None = None, *, handle_signals: bool = False) -> None:
        """Runs until ``stop`` is set (or a signal, with ``handle_signals``)."""
        stop = stop or asyncio.Event()
        hurry = asyncio.Event()
        loop = asyncio.get_running_loop()
        if handle_signals:
            def on_signal() -> None:
                (hurry if stop.is_set() else stop).set()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
        self._stop = stop
        if self.processes:
            def on_progress(job_id: str, percent: int, message: str | None) -> None:
                def record() -> None:
                    running = self._running.get(job_id)
                    if running is not None:
                        running.progress = (percent, message)
                loop.call_soon_threadsafe(record)
            self._pool = ProcessPool(self.processes, on_progress)
        self._free = self.concurrency
        self._slots = asyncio.Condition()
        self._reports: asyncio.Queue[_Report | None] = asyncio.Queue()
        self._outbox: list[_Report] = []
        async with httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=90.0) as http:
            self._http = http
            reporter = asyncio.create_task(self._report_loop())
            beats = asyncio.create_task(self._heartbeat_loop())
            waker = asyncio.create_task(self._wake_on_stop())
            failure: BaseException | None = None
            try:
                await self._fetch_loop()
            except WorkerError as err:
                failure = err
            await self._shut_down(hurry)
            await self._reports.put(None)
            await reporter
            beats.cancel()
            waker.cancel()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._pool is not None:
                self._pool.close()
            if failure:
                raise failure

    # -- fetching -------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        pause = 0.2
        host = socket.gethostname()
        kinds = self.kinds
        while not self._stop.is_set():
            async with self._slots:
                await self._slots.wait_for(lambda: self._free > 0 or self._stop.is_set())
                if self._stop.is_set():
                    return
                if self._free < self.concurrency:
                    try:
                        await asyncio.wait_for(
                            self._slots.wait_for(lambda: self._free == self.concurrency), FETCH_GATHER
                        )
                    except asyncio.TimeoutError:
                        pass
                taken = self._free
                self._free = 0
            body = {
                "worker": self.id, "queues": self.queues, "kinds": kinds, "max": taken,
                "wait": duration(min(FETCH_WAIT, self._lease / 3)), "name": self.name,
                "host": host, "pid": os.getpid(), "concurrency": self.concurrency, "version": VERSION,
            }
            rides, self._outbox = self._outbox[:REPORT_BATCH], self._outbox[REPORT_BATCH:]
            try:
                if rides:
                    combined = {"completions": [r.body for r in rides], "fetch": body}
                    response = await self._http.post("/v1/complete-and-fetch", json=combined)
                    if response.is_success:
                        response = self._answered(rides, response)
                    else:
                        self._resend(rides)
                        if _about_completions(response):
                            # The completions were refused, not the fetch: the reporter
                            # deals with them one by one, and the fetch goes on its own.
                            response = await self._http.post("/v1/fetch", json=body)
                else:
                    response = await self._http.post("/v1/fetch", json=body)
            except httpx.HTTPError as err:
                self._resend(rides)
                await self._release(taken)
                print(f"rota-worker: fetch failed ({err!r}); retrying in {pause:.1f}s", flush=True)
                await self._sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if response.status_code in (400, 401, 403, 404, 422):
                await self._release(taken)
                problem = response.json()
                raise WorkerError(problem.get("detail", response.text))
            if not response.is_success:
                await self._release(taken)
                await self._sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.2
            answer = response.json()
            self._lease = parse_duration(answer.get("lease", "30s")) or 30.0
            jobs = answer["jobs"]
            await self._release(taken - len(jobs))
            for job in jobs:
                if self._stop.is_set():
                    self._reports.put_nowait(_Report("hand-back", job["id"], job["lease_token"], {}))
                    await self._release(1)
                    continue
                running = _Running(token=job["lease_token"])
                self._running[job["id"]] = running
                running.task = asyncio.create_task(self._run(job, running))

    def _answered(self, rides: list[_Report], response: httpx.Response) -> httpx.Response:
        """Settles the completions a fetch took along; answers the fetch half as a response
        of its own (a failed fetch as its problem)."""
        answer = response.json()
        self._log_refusals(rides, answer.get("results", []))
        for report in rides:
            self._forget(report.job, report.token)
        problem = answer.get("fetch_error")
        if problem:
            return httpx.Response(problem.get("status", 500), json=problem)
        return httpx.Response(200, json={"jobs": answer["jobs"], "lease": answer["lease"]})

    def _resend(self, rides: list[_Report]) -> None:
        """Completions whose combined request failed go to the reporter, which retries."""
        for report in rides:
            self._reports.put_nowait(report)

    async def _wake_on_stop(self) -> None:
        # The fetch loop may be waiting for a free slot: a stop must wake it.
        await self._stop.wait()
        async with self._slots:
            self._slots.notify_all()

    async def _release(self, n: int) -> None:
        if n <= 0:
            return
        async with self._slots:
            self._free += n
            self._slots.notify_all()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- running --------------------------------------------------------------------------

    async def _run(self, job: dict[str, Any], running: _Running) -> None:
        try:
            report = await self._outcome(job, running)
            if report is None:
                self._forget(job["id"], running.token)
            elif report.kind == "complete":
                # The fetch this slot wakes takes it along, or the reporter sends it.
                self._outbox.append(report)
                self._reports.put_nowait(_Report("outbox", "", 0, {}))
            else:
                self._reports.put_nowait(report)
        finally:
            await self._release(1)

    async def _outcome(self, job: dict[str, Any], running: _Running) -> _Report | None:
        job_id, token = job["id"], running.token

        def fail(message: str, backtrace: str | None = None, discard: bool = False, snooze: float | None = None) -> _Report:
            body: dict[str, Any] = {"job": job_id, "token": token, "message": message, "discard": discard}
            if backtrace:
                body["backtrace"] = backtrace
            if snooze is not None:
                body["snooze"] = duration(max(1.0, snooze))
            return _Report("fail", job_id, token, body)

        task = self.registry.tasks.get(job["kind"])
        if task is None:
            return fail(f"no handler for kind {job['kind']} in this worker")
        try:
            args = task.decode_args(job["args"])
        except DecodeError as err:
            return fail(f"DecodeError: arguments of {task.kind} do not decode: {err}", discard=True)
        ctx = Context(job, running)
        timeout = task.options.timeout
        if timeout is None and job.get("timeout"):
            timeout = parse_duration(job["timeout"])
        try:
            result = await asyncio.wait_for(self._call(task, args, ctx), timeout)
        except asyncio.CancelledError:
            reason = running.reason
            if reason == "shutdown":
                return _Report("hand-back", job_id, token, {"job": job_id, "token": token})
            if reason == "cancel":
                return fail("Cancelled: cancelled on request")
            if reason == "lease_lost":
                return None
            raise
        except asyncio.TimeoutError:
            running.stop.set()
            return fail(f"TimeoutError: timed out after {duration(timeout or 0)}")
        except Retry as err:
            return fail(f"Retry: {err}", snooze=err.delay)
        except Discard as err:
            return fail(f"Discard: {err.reason}", discard=True)
        except Exception as err:  # the handler's failure, recorded with its traceback
            message = f"{type(err).__name__}: {err}"
            text = traceback.format_exc()
            discard = isinstance(err, task.options.discard_on) or (
                bool(task.options.retry_on) and not isinstance(err, task.options.retry_on)
            )
            return fail(message, text, discard=discard)
        if running.reason == "cancel":
            return fail("Cancelled: cancelled on request")
        return _Report("complete", job_id, token, {"job": job_id, "token": token, "result": to_json(result)})

    async def _call(self, task: Task[Any, Any], args: Any, ctx: Context) -> Any:
        call_args = (args, ctx) if task.takes_context else (args,)
        if task.is_async:
            return await task.fn(*call_args)
        if self._pool is not None:
            child = ChildContext(ctx.id, ctx.kind, ctx.queue, ctx.attempt, ctx.max_attempts)
            return await asyncio.wrap_future(self._pool.call(task, args, child))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: task.fn(*call_args))

    def _forget(self, job_id: str, token: int) -> None:
        running = self._running.get(job_id)
        if running is not None and running.token == token:
            del self._running[job_id]

    def _stop_job(self, job_id: str, reason: str) -> None:
        running = self._running.get(job_id)
        if running is None or running.stop.is_set():
            return
        running.reason = reason
        running.stop.set()
        if running.task is not None:
            running.task.cancel()

    # -- shutdown -------------------------------------------------------------------------

    async def _shut_down(self, hurry: asyncio.Event) -> None:
        tasks = [r.task for r in self._running.values() if r.task is not None and not r.task.done()]
        if tasks:
            waiting = asyncio.ensure_future(asyncio.wait(tasks, timeout=self.grace))
            hurried = asyncio.ensure_future(hurry.wait())
            await asyncio.wait({waiting, hurried}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            hurried.cancel()
        left = [job_id for job_id, r in self._running.items() if r.task is not None and not r.task.done()]
        for job_id in left:
            self._stop_job(job_id, "shutdown")
        remaining = [r.task for r in self._running.values() if r.task is not None and not r.task.done()]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)

    # -- reporting ------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        done = False
        while not done:
            first = await self._reports.get()
            batch: list[_Report] = []
            if first is None:
                done = True
            else:
                batch.append(first)
            while len(batch) < REPORT_BATCH:
                try:
                    item = self._reports.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            riding = any(r.kind == "outbox" for r in batch)
            batch = [r for r in batch if r.kind != "outbox"]
            if riding or done:
                if not done:
                    # Give a fetch about to leave the moment to take them along.
                    await asyncio.sleep(RIDE_GRACE)
                batch.extend(self._outbox)
                self._outbox = []
            groups: dict[str, list[_Report]] = {}
            for report in batch:
                groups.setdefault(report.kind, []).append(report)
            await asyncio.gather(*(self._send(kind, reports) for kind, reports in groups.items()))
            for report in batch:
                self._forget(report.job, report.token)

    async def _send(self, kind: str, reports: list[_Report]) -> None:
        path, key = {
            "complete": ("/v1/complete", "completions"),
            "fail": ("/v1/fail", "failures"),
            "hand-back": ("/v1/hand-back", "leases"),
        }[kind]
        if len(reports) > REPORT_BATCH:
            for start in range(0, len(reports), REPORT_BATCH):
                await self._send(kind, reports[start : start + REPORT_BATCH])
            return
        pause = 0.2
        while reports:
            bodies = [r.body if kind != "hand-back" else {"job": r.job, "token": r.token} for r in reports]
            try:
                response = await self._http.post(path, json={key: bodies})
            except httpx.HTTPError as err:
                response = None
                error = repr(err)
            if response is not None and response.is_success:
                self._log_refusals(reports, response.json().get("results", []))
                return
            if response is not None and kind == "complete" and response.status_code in (413, 422):
                if response.status_code == 413 and len(reports) > 1:
                    # One result is too large: send each on its own, so only that one fails.
                    for report in reports:
                        await self._send(kind, [report])
                    return
                problem = _problem(response)
                at = 0 if response.status_code == 413 else _refused_result(problem, len(reports))
                if at is not None:
                    # Running the job again would make the same result: it fails for good.
                    bad = reports.pop(at)
                    why = "too large for the server" if response.status_code == 413 else "refused by the server"
                    message = f"result {why}: {problem.get('detail', '')}"
                    print(f"rota-worker: job {bad.job}: {message}; failing the job", flush=True)
                    body = {"job": bad.job, "token": bad.token, "message": message, "discard": True}
                    await self._send("fail", [_Report("fail", bad.job, bad.token, body)])
                    continue
            if response is not None and response.status_code in (400, 401, 403, 404, 413, 422):
                print(f"rota-worker: reports refused: {response.text[:200]}", flush=True)
                return
            if response is not None:
                error = f"HTTP {response.status_code}"
            reports = [r for r in reports if not self._lease_lost(r)]
            print(f"rota-worker: could not report {len(reports)} outcome(s) ({error}); retrying", flush=True)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    @staticmethod
    def _log_refusals(reports: list[_Report], outcomes: list[dict[str, Any]]) -> None:
        for report, outcome in zip(reports, outcomes):
            problem = outcome.get("error")
            if problem:
                print(f"rota-worker: report for job {report.job} refused: {problem.get('detail')}", flush=True)

    def _lease_lost(self, report: _Report) -> bool:
        running = self._running.get(report.job)
        return running is not None and running.reason == "lease_lost"

    # -- heartbeats -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            every = max(0.1, min(self._lease / 3, CANCEL_CHECK))
            if time.monotonic() - last < every or not self._running:
                continue
            last = time.monotonic()
            leases = [(job_id, r) for job_id, r in list(self._running.items())]
            body = {"worker": self.id, "leases": [{"job": j, "token": r.token} for j, r in leases]}
            try:
                response = await self._http.post("/v1/heartbeat", json=body)
                if response.is_success:
                    for (job_id, _), outcome in zip(leases, response.json()["results"]):
                        if not outcome["held"]:
                            self._stop_job(job_id, "lease_lost")
                        elif outcome["cancel_requested"]:
                            self._stop_job(job_id, "cancel")
            except httpx.HTTPError as err:
                print(f"rota-worker: heartbeat failed ({err!r}); retrying", flush=True)
            await self._send_progress(leases)

    async def _send_progress(self, leases: list[tuple[str, _Running]]) -> None:
        changed = [(j, r, r.progress) for j, r in leases if r.progress is not None and r.progress != r.sent_progress]

        async def send(job_id: str, running: _Running, progress: tuple[int, str | None]) -> None:
            body: dict[str, Any] = {"token": running.token, "percent": progress[0]}
            if progress[1] is not None:
                body["message"] = progress[1]
            try:
                response = await self._http.post(f"/v1/jobs/{job_id}/progress", json=body)
                if response.is_success:
                    running.sent_progress = progress
            except httpx.HTTPError:
                pass

        if changed:
            await asyncio.gather(*(send(j, r, p) for j, r, p in changed))


class BackgroundWorker:
    """A :class:`Worker` running on its own event loop in a daemon thread, for programs that
    are not asyncio (scripts, tests, a web app's process): ``stop()`` ends it gracefully."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="rota-worker", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop_event = asyncio.Event()
        self._ready.set()
        try:
            self._loop.run_until_complete(self.worker.arun(self._stop_event))
        except BaseException as err:  # re-raised by stop()
            self.error = err
        finally:
            self._loop.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops fetching, lets running jobs finish within the grace period, hands the rest
        back, and waits for the thread; re-raises what ended the worker, if anything did."""
        if self._thread.is_alive() and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the worker did not stop in time")
        if self.error is not None:
            raise self.error


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        problem = response.json()
    except ValueError:
        return {}
    return problem if isinstance(problem, dict) else {}


def _about_completions(response: httpx.Response) -> bool:
    """Whether a refused complete-and-fetch was refused for its completions (a field under
    ``completions``, or a body over the limit, which only results make large)."""
    if response.status_code == 413:
        return True
    field = _problem(response).get("field") or ""
    return response.status_code == 422 and field.startswith("completions")


def _refused_result(problem: dict[str, Any], count: int) -> int | None:
    """The position of the completion whose result a 422 names (``completions[3].result...``)."""
    field = problem.get("field") or ""
    if not field.startswith("completions["):
        return None
    index, _, rest = field[len("completions[") :].partition("]")
    if not index.isdigit() or not rest.startswith(".result") or int(index) >= count:
        return None
    return int(index)
