"""The paid-call journal and the fleet's liveness rules, against real Redis and SQLite: a
journaled answer reaches the ledger exactly once however often it is replayed, and a missing
heartbeat or run marker is believed only after it stayed missing for the grace period. The
journal outlives Redis losing its data (this host's fsync'ed copy), an unreadable entry is
quarantined, and a replay respects a cancelled run."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.postgres import postgres_outage
from tests.support.runs import (ledger_rows, paid_call_figures, one_job_run, print_fault_row, producer,
                                run_jobs, served_ok, submit,
                                wait_until_reported)
from tests.support.waiting import wait_for


def a_running_job(monkeypatch, tmp_path):
    from shared.lifecycle import ClaimedJob

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    job_id = one_job_run(attempts=1, worker="w1@host", holder="w1@host")
    return ClaimedJob(id=job_id, run_id="r1", agent="qa", task_id="qa-001", backend="openai", provider="openai",
                      model="gpt-4o-mini", attempts=1, suite="genesis-custom", holder="w1@host")


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


# --- a journal that outlives Redis (issue #27: M3, D3, D4) ---------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_answer_journaled_while_the_database_was_away_survives_redis_losing_its_data(
        fast_recovery, start_worker, simulator, database_url, redis_url, tmp_path):
    """The answer arrives while PostgreSQL refuses connections (journaled, the job still
    running), then Redis loses everything: the answer and its cost reach SQL once from this
    host's copy, and the job is not paid again."""
    from worker.app import app

    simulator.update(latency_ms=2000)
    start_worker("w1", concurrency=2)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "2")
    wait_for(lambda: simulator.stats()["in_flight"] >= 2, timeout=60, interval=0.05, what="both calls in flight")

    outage = threading.Thread(target=postgres_outage, args=(database_url, 6.0))
    outage.start()  # the answers arrive meanwhile: journaled
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: client.hlen("genesis:journal") >= 2, timeout=10, interval=0.05, what="both answers journaled")
        client.flushdb()  # a restart without persistence: journal, budget, queues, heartbeats gone
    finally:
        outage.join()

    snap = wait_until_reported(run_id, timeout=90)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("answers journaled (database away), then Redis flushed", figures)
    assert snap["by_status"]["ok"] == 2
    assert figures["served"] == figures["entries"] == 2  # every call billed is in the ledger, once
    assert figures["paid_twice"] == 0 and [job.attempts for job in run_jobs(run_id)] == [1, 1]
    assert client.hlen("genesis:journal") == 0 and not list((tmp_path / "journal").glob("*.json"))


class RedisAway:
    """A Redis client whose server does not answer (no socket opened)."""

    def __getattr__(self, name):
        def fails(*args, **kwargs):
            raise redis.ConnectionError("Connection refused")
        return fails


def test_with_redis_and_the_database_both_away_the_answer_waits_on_this_hosts_disk(redis_client, monkeypatch,
                                                                                 tmp_path):
    """The database turned the answer away and Redis does not answer either: the journal write
    keeps it on this host's disk (fsync'ed), and this host's replay brings it to SQL once both
    are back."""
    import worker.recovery
    from shared.config import get_settings

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(RedisAway(), job, "c1")  # does not raise: the answer is on disk

    assert [p.name for p in (tmp_path / "journal").glob("*.json")] == ["c1.json"]
    assert redis_client.hlen("genesis:journal") == 0
    assert journal_pending(redis_client) == {job.id}  # this host leaves the job alone meanwhile
    assert worker.recovery.replay_host_journal(redis_client, get_settings()) == 1
    stored, entries = ledger_of(job.id)
    assert (stored.status, stored.output) == ("ok", "42")
    assert [(e.job_id, e.call_id, e.cost_usd) for e in entries] == [(job.id, "c1", 0.0001)]
    assert not list((tmp_path / "journal").glob("*.json")) and journal_pending(redis_client) == set()


def journal_pending(client):
    from shared import journal

    return journal.pending_job_ids(client)


def test_a_journal_entry_redis_lost_is_put_back_for_the_other_hosts_and_replayed_once(redis_client, monkeypatch,
                                                                                    tmp_path):
    import worker.recovery
    from shared.config import get_settings

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(redis_client, job, "c1")
    redis_client.flushdb()  # Redis lost its data before any replay
    assert journal_pending(redis_client) == {job.id}  # this host still leaves the job alone
    with monkeypatch.context() as patched, pytest.raises(OperationalError):
        patched.setattr("shared.lifecycle.finish_ok", database_away)  # the database is still away
        worker.recovery.replay_host_journal(redis_client, get_settings())
    assert redis_client.hexists("genesis:journal", "c1")  # back in Redis, for the other hosts

    with monkeypatch.context() as other_host:  # a sweep on another host, with a journal folder of its own
        other_host.setenv("GENESIS_RECOVERY__JOURNAL_DIR", str(tmp_path / "other-host"))
        get_settings.cache_clear()
        assert worker.recovery.sweep(redis_client, get_settings())["replayed"] == 1
    get_settings.cache_clear()
    assert list((tmp_path / "journal").glob("*.json"))  # this host's copy is still there...
    assert worker.recovery.replay_host_journal(redis_client, get_settings()) == 1  # ...and replays as a no-op
    _, entries = ledger_of(job.id)
    assert [(e.job_id, e.call_id) for e in entries] == [(job.id, "c1")]
    assert redis_client.hlen("genesis:journal") == 0 and not list((tmp_path / "journal").glob("*.json"))


