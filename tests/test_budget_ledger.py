"""No cost the guard cannot see: with real workers, the real SDKs and the simulator, calls that
cost more than their estimate, responses without usage, and a worker killed between its call
and its settle all leave the Redis counters agreeing with the SQL ledger."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, update
from sqlmodel import select

from tests.support.runs import ledger_rows, producer, submit, wait_until_reported
from tests.support.waiting import wait_for


def assert_counters_agree_with_the_ledger() -> dict:
    """Spent in Redis is the sum of the ledger (each call counted in whole micro-dollars, so to
    half a micro-dollar per entry), nothing is left reserved."""
    from shared.db import session_scope
    from shared.models import CostEntry

    budget = json.loads(producer("budget", "--json").stdout)
    with session_scope() as session:
        total, entries = session.exec(select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0), func.count())).one()
    assert budget["spent_usd"] == pytest.approx(total, abs=max(1, entries) * 0.5e-6)
    assert budget["reserved_usd"] == 0
    return budget


QA_AND_LEGAL = ("--agent", "qa", "--agent", "legal")


def test_calls_costing_more_than_reserved_are_settled_at_their_real_cost(start_worker, simulator):
    from shared.budget import call_cost
    from shared.config import get_settings

    # the provider bills 40× the tokens served: more than the whole allowance the workers reserved
    # (gpt-5-mini's 1024 tokens hold its ~64 reasoning tokens and a short answer)
    simulator.update(usage_scale=40.0)
    start_worker("w1", concurrency=4)
    run_id = submit(*QA_AND_LEGAL, "--backend", "openai", "--limit", "5")
    assert wait_until_reported(run_id)["by_status"]["ok"] == 10

    rows = ledger_rows(run_id)
    served = simulator.stats()
    assert len(rows) == 10 and {r.source for r in rows} == {"api"}
    assert sum(r.input_tokens for r in rows) == served["input_tokens"]  # billed as the provider reported
    assert sum(r.output_tokens for r in rows) == served["output_tokens"]
    model = get_settings().model_for("openai", "qa")
    assert sum(r.cost_usd for r in rows) == pytest.approx(
        call_cost(get_settings(), model, served["input_tokens"], served["output_tokens"]))
    budget = assert_counters_agree_with_the_ledger()
    assert budget["overruns"] > 0 and budget["overrun_usd"] > 0


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_responses_without_usage_are_costed_from_an_estimate_and_flagged(backend, start_worker, simulator):
    from shared.budget import USAGE_ESTIMATED, call_cost, estimated_usage
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import Job
    from shared.suite import load_suite

    simulator.update(omit_usage_rate=1.0)
    start_worker("w1", concurrency=4)
    run_id = submit(*QA_AND_LEGAL, "--backend", backend, "--limit", "4")
    assert wait_until_reported(run_id)["by_status"]["ok"] == 8

    settings, suite = get_settings(), load_suite("genesis-custom")
    rows = ledger_rows(run_id)
    assert len(rows) == 8 and {r.source for r in rows} == {USAGE_ESTIMATED}
    with session_scope() as session:
        jobs = {j.id: j for j in session.exec(select(Job).where(Job.run_id == run_id)).all()}
    for row in rows:
        job = jobs[row.job_id]
        tokens = estimated_usage(suite.get(job.agent, job.task_id), job.output)
        assert (row.input_tokens, row.output_tokens) == tokens and row.output_tokens > 0
        assert row.cost_usd == pytest.approx(call_cost(settings, job.model, *tokens)) and row.cost_usd > 0
    assert_counters_agree_with_the_ledger()


def test_a_worker_killed_mid_call_leaves_its_calls_ledgered_at_their_worst_case(start_worker, simulator):
    """The dead worker's reservations are held while it may be alive (a late answer may still
    come), whatever SQL says of their jobs; once the sweep believes it dead, each of its calls
    in flight is ledgered at its worst case as `outcome unknown`, never silently released."""
    from shared.budget import BudgetGuard
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import Job, JobStatus, utcnow

    simulator.update(latency_ms=3000)
    doomed = start_worker("doomed", concurrency=4)
    run_id = submit(*QA_AND_LEGAL, "--backend", "openai", "--limit", "4")
    wait_for(lambda: simulator.stats()["in_flight"] == 4, timeout=20, what="4 calls in flight")
    doomed.kill()  # SIGKILL: the calls are answered (and billed) but never settled
    guard = BudgetGuard.from_settings(get_settings())
    leaked = guard.status()["reserved_usd"]
    assert leaked > 0
    assert guard.reconcile().released == []  # SQL says they run: their room stays held

    with session_scope() as session:  # one is given back to the queue (as the recovery sweep does)
        first = session.exec(select(Job.id).where(Job.run_id == run_id, Job.status == JobStatus.running)).first()
        session.execute(update(Job).where(Job.id == first).values(status=JobStatus.queued))
    assert guard.reconcile().released == []  # its call may still be billed: not released
    with session_scope() as session:  # the process that held them (its incarnation, design §12)
        holders = set(session.exec(select(Job.holder).where(Job.run_id == run_id, Job.worker == doomed.hostname)))
    assert len(holders) == 1
    done = guard.reconcile(holders)  # the sweep's verdict: that process is dead
    assert len(done.unknown) == 4 and done.released == []
    assert guard.status()["reserved_usd"] == 0
    unknown = [e for e in ledger_rows(run_id) if e.source.startswith("outcome unknown")]
    assert len(unknown) == 4 and sum(e.cost_usd for e in unknown) == pytest.approx(leaked, abs=1e-5)

    with session_scope() as session:  # the others' lease passes: `producer resume` runs them again
        session.execute(update(Job).where(Job.run_id == run_id, Job.status == JobStatus.running)
                        .values(started_at=utcnow() - timedelta(hours=1)))
    simulator.update(latency_ms=20)
    start_worker("heir", concurrency=4)
    assert producer("resume", run_id, "--json").exit_code == 0
    snap = wait_until_reported(run_id)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 8
    assert len(ledger_rows(run_id)) == 8 + 4  # each answer once, and the 4 killed calls
    assert_counters_agree_with_the_ledger()
