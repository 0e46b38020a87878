"""Other processes a test runs and reads: a fresh interpreter (what a command imports), the
project's alembic console script. A test calling these is marked `processes`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.env import ROOT


def modules_loaded_after(code: str, modules: list[str], env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Which of `modules` a fresh interpreter has loaded after running `code` (and what the code
    printed): start-up weight is checked by what is imported, not by timing it."""
    probe = f"import json, sys; print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", f"{code}\n{probe}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    *output, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(output)


def alembic_cli(args: list[str], database_url: str, *, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The `alembic` console script of this venv, run from `cwd` against `database_url`."""
    alembic = Path(sys.executable).parent / "alembic"
    return subprocess.run([str(alembic), *args], cwd=cwd, env={**os.environ, "GENESIS_DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=120)
