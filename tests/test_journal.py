"""The paid-call journal and the fleet's liveness rules, against real Redis and SQLite: a
journaled answer reaches the ledger exactly once however often it is replayed, and a missing
heartbeat or run marker is believed only after it stayed missing for the grace period."""

from __future__ import annotations

import time

from sqlmodel import select

from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.runs import one_job_run


def a_running_job(monkeypatch, tmp_path):
    from shared.lifecycle import ClaimedJob

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    job_id = one_job_run(attempts=1, worker="w1@host")
    return ClaimedJob(id=job_id, run_id="r1", agent="qa", task_id="qa-001", backend="openai", provider="openai",
                      model="gpt-4o-mini", attempts=1, suite="genesis-custom", worker="w1@host")


def journaled_answer(redis_client, job, call_id: str, *, final: bool = True, output: str = "42"):
    from dataclasses import asdict

    from shared import journal
    from shared.payments import PaidResult, Payment

    payment = Payment(call_id, "inference", job.model, 30, 4, 0.0001)
    result = PaidResult(output=output, score=1.0 if final else None, detail="exact", latency_ms=12.0,
                        input_tokens=30, output_tokens=4, cost_usd=0.0001)
    journal.write(redis_client, "answer", job, str(job.id), payment, {"result": asdict(result), "final": final})


def ledger_of(job_id: int):
    from shared.db import session_scope
    from shared.models import CostEntry, Job

    with session_scope() as session:
        entries = session.exec(select(CostEntry).where(CostEntry.run_id == "r1").order_by(CostEntry.id)).all()
        return session.get(Job, job_id), entries


def test_a_journaled_answer_reaches_the_ledger_once_however_often_replayed(redis_client, monkeypatch, tmp_path):
    from shared import journal

    job = a_running_job(monkeypatch, tmp_path)
    settled: list[tuple] = []

    journaled_answer(redis_client, job, "c1")
    assert journal.pending_job_ids(redis_client) == {job.id}
    assert journal.replay(redis_client, lambda *args: settled.append(args)) == (1, [])
    journaled_answer(redis_client, job, "c1")  # as if the first replay's HDEL had been lost
    assert journal.replay(redis_client, lambda *args: settled.append(args)) == (1, [])

    assert journal.pending_job_ids(redis_client) == set()
    assert settled == [(str(job.id), 0.0001, "c1")] * 2  # the budget's settle is idempotent per paid call
    stored, entries = ledger_of(job.id)
    assert (stored.status, stored.output, stored.cost_usd) == ("ok", "42", 0.0001)
    assert [(e.job_id, e.call_id) for e in entries] == [(job.id, "c1")]


def test_a_journaled_payment_conflicting_with_a_later_one_is_ledgered_unattached(redis_client, monkeypatch,
                                                                              tmp_path):
    """The job was paid again (a claim past the lease, `producer resume`) before the replay:
    both payments are real, so both are in the ledger, the journaled one without a job link."""
    from shared import journal
    from shared.lifecycle import finish_ok
    from shared.payments import PaidResult

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(redis_client, job, "c1", output="journaled")
    assert finish_ok(job, PaidResult(output="second", score=1.0, detail="exact", latency_ms=9.0, input_tokens=30,
                                     output_tokens=4, cost_usd=0.0001), call_id="c2")
    assert journal.replay(redis_client, lambda *args: None).count == 1
    stored, entries = ledger_of(job.id)
    assert stored.output == "second"
    assert [(e.job_id, e.call_id) for e in entries] == [(job.id, "c2"), (None, "c1")]
    assert "journaled; the job was paid again" in entries[1].source


def test_a_journaled_answer_waiting_for_its_judge_is_replayed_as_such(redis_client, monkeypatch, tmp_path):
    from shared import journal

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(redis_client, job, "c1", final=False)
    replayed = journal.replay(redis_client, lambda *args: None)
    assert replayed.needs_judge == [job]
    stored, _ = ledger_of(job.id)
    assert (stored.status, stored.score, stored.output) == ("running", None, "42")  # not `ok` with no grade


def test_a_missing_heartbeat_is_believed_only_after_the_grace_period(redis_client):
    from shared import fleet

    fleet.beat(redis_client, "alive@host", ttl_s=30)
    nodes = {"alive@host", "gone@host"}
    assert fleet.dead_nodes(redis_client, nodes, grace_s=0.3) == set()  # first seen missing: not yet
    time.sleep(0.35)
    assert fleet.dead_nodes(redis_client, nodes, grace_s=0.3) == {"gone@host"}
    fleet.beat(redis_client, "gone@host", ttl_s=30)  # it came back: forgotten
    assert fleet.dead_nodes(redis_client, nodes, grace_s=0.0) == set()


def test_a_run_marker_lost_with_redis_is_noticed_after_the_grace_period(redis_client):
    from shared import fleet

    fleet.mark_run_enqueued(redis_client, "kept")
    assert fleet.runs_without_messages(redis_client, {"kept", "lost"}, grace_s=0.3) == set()
    time.sleep(0.35)
    assert fleet.runs_without_messages(redis_client, {"kept", "lost"}, grace_s=0.3) == {"lost"}


def test_the_fleet_clock_is_redis_time_read_once_per_resync(redis_client, monkeypatch) -> None:
    from datetime import datetime, timezone

    from shared import fleet

    reads = []
    real_seconds = fleet._seconds
    monkeypatch.setattr(fleet, "_seconds", lambda client: reads.append(1) or real_seconds(client))
    monkeypatch.setattr(fleet, "_offsets", {})
    first = fleet.redis_now(redis_client)
    time.sleep(0.05)
    second = fleet.redis_now(redis_client)
    seconds, micros = redis_client.time()
    server = datetime.fromtimestamp(seconds + micros / 1e6, tz=timezone.utc)
    assert len(reads) == 1  # the second answer came from the monotonic clock
    assert 0.04 <= (second - first).total_seconds() < 0.5
    assert abs((server - second).total_seconds()) < 0.05  # and agrees with Redis
    monkeypatch.setattr(fleet, "CLOCK_RESYNC_S", 0.0)
    fleet.redis_now(redis_client)
    assert len(reads) == 2


def test_the_sweep_publishes_a_replayed_answer_that_waits_for_its_judge(redis_client, monkeypatch, tmp_path):
    """Its judge runs in a delivery: the sweep requeues the job and publishes it (job, provider, backend)."""
    import worker.recovery
    from shared.config import get_settings

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(redis_client, job, "c1", final=False)
    published: list = []
    monkeypatch.setattr(worker.recovery, "publish_jobs", lambda run_id, jobs: published.append((run_id, list(jobs))))
    done = worker.recovery.sweep(redis_client, get_settings())
    assert done["replayed"] == 1
    assert published == [("r1", [(job.id, "openai", "openai")])]
    stored, _ = ledger_of(job.id)
    assert stored.status == "queued"
