"""SQL is the source of truth: a run survives Redis losing everything, and a cancelled run
still gets its report. Real workers, real Redis, real SDKs against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import func
from sqlmodel import select

from tests.support.runs import one_line_error, producer, submit, wait_until_reported
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

    resumed = producer("resume", run_id)  # a cancel is final: nothing queued for workers that skip it
    assert "a cancelled run is not resumed" in one_line_error(resumed)
    after = json.loads(producer("status", run_id, "--json").stdout)
    assert after["status"] == "cancelled" and after["by_status"] == snap["by_status"]


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


def _held_reservations(client) -> int:
    from shared.budget.lua import BudgetKeys

    return client.hlen(BudgetKeys.under("genesis:budget").reservations)


def _a_holder_that_died_mid_call(redis_url: str) -> tuple[str, str]:
    """A run of one job (no worker: its message waits) that a worker process claimed, reserved
    its call for, and died: (run id, the dead holder)."""
    from shared import fleet, lifecycle
    from shared.budget import BudgetGuard
    from shared.budget.recorded import call_key
    from shared.config import get_settings
    from tests.support.runs import run_jobs

    client, holder = redis.Redis.from_url(redis_url), "gone@host"
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    (job,) = run_jobs(run_id)
    assert lifecycle.claim(job.id, holder, fleet.redis_now(client), 60)[0] == lifecycle.Claim.TAKEN
    fleet.beat(client, holder, ttl_s=0.2)
    BudgetGuard(client, get_settings()).reserve(call_key(job.id, "inference"), 0.5, run_id=run_id,
                                                holder=f"{holder}|gpt-4o-mini")
    return run_id, holder


def _sweeps_until(redis_url: str, done, what: str):
    """Sweeps (each as the sweep thread runs it: an error is logged, the next tick tries again)
    until `done()` is truthy."""
    from shared.config import get_settings
    from worker import recovery

    client = redis.Redis.from_url(redis_url)

    def swept():
        try:
            recovery.sweep(client, get_settings())
        except Exception:  # noqa: BLE001
            pass
        return done()

    return wait_for(swept, timeout=15, interval=0.3, what=what)


def _ledgered_as_unknown(run_id: str) -> list:
    from tests.support.runs import ledger_rows

    return [e for e in ledger_rows(run_id) if e.source.startswith("outcome unknown")]


def test_a_sweep_failing_after_it_found_dead_holders_leaves_them_to_the_next_sweep(fast_recovery, genesis,
                                                                                   redis_url, monkeypatch):
    """Review M4: the sweep forgot the dead before it reconciled them, so one transient error in
    between (here the budget's reconcile meets a locked database once) leaked their reservation
    and their unledgered call for good."""
    from sqlalchemy.exc import OperationalError

    from shared import fleet
    from shared.budget import BudgetGuard
    from tests.support.runs import run_jobs

    run_id, holder = _a_holder_that_died_mid_call(redis_url)
    reconcile, injected = BudgetGuard.reconcile, []

    def once_locked(guard, dead_nodes=frozenset()):
        if dead_nodes and not injected:
            injected.append(set(dead_nodes))
            raise OperationalError("SELECT ...", {}, Exception("database is locked"))
        return reconcile(guard, dead_nodes)

    monkeypatch.setattr(BudgetGuard, "reconcile", once_locked)
    _sweeps_until(redis_url, lambda: injected, "a sweep that finds the dead holder and fails")
    assert injected == [{holder}]
    (unknown,) = _sweeps_until(redis_url, lambda: _ledgered_as_unknown(run_id), "a later sweep to ledger its call")
    assert unknown.cost_usd == 0.5 and unknown.job_id is None  # its worst case, no job link: the job runs again
    client = redis.Redis.from_url(redis_url)
    assert _held_reservations(client) == 0 and run_jobs(run_id)[0].status == "queued"  # freed; handed back
    assert holder not in fleet.known_nodes(client)  # forgotten once reconciled


def test_a_failing_sweep_step_does_not_skip_the_others(fast_recovery, genesis, redis_url, monkeypatch):
    """Each step of the sweep on its own: resuming provider batches fails on every sweep (a
    provider or suite error), yet the dead holder's call is ledgered and its reservation freed."""
    from shared import fleet
    import worker.batches

    run_id, holder = _a_holder_that_died_mid_call(redis_url)
    failures = []

    def broken(*_args):
        failures.append(1)
        raise RuntimeError("the provider's batch API is down")

    monkeypatch.setattr(worker.batches, "resume_batches", broken)
    (unknown,) = _sweeps_until(redis_url, lambda: _ledgered_as_unknown(run_id), "a sweep to ledger the call")
    client = redis.Redis.from_url(redis_url)
    assert unknown.cost_usd == 0.5 and _held_reservations(client) == 0 and failures
    assert holder not in fleet.known_nodes(client)  # batches have nothing to do with it: forgotten


def test_a_release_that_failed_under_a_live_worker_is_retried_at_its_next_heartbeat(genesis, redis_url,
                                                                                    monkeypatch):
    """Review M8: a best-effort release that met a Redis blip held its budget until the worker
    died (reconcile leaves a live holder's reservation alone). The process that failed to
    release it now releases it at its next heartbeat."""
    from shared.budget import BudgetGuard
    from shared.budget.recorded import call_key
    from shared.config import get_settings
    from worker.paid_call import Services, Holds
    from worker.recovery import Recovery

    client = redis.Redis.from_url(redis_url)
    budget = BudgetGuard(client, get_settings())
    key = call_key(7, "inference")
    call_id = budget.reserve(key, 0.25, holder="w1@host|gpt-4o-mini")  # a live worker's
    release = BudgetGuard.release

    def blip(guard, *args):
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(BudgetGuard, "release", blip)
    Holds(Services(redis=client, limiter=None, budget=budget, back_pressure=None), key, call_id).release()  # a call not made
    assert _held_reservations(client) == 1  # best effort: the job went on
    with pytest.raises(redis.ConnectionError):  # its loop logs it; kept for the next beat
        Recovery("w1@host")._beat()
    assert _held_reservations(client) == 1
    monkeypatch.setattr(BudgetGuard, "release", release)
    Recovery("w1@host")._beat()  # Redis is back
    assert _held_reservations(client) == 0


def test_each_process_is_its_own_incarnation(monkeypatch):
    """Minted once per process; a forked child (another pid) mints its own, under the same node."""
    import os

    from shared import fleet

    mine = fleet.incarnation("w1@host")
    assert fleet.incarnation("w1@host") == mine and mine.startswith(f"w1@host/{os.getpid()}.")
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # as in a prefork child
    child = fleet.incarnation("w1@host")
    assert child != mine and child.startswith("w1@host/4242.")
    monkeypatch.setattr(os, "getpid", lambda: 4343)
    assert fleet.incarnation("odd|name").startswith("odd_name/4343.")  # a holder is `<incarnation>|<model>`
