"""Every example runs against a real server, as its first lines say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rota.testing import RotaServer

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_the_example_runs(example: Path) -> None:
    with RotaServer() as server:
        env = dict(os.environ, ROTA_URL=server.url)
        run = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
