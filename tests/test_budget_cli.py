"""`producer budget` through Typer's CliRunner, against real Redis (db 12) and SQLite."""

from __future__ import annotations


import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from producer.budget_cli import budget_app
from shared.budget import BudgetGuard
from tests.support.env import use_config
from tests.support.runs import producer
from shared.config import load_settings
from shared.db import migrate, session_scope
from shared.models import CostEntry

from tests.support.env import SCRATCH_REDIS_URL as REDIS_URL  # noqa: E402
BUDGET = """
[pricing."m"]
input_per_mtok = 1.0
output_per_mtok = 1.0

[budget]
limit_usd = 10.0
warning = {warning}
critical = 0.50
emergency = 0.83
"""

runner = CliRunner()


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warning: float = 0.25) -> None:
    use_config(monkeypatch, tmp_path, BUDGET.format(warning=warning), REDIS_URL)


@pytest.fixture
def guard(tmp_path, monkeypatch, redis_client) -> BudgetGuard:
    configure(tmp_path, monkeypatch)
    settings = load_settings()
    migrate(settings.database_url)
    return BudgetGuard(redis_client, settings)


def invoke(*args: str):
    return runner.invoke(budget_app, list(args))


def test_status_json_shape_and_values(guard):
    guard.log_manual(agent="qa", operation="inference", cost_usd=3.0)
    guard.reserve(1, 0.5)
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert {k: status[k] for k in ("limit_usd", "spent_usd", "reserved_usd", "level", "halted")} == {
        "limit_usd": 10.0, "spent_usd": 3.0, "reserved_usd": 0.5, "level": "warning", "halted": False,
    }


def test_status_table_names_the_level(guard):
    guard.log_manual(agent="qa", operation="inference", cost_usd=6.0)
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "critical" in result.stdout and "60.0%" in result.stdout


def test_log_writes_a_manual_ledger_entry(guard):
    result = invoke("log", "--agent", "qa", "--operation", "inference", "--cost", "0.50", "--backend", "b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spent_usd"] == 0.5
    with session_scope(guard.database_url) as session:
        entries = session.exec(select(CostEntry)).all()
    assert [(e.agent, e.operation, e.backend, e.cost_usd, e.source) for e in entries] == [
        ("qa", "inference", "b", 0.5, "manual")
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (("log", "--agent", "qa", "--operation", "inference", "--cost", "-1"), "--cost"),
        (("log", "--operation", "two words", "--cost", "1"), "--operation"),
        (("resume", "--limit", "0"), "--limit"),
        (("resume", "--limit", "-5"), "--limit"),
    ],
)
def test_bad_input_exits_2_with_one_line(guard, args, message):
    result = producer("budget", *args)  # the producer's one-line errors, as a user runs it
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with session_scope(guard.database_url) as session:
        assert session.exec(select(CostEntry)).all() == []


def test_thresholds_out_of_order_exit_2(tmp_path, monkeypatch, redis_client):
    configure(tmp_path, monkeypatch, warning=0.6)  # warning above critical
    result = invoke("--json")
    assert result.exit_code == 2
    assert "thresholds" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resume_lifts_the_halt_with_a_new_limit(guard):
    guard.halt(run_id=None, reason="test")
    result = invoke("resume", "--limit", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "limit_usd": 20.0, "spent_usd": 0.0, "reserved_usd": 0.0, "level": "ok", "halted": False,
    }
    assert not guard.is_halted()


def test_report_writes_the_dashboard(guard, tmp_path):
    with session_scope(guard.database_url) as session:
        session.add(CostEntry(job_id=1, agent="qa", backend="mistral-ft", model="m", operation="inference",
                              input_tokens=100, output_tokens=50, cost_usd=1.25,
                              at=datetime(2026, 1, 2, 10, tzinfo=timezone.utc)))
        session.add(CostEntry(job_id=2, agent="legal", backend="mistral-base", model="m", operation="inference",
                              input_tokens=10, output_tokens=5, cost_usd=0.25,
                              at=datetime(2026, 1, 3, 10, tzinfo=timezone.utc)))
    guard.log_manual(agent="qa", operation="judge", cost_usd=1.5)  # $3.00 of $10: a warning event

    result = invoke("report", "--json")
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["path"])
    assert path == tmp_path / "reports" / "cost_dashboard.md"
    text = path.read_text()
    for section in ("## Budget", "## Spend by agent", "## Spend by backend", "## Spend by operation",
                    "## Spend by day", "## Budget events"):
        assert section in text
    assert "| qa | 2 | 100 | 50 | 2.7500 |" in text
    assert "| mistral-base | 1 | 10 | 5 | 0.2500 |" in text
    assert "| judge | 1 | 0 | 0 | 1.5000 |" in text
    assert "| 2026-01-02 | 1 | 100 | 50 | 1.2500 |" in text
    assert "| warning |" in text and "**warning**" in text
