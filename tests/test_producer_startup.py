"""`producer status` and `runs` read SQL without loading what only other commands need (the
submit and report code, numpy, Redis, Celery, Alembic on a current schema); a fresh database is
migrated when their read finds no tables, and `status --watch` migrates an older one first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests.support.processes import alembic_cli, modules_loaded_after
from tests.support.runs import producer

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


@pytest.mark.processes
def test_status_and_runs_load_none_of_the_other_commands_code(database_env: dict[str, str]) -> None:
    loaded, said = modules_loaded_after(run_producer("runs", "--json"), HEAVY, env=database_env)
    assert said.splitlines() == ["[]", "exit 0"]  # a fresh database: migrated, no runs yet
    assert loaded == ["alembic"]
    for args, code in ((("status", "no-such-run"), 2), (("runs",), 0)):  # now on a current schema
        loaded, said = modules_loaded_after(run_producer(*args), HEAVY, env=database_env)
        assert loaded == [], f"`producer {' '.join(args)}` loaded {loaded}"
        assert said.splitlines()[-1] == f"exit {code}"


@pytest.mark.processes
def test_status_on_a_fresh_database_migrates_and_says_unknown_run(database_env: dict[str, str]) -> None:
    loaded, said = modules_loaded_after(run_producer("status", "no-such-run"), HEAVY, env=database_env)
    assert "alembic" in loaded  # the read failed on the missing tables, so it migrated and read again
    assert "exit 2" in said


@pytest.mark.processes
def test_a_command_that_needs_more_still_gets_it(database_env: dict[str, str]) -> None:
    loaded, _ = modules_loaded_after(run_producer("budget", "--json"), ["shared.budget", "redis"], env=database_env)
    assert loaded == ["shared.budget", "redis"]


@pytest.mark.processes
def test_status_watch_on_an_older_database_migrates_before_it_reads_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import get_settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert alembic_cli(["upgrade", "0001"], url).returncode == 0  # before the run_report table
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("INSERT INTO run (id, created_at, suite, agents, backends, status, total_jobs, simulated, "
                   "report_path, config) VALUES ('r1', '2026-12-01 00:00:00', 'genesis-custom', '[]', '[]', "
                   "'completed', 0, 0, '/elsewhere/report.md', '{}')")
    monkeypatch.setenv("GENESIS_DATABASE_URL", url)
    monkeypatch.setenv("GENESIS_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()
    try:
        result = producer("status", "r1", "--watch")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stderr
    assert "run r1: completed" in result.stdout


def test_read_migrating_migrates_only_for_a_missing_table_or_column(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import db

    migrations: list[int] = []
    monkeypatch.setattr(db, "migrate", lambda url=None: migrations.append(1))

    def failing_once(message: str):
        failures = [OperationalError("SELECT", {}, Exception(message))]

        def read() -> str:
            if failures:
                raise failures.pop()
            return "read"
        return read

    assert db.read_migrating(failing_once("no such table: run")) == "read" and migrations == [1]
    assert db.read_migrating(failing_once("no such column: job.request_key")) == "read" and migrations == [1, 1]
    with pytest.raises(OperationalError, match="database is locked"):
        db.read_migrating(failing_once("database is locked"))
    assert migrations == [1, 1]  # an outage or a lock is not a reason to migrate
