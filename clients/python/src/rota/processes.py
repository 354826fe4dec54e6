"""``--processes N``: sync handlers in a pool of long-lived processes, for CPU-bound work.

The pool's processes are started once (``spawn``: nothing of the worker's threads or
connections is inherited) and run job after job; nothing forks per job. A job reaches its
handler by kind: the child imports the handler's module and finds the task there, so
handlers must be defined at module level. ``ctx.progress`` works (sent to the worker through
a queue); ``ctx.cancelled`` is never true in a child (a cancel or timeout is reported by the
worker; the child finishes its call).
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from .task import Task

_progress: Any = None


class ChildContext:
    """The :class:`rota.Context` of a handler running in a child process."""

    def __init__(self, job_id: str, kind: str, queue: str, attempt: int, max_attempts: int) -> None:
        self.id = job_id
        self.kind = kind
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.cancelled = False

    def progress(self, percent: int, message: str | None = None) -> None:
        if _progress is not None:
            _progress.put((self.id, max(0, min(100, int(percent))), message))


def _init(progress: Any) -> None:
    global _progress
    _progress = progress


def _run(module: str, kind: str, args: Any, ctx: ChildContext, with_context: bool) -> Any:
    loaded = importlib.import_module(module)
    for value in vars(loaded).values():
        if isinstance(value, Task) and value.kind == kind:
            return value.fn(args, ctx) if with_context else value.fn(args)
    raise LookupError(f"task {kind} is not defined at the top level of {module}")


class ProcessPool:
    def __init__(self, processes: int, on_progress: Callable[[str, int, str | None], None]) -> None:
        context = multiprocessing.get_context("spawn")
        self._queue = context.SimpleQueue()
        self.executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=context, initializer=_init, initargs=(self._queue,)
        )
        self._reader = threading.Thread(target=self._read, args=(on_progress,), daemon=True)
        self._reader.start()

    def _read(self, on_progress: Callable[[str, int, str | None], None]) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            on_progress(*item)

    def call(self, task: Task[Any, Any], args: Any, ctx: ChildContext) -> Any:
        return self.executor.submit(_run, task.fn.__module__, task.kind, args, ctx, task.takes_context)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._queue.put(None)
