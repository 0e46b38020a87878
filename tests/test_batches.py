"""Backend mode "batch" end to end (design §11): real workers, the real SDKs, the simulator's
batch APIs. Same answers as a realtime run of the same seed, at the batch price; halts, dead
workers, a flushed Redis, expired batches and failed requests handled per job."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func
from sqlmodel import select

from tests.harness import producer, submit, wait_for, wait_until_reported

pytestmark = pytest.mark.integration

BACKENDS = ("mistral-ft", "mistral-base", "openai", "anthropic")


@pytest.fixture
def batch_knobs(monkeypatch):
    """Small batches, due fast, polled often (set before start_worker so workers get them)."""
    from shared.config import get_settings

    for key, value in {"GENESIS_BATCH__MAX_WAIT_S": "1", "GENESIS_BATCH__POLL_MIN_S": "0.3",
                       "GENESIS_BATCH__POLL_MAX_S": "1", "GENESIS_BATCH__MAX_JOBS": "25"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def batch_mode(monkeypatch, *backends: str) -> None:
    from shared.config import get_settings

    for backend in backends:
        monkeypatch.setenv(f"GENESIS_BACKENDS__{backend.upper()}__MODE", "batch")
    get_settings.cache_clear()


def answers(run_id: str) -> dict:
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        rows = session.exec(select(Job).where(Job.run_id == run_id)).all()
    return {(j.agent, j.task_id, j.backend): (j.status, j.output, j.score, j.input_tokens, j.output_tokens)
            for j in rows}


def ledger(run_id: str) -> tuple[int, float]:
    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        n, total = session.exec(select(func.count(), func.sum(CostEntry.cost_usd))
                                .where(CostEntry.run_id == run_id)).one()
    return n, total or 0.0


def test_a_batch_run_answers_as_realtime_at_half_the_ledgered_cost(monkeypatch, batch_knobs, start_worker, simulator):
    simulator.update(batch_delay_s=1.0)
    realtime_worker = start_worker("w1", concurrency=8)
    realtime = submit("--all-agents", "--limit", "3")
    assert wait_until_reported(realtime)["status"] == "completed"
    served_realtime = simulator.stats()["requests_total"]
    realtime_entries, realtime_cost = ledger(realtime)
    realtime_worker.stop()

    batch_mode(monkeypatch, *BACKENDS)  # workers started from here on take it from the environment
    start_worker("w2", concurrency=8)
    batched = submit("--all-agents", "--limit", "3")
    snap = wait_until_reported(batched, timeout=180)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 60

    assert answers(batched) == answers(realtime)  # same outputs, scores and tokens
    entries, cost = ledger(batched)
    assert entries == realtime_entries == 60
    assert cost == pytest.approx(realtime_cost * 0.5, rel=1e-6)
    stats = simulator.stats()
    assert stats["requests_total"] == served_realtime  # no realtime call for a batch job
    assert stats["batch"]["succeeded"] == stats["batch"]["requests"] == 60
    report = json.loads(producer("report", batched, "--json").stdout)
    assert report["decision"] == json.loads(producer("report", realtime, "--json").stdout)["decision"]
