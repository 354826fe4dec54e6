from __future__ import annotations

from typing import Iterator

import pytest

import rota
from rota.testing import RotaServer

CONFIG = '[queues.cpu]\nlease = "2s"\n'


@pytest.fixture
def server() -> Iterator[RotaServer]:
    with RotaServer(CONFIG, queues=["media", "default"]) as s:
        yield s


@pytest.fixture
def start_worker() -> Iterator[object]:
    started: list[rota.BackgroundWorker] = []

    def start(registry: rota.Registry, **options: object) -> rota.BackgroundWorker:
        w = rota.BackgroundWorker(rota.Worker(registry, **options))  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        if w.running:
            w.stop()