def database_away(*args, **kwargs):
    raise OperationalError("INSERT", {}, Exception("database is locked"))


def test_an_unreadable_journal_entry_is_quarantined_and_the_sweep_goes_on(redis_client, monkeypatch, tmp_path):
    """An entry of another release (a field this one does not know), one of an unknown kind and
    a file that is not JSON: each is kept in quarantine, logged and counted; the good entry is
    replayed and every later step of the sweep runs."""
    import json as jsonlib

    import worker.recovery
    from shared.config import get_settings
    from shared.metrics import GenesisCollector

    job = a_running_job(monkeypatch, tmp_path)
    journaled_answer(redis_client, job, "good")
    other_release = {"kind": "answer", "job": {"id": job.id, "lease_token": "x"}, "key": "1", "payment": {}, "data": {}}
    redis_client.hset("genesis:journal", "newer", jsonlib.dumps(other_release))
    redis_client.hset("genesis:journal", "unknown-kind", jsonlib.dumps({**other_release, "kind": "refund"}))
    (tmp_path / "journal").mkdir(exist_ok=True)
    (tmp_path / "journal" / "torn.json").write_bytes(b'{"kind": "ans')  # a file cut short
    published: list = []
    monkeypatch.setattr(worker.recovery, "publish_jobs", lambda run_id, jobs: published.append(run_id))
    reported: list = []
    monkeypatch.setattr(worker.recovery, "_report_finished_runs", lambda *args: reported.append(1) or 0)

    done = worker.recovery.sweep(redis_client, get_settings())
    assert done["replayed"] == 1 and reported == [1]  # the good one replayed, and the sweep went on
    assert ledger_of(job.id)[0].status == "ok"
    assert sorted(redis_client.hkeys("genesis:journal:quarantine")) == [b"newer.json", b"torn.json",
                                                                       b"unknown-kind.json"]
    assert sorted(p.name for p in (tmp_path / "journal" / "quarantine").iterdir()) == [
        "newer.json", "torn.json", "unknown-kind.json"]
    assert redis_client.hlen("genesis:journal") == 0
    assert worker.recovery.sweep(redis_client, get_settings()) is not None  # and the next sweep too
    metrics = {m.name: m.samples[0].value for m in GenesisCollector(get_settings(), redis_client).collect()
               if m.name.startswith("genesis_journal") or m.name == "genesis_scrape_journal_ok"}
    assert metrics == {"genesis_journal_pending": 0, "genesis_journal_quarantined": 3, "genesis_scrape_journal_ok": 1}


