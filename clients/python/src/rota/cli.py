"""``rota-worker app.tasks:registry --queue media --concurrency 32``."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import NoReturn

from .task import Registry
from .worker import Worker, WorkerError

FLAGS = ["--queue", "--concurrency", "--url", "--grace", "--name", "--threads", "--processes", "--help"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # A mistyped flag fails once, with a suggestion, and exit 2: a supervisor that
        # restarts on failure should not loop on a typo (it is a usage error, not a crash).
        hint = ""
        for word in sys.argv[1:]:
            if word.startswith("--") and word.split("=")[0] not in FLAGS:
                close = difflib.get_close_matches(word.split("=")[0], FLAGS, n=1)
                if close:
                    hint = f"\n  did you mean {close[0]}?"
                break
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def load(target: str) -> Registry:
    module_name, _, attr = target.partition(":")
    if not attr:
        print(f"rota-worker: give the registry as module:attribute, such as app.tasks:registry (got {target!r})", file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        print(f"rota-worker: cannot import {module_name!r}: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    registry = getattr(module, attr, None)
    if not isinstance(registry, Registry):
        print(f"rota-worker: {target} is not a rota.Registry", file=sys.stderr)
        raise SystemExit(2)
    return registry


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="rota-worker", description="Run the tasks of a rota.Registry.")
    parser.add_argument("registry", help="module:attribute of the rota.Registry, such as app.tasks:registry")
    parser.add_argument("--queue", action="append", default=None, help="a queue to take from (repeatable; default: every queue the tasks use)")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs run at once (default 10)")
    parser.add_argument("--url", default=None, help="the server (default $ROTA_URL or http://127.0.0.1:7700)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds running jobs may finish at shutdown (default 10)")
    parser.add_argument("--name", default=None, help="the worker's stable name (default: host name)")
    parser.add_argument("--threads", type=int, default=None, help="threads for sync handlers (default: concurrency)")
    parser.add_argument("--processes", type=int, default=None, help="run sync handlers in a pool of this many long-lived processes (CPU-bound work)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency: must be at least 1")
    registry = load(args.registry)
    try:
        worker = Worker(registry, queues=args.queue, concurrency=args.concurrency, url=args.url,
                        grace=args.grace, name=args.name, threads=args.threads,
                        processes=args.processes)
    except ValueError as err:
        parser.error(str(err))
    try:
        worker.run()
    except WorkerError as err:
        print(f"rota-worker: {err}", file=sys.stderr, flush=True)
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    # Sync handlers stopped at shutdown may still run in their threads; their leases are
    # handed back, so the process ends now instead of waiting for them.
    os._exit(0)


if __name__ == "__main__":
    main()
