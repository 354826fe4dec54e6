"""What a handler is given about its job: :class:`Context`."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any


class Context:
    """What a handler may know and do about its job."""

    def __init__(self, job: dict[str, Any], running: _Running) -> None:
        self.id: str = job["id"]
        self.kind: str = job["kind"]
        self.queue: str = job["queue"]
        self.attempt: int = job["attempt"]
        self.max_attempts: int = job["max_attempts"]
        self._running = running

    @property
    def cancelled(self) -> bool:
        """True once the job must stop (cancelled, timed out, lease lost, shutdown)."""
        return self._running.stop.is_set()

    def progress(self, percent: int, message: str | None = None) -> None:
        """Reports progress (0..100); never waits: the latest goes with the next heartbeat."""
        self._running.progress = (max(0, min(100, int(percent))), message)


@dataclass
class _Running:
    token: int
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    task: asyncio.Task[None] | None = None
    progress: tuple[int, str | None] | None = None
    sent_progress: tuple[int, str | None] | None = None


