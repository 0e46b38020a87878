"""SQL is the source of truth: a run survives Redis losing everything, and a cancelled run
still gets its report. Real workers, real Redis, real SDKs against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import func
from sqlmodel import select

from tests.support.runs import producer, submit, wait_until_reported
from tests.support.waiting import wait_for


def ok_jobs(run_id: str) -> int:
    from shared.progress import run_snapshot

    return run_snapshot(run_id)["by_status"]["ok"]


def test_resume_after_redis_loses_everything_pays_for_nothing_twice(start_worker, simulator, redis_url):
    from shared.db import session_scope
    from shared.models import CostEntry, Job

    simulator.update(latency_ms=300)
    first = start_worker("w1", concurrency=2)
    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--limit", "10")
    wait_for(lambda: ok_jobs(run_id) >= 4, timeout=30, what="a few jobs to finish")

    first.stop()  # warm shutdown: in-flight calls finish and are recorded
    redis.Redis.from_url(redis_url).flushdb()  # queues, chord state, budget counters: gone
    done_before = ok_jobs(run_id)
    assert 4 <= done_before < 20

    start_worker("w2", concurrency=4)
    resumed = producer("resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["jobs"] == 20 - done_before

    snap = wait_until_reported(run_id)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 20
    with session_scope() as session:
        entries = session.exec(select(func.count()).select_from(CostEntry).where(CostEntry.run_id == run_id)).one()
        attempts = session.exec(select(func.sum(Job.attempts)).where(Job.run_id == run_id)).one()
    assert entries == 20
    assert attempts == 20
    assert simulator.stats()["by_status"].get("200", simulator.stats()["by_status"].get(200)) == 20

    budget = json.loads(producer("budget", "--json").stdout)  # rebuilt from the SQL ledger
    with session_scope() as session:
        ledger = session.exec(select(func.sum(CostEntry.cost_usd))).one()
    assert budget["spent_usd"] == pytest.approx(ledger, abs=entries * 0.5e-6)  # whole micro-dollars per entry


def test_cancel_stops_a_run_and_reports_what_finished(start_worker, simulator):
    simulator.update(latency_ms=400)
    start_worker("w1", concurrency=1)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "20")
    wait_for(lambda: ok_jobs(run_id) >= 1, timeout=30, what="a first job")

    cancelled = producer("cancel", run_id, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    snap = wait_until_reported(run_id, timeout=60)
    assert snap["status"] == "cancelled"
    assert snap["by_status"]["ok"] < 20 and snap["by_status"]["queued"] > 0
    served_at_cancel = simulator.stats()["requests_total"]
    assert served_at_cancel <= snap["by_status"]["ok"] + 1  # at most the call in flight at cancel time
    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert report["complete"] is False and report["status"] == "cancelled"


def test_a_run_recorded_while_the_broker_was_long_idle_is_not_taken_for_lost_before_its_own_grace(genesis,
                                                                                                   redis_url):
    """Record first, then enqueue: between the two a sweep sees queued jobs and an empty broker.
    The broker had been idle for longer than the grace before the run existed; the run still
    gets the whole grace of its own (it was published twice otherwise), and is taken for lost
    once that passes with no message."""
    import time

    from producer.submit import record_run, select_work
    from shared import fleet
    from shared.config import get_settings
    from worker.recovery import _runs_without_messages

    client, grace_s = redis.Redis.from_url(redis_url), 0.5
    assert _runs_without_messages(client, grace_s, set()) == {}  # an idle broker, nothing in flight
    time.sleep(grace_s + 0.2)
    settings = get_settings()
    selection = select_work(settings, agents=["qa"], all_agents=False, backends=["openai"], suite=None, limit=2)
    run_id, jobs = record_run(settings, selection)
    fleet.mark_run_enqueued(client, run_id)  # publish_jobs' first step; its messages not yet sent
    assert len(jobs) == 2
    assert _runs_without_messages(client, grace_s, set()) == {}
    time.sleep(grace_s + 0.2)
    assert _runs_without_messages(client, grace_s, set()) == {  # its messages never came
        run_id: "has queued jobs but the broker holds no message"}
