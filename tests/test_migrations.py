"""`alembic upgrade head` from the repo root (as a user types it), on SQLite and PostgreSQL,
and the migrations agree with shared/models.py (autogenerate finds nothing to add)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import shared.models  # noqa: F401  (registers every table)
from shared.db import get_engine
from tests.support.processes import alembic_cli

TABLES = {"run", "job", "cost_entry", "budget_event", "alembic_version"}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.processes
def test_alembic_upgrade_head_from_the_repo_root(database_url):
    result = alembic_cli(["upgrade", "head"], database_url)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr
    engine = get_engine(database_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    again = alembic_cli(["upgrade", "head"], database_url)  # idempotent
    assert again.returncode == 0 and "Running upgrade" not in again.stderr, again.stderr

    with engine.connect() as conn:
        drift = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert drift == [], f"models and migrations disagree (add a migration): {drift}"


@pytest.mark.processes
def test_alembic_url_override_beats_the_environment(tmp_path):
    target, unused = tmp_path / "other.db", tmp_path / "unused.db"
    result = alembic_cli(["-x", f"url=sqlite:///{target}", "upgrade", "head"], f"sqlite:///{unused}")
    assert result.returncode == 0, result.stderr
    assert target.exists() and not unused.exists()