def test_a_journaled_answer_replayed_into_a_cancelled_run_is_ledgered_and_no_job_sits_queued(
        redis_client, monkeypatch, tmp_path):
    """The money is real: both answers and their costs are in the ledger. The answer that
    waits for its judge is not judged (the run was cancelled) nor handed back (no delivery
    takes a job of a cancelled run): it ends `error`, saying why, its answer kept; the other ends `ok`."""
    import worker.recovery
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.lifecycle import ClaimedJob, cancel_run
    from shared.models import CostEntry, Job

    judged_job = a_running_job(monkeypatch, tmp_path)
    with session_scope() as session:
        other = Job(run_id="r1", agent="qa", task_id="qa-002", backend="openai", provider="openai",
                    model="gpt-4o-mini", status="running", attempts=1, worker="w1@host", holder="w1@host")
        session.add(other)
        session.flush()
        scored_job = ClaimedJob(**{**judged_job.__dict__, "id": other.id, "task_id": "qa-002"})
    journaled_answer(redis_client, judged_job, "c1", final=False, output="waits for its judge")
    journaled_answer(redis_client, scored_job, "c2", output="scored here")
    cancel_run("r1")
    published: list = []
    monkeypatch.setattr(worker.recovery, "publish_jobs", lambda run_id, jobs: published.append((run_id, list(jobs))))

    assert worker.recovery.sweep(redis_client, get_settings())["replayed"] == 2
    assert published == []
    with session_scope() as session:
        jobs = {job.id: job for job in session.exec(select(Job).where(Job.run_id == "r1")).all()}
        entries = session.exec(select(CostEntry).where(CostEntry.run_id == "r1")).all()
    assert sorted((e.job_id, e.call_id) for e in entries) == [(judged_job.id, "c1"), (scored_job.id, "c2")]
    waiting, scored = jobs[judged_job.id], jobs[scored_job.id]
    assert (waiting.status, waiting.error_type, waiting.output, waiting.cost_usd) == (
        "error", "RunCancelled", "waits for its judge", 0.0001)
    assert (scored.status, scored.output) == ("ok", "scored here")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_answer_journaled_for_a_run_cancelled_meanwhile_is_ledgered_and_its_job_not_left_queued(
        fast_recovery, start_worker, simulator, database_url, redis_url, tmp_path):
    """Real workers: the run is cancelled while its answer is in flight, the answer arrives
    while PostgreSQL refuses connections (journaled), then the replay: the answer and its
    cost reach SQL, no judge is paid, and the job ends instead of going back to `queued`."""
    simulator.update(latency_ms=2500)
    start_worker("w1", concurrency=1)
    run_id = submit("--suite", "genesis-judge", "--agent", "content", "--backend", "mistral-ft", "--limit", "1")
    wait_for(lambda: simulator.stats()["in_flight"] >= 1, timeout=60, interval=0.05, what="the answer in flight")
    assert producer("cancel", run_id).exit_code == 0
    client = redis.Redis.from_url(redis_url)
    outage = threading.Thread(target=postgres_outage, args=(database_url, 5.0))
    outage.start()  # the answer arrives meanwhile: journaled
    try:
        wait_for(lambda: client.hlen("genesis:journal") >= 1, timeout=10, interval=0.05, what="the answer journaled")
    finally:
        outage.join()

    [job] = wait_for(lambda: (jobs := run_jobs(run_id)) and jobs[0].status != "running" and jobs, timeout=30,
                     what="the journaled answer replayed")
    assert (job.status, job.error_type, job.attempts) == ("error", "RunCancelled", 1)
    assert job.output and job.score is None  # the paid answer is kept, ungraded
    entries = ledger_rows(run_id)
    assert [(e.job_id, e.operation) for e in entries] == [(job.id, "inference")]
    assert served_ok(simulator) == 1  # the answer only: no judge paid for a cancelled run


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_with_an_unreadable_journal_entry_the_workers_sweeps_still_finish_a_run_journaled_through_an_outage(
        fast_recovery, start_worker, simulator, database_url, redis_url):
    """Real workers: an entry another release wrote sits in the journal while answers are
    journaled through a PostgreSQL outage. The last jobs' completion step fails with the
    database, so only a sweep can build the report: it does, with the entry quarantined and counted."""
    import json as jsonlib

    from shared.config import get_settings
    from shared.metrics import GenesisCollector

    client = redis.Redis.from_url(redis_url)
    client.hset("genesis:journal", "newer", jsonlib.dumps({"kind": "answer", "job": {"id": 999, "lease_token": "x"}}))
    simulator.update(latency_ms=2000)
    start_worker("w1", concurrency=2)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "2")
    wait_for(lambda: simulator.stats()["in_flight"] >= 2, timeout=60, interval=0.05, what="both calls in flight")
    postgres_outage(database_url, 4.0)  # the answers arrive meanwhile: journaled

    snap = wait_until_reported(run_id, timeout=60)
    assert snap["by_status"]["ok"] == 2 and len(ledger_rows(run_id)) == served_ok(simulator) == 2
    assert client.hkeys("genesis:journal:quarantine") == [b"newer.json"] and client.hlen("genesis:journal") == 0
    [quarantined] = [m for m in GenesisCollector(get_settings(), client).collect()
                     if m.name == "genesis_journal_quarantined"]
    assert quarantined.samples[0].value == 1


def test_a_journal_file_is_named_by_its_call_id_and_never_placed_by_it(tmp_path):
    from shared.spool import Spool, name_of

    spool = Spool(tmp_path / "journal")
    spool.put("0f3a-c1", b"one")
    spool.put("../../outside", b"two")  # a key never chooses where its file goes
    assert [name for name, _ in spool.items()] == ["0f3a-c1.json", name_of("../../outside")]
    assert name_of("../../outside").startswith("h-") and "/" not in name_of("../../outside")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(["0f3a-c1.json",
                                                                                name_of("../../outside")])
    spool.quarantine("0f3a-c1.json")
    spool.remove(name_of("../../outside"))
    spool.remove(name_of("../../outside"))  # taking an entry twice is harmless
    assert spool.items() == [] and spool.quarantined() == ["0f3a-c1.json"]
