from __future__ import annotations

import asyncio
import threading
from typing import Iterator

import pytest

import rota
from rota.testing import RotaServer

CONFIG = '[queues.cpu]\nlease = "2s"\n'


@pytest.fixture
def server() -> Iterator[RotaServer]:
    with RotaServer(CONFIG, queues=["media", "default"]) as s:
        yield s


class BackgroundWorker:
    """A ``rota.Worker`` on its own event loop in a thread."""

    def __init__(self, worker: rota.Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop_event = asyncio.Event()
        self.ready.set()
        try:
            self.loop.run_until_complete(self.worker.arun(self.stop_event))
        except BaseException as err:  # surfaced by stop()
            self.error = err

    def stop(self, timeout: float = 20) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def start_worker() -> Iterator[object]:
    started: list[BackgroundWorker] = []

    def start(registry: rota.Registry, **options: object) -> BackgroundWorker:
        w = BackgroundWorker(rota.Worker(registry, **options))  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.stop()
