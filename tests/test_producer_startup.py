"""`producer status` and `runs` read SQL without loading what only other commands need (the
submit and report code, numpy, Redis, Celery, Alembic on a current schema), and a fresh or older
database is still migrated before they answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import modules_loaded_after

HEAVY = ["redis", "kombu", "celery", "numpy", "alembic", "producer.submit", "shared.budget", "shared.report",
         "simulator.server", "anthropic", "openai"]


def run_producer(*args: str) -> str:
    return f"""
from producer.cli import app
print("exit", app({list(args)!r}, standalone_mode=False) or 0)
"""


@pytest.fixture
def database_env(tmp_path: Path) -> dict[str, str]:
    return {"GENESIS_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "GENESIS_REPORTS_DIR": str(tmp_path / "reports")}


def test_status_and_runs_load_none_of_the_other_commands_code(database_env: dict[str, str]) -> None:
    loaded, said = modules_loaded_after(run_producer("runs", "--json"), HEAVY, env=database_env)
    assert said.splitlines() == ["[]", "exit 0"]  # a fresh database: migrated, no runs yet
    assert loaded == ["alembic"]
    for args, code in ((("status", "no-such-run"), 2), (("runs",), 0)):  # now on a current schema
        loaded, said = modules_loaded_after(run_producer(*args), HEAVY, env=database_env)
        assert loaded == [], f"`producer {' '.join(args)}` loaded {loaded}"
        assert said.splitlines()[-1] == f"exit {code}"


def test_status_on_a_fresh_database_migrates_and_says_unknown_run(database_env: dict[str, str]) -> None:
    loaded, said = modules_loaded_after(run_producer("status", "no-such-run"), HEAVY, env=database_env)
    assert "alembic" in loaded  # the read failed on the missing tables, so it migrated and read again
    assert "exit 2" in said


def test_a_command_that_needs_more_still_gets_it(database_env: dict[str, str]) -> None:
    loaded, _ = modules_loaded_after(run_producer("budget", "--json"), ["shared.budget", "redis"], env=database_env)
    assert loaded == ["shared.budget", "redis"]
