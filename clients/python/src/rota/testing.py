"""Testing with the real thing: a throwaway ``rota serve`` and ``drain()``.

The binary is ``$ROTA_BIN``, else the one the ``rota-server`` wheel installed beside this
Python, else ``rota`` on PATH, else the repository's build (``target/debug/rota`` or
``target/release/rota`` above this package).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from .client import Client
from .task import Registry
from .worker import Worker


def find_binary() -> str:
    """``$ROTA_BIN``; the ``rota`` the rota-server wheel installed next to this Python; ``rota``
    on PATH; the repository's build."""
    beside = Path(sysconfig.get_path("scripts")) / "rota"
    found = os.environ.get("ROTA_BIN") or (str(beside) if beside.exists() else None) or shutil.which("rota")
    if found:
        return found
    here = Path(__file__).resolve()
    for parent in here.parents:
        for build in ("debug", "release"):
            candidate = parent / "target" / build / "rota"
            if candidate.exists():
                return str(candidate)
    raise RuntimeError("no rota binary: set ROTA_BIN, put rota on PATH, or cargo build -p rota-cli")


class RotaServer:
    """A ``rota serve`` on a free loopback port in a temporary directory."""

    def __init__(self, config: str = "", *, queues: list[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="rota-test-")
        toml = config + "".join(f"\n[queues.{q}]\n" for q in (queues or []))
        Path(self.dir, "rota.toml").write_text(toml)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(self.dir, "serve.log"), "wb")
        self.process = subprocess.Popen(
            [find_binary(), "serve", "--bind", f"127.0.0.1:{self.port}"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rota serve did not start: {Path(self.dir, 'serve.log').read_text()}")
            time.sleep(0.05)

    def client(self) -> Client:
        return Client(self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RotaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drain(server: RotaServer, registry: Registry, *, queues: list[str] | None = None, concurrency: int = 4) -> dict[str, int]:
    """Runs a real worker until none of its queues has a job ready or running; returns the
    queues' counts by state (jobs due later, such as a retry's backoff, stay)."""
    worker = Worker(registry, queues=queues, concurrency=concurrency, url=server.url)

    async def run() -> dict[str, int]:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.arun(stop))
        async with httpx.AsyncClient(base_url=server.url) as http:
            while True:
                counts: dict[str, int] = {}
                for queue in worker.queues:
                    view = (await http.get(f"/v1/queues/{queue}")).json()
                    for state, n in view["counts"].items():
                        counts[state] = counts.get(state, 0) + n
                if counts.get("available", 0) + counts.get("running", 0) == 0 or running.done():
                    break
                await asyncio.sleep(0.02)
        stop.set()
        await running
        return counts

    return asyncio.run(run())


def rota_server_fixture(queues: list[str]) -> Any:
    """A pytest fixture factory: ``rota_server = rota.testing.rota_server_fixture(["emails"])``
    in ``conftest.py`` gives each test a fresh server."""
    import pytest

    @pytest.fixture
    def rota_server() -> Iterator[RotaServer]:
        with RotaServer(queues=queues) as server:
            yield server

    return rota_server
