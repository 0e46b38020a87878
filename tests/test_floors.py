"""pyproject.toml's lower bounds are the ones `scripts/test-lowest.sh` last ran the tests with:
a floor changed without that run fails here (cheap: no second venv in the normal suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lowest_pins() -> list[str]:
    done = subprocess.run([sys.executable, "scripts/requirements-from-pyproject.py", "--lowest", "pyproject.toml", "test"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.processes  # reads the floors with the script test-lowest.sh uses
def test_the_floors_are_the_ones_the_lowest_bounds_run_passed_with():
    tested = (ROOT / "scripts" / "lowest-tested.txt").read_text().split()
    pins = lowest_pins()
    assert "kombu==5.7" in pins  # what Producer.batch (shared.messaging) needs
    changed = sorted(set(pins) ^ set(tested))
    assert not changed, (f"floors differ from the last lowest-bounds run ({', '.join(changed)}): "
                         "run `bash scripts/test-lowest.sh` and commit scripts/lowest-tested.txt")
