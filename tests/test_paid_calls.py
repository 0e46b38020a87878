"""Every paid call through one guarded path (worker/paid_call.py), end to end with real workers,
Redis, the simulator and the SDKs: under each fault, every call the provider billed is in the
ledger, no job is paid twice for one operation, and no call helper thread is left behind.

`pytest -s tests/test_paid_calls.py` prints one row of the fault table per test:
| fault | paid calls served | ledger entries | jobs paid twice | call threads afterwards |"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
import redis
from sqlmodel import select

from tests.support.postgres import postgres_outage
from tests.support.runs import paid_call_figures, print_fault_row, running_on, submit, wait_until_reported
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

JUDGED = ["--suite", "genesis-judge", "--agent", "content", "--agent", "legal", "--backend", "mistral-ft"]
JUDGE_MODEL = "gpt-5-mini"


def jobs_of(run_id: str):
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)).all()


def entries_of(run_id: str):
    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        return session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all()


def settled_sim(simulator) -> dict:
    """The simulator's counters once no request is in flight (a held answer is counted late)."""
    return wait_for(lambda: (s := simulator.stats())["in_flight"] == 0 and s, timeout=30, what="calls to end")


def no_reservation_left(redis_url: str) -> None:
    from shared.budget.lua import BudgetKeys

    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.hlen(BudgetKeys.under("genesis:budget").reservations) == 0, timeout=20,
             what="every reservation to be settled or released")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_judged_run_through_a_database_outage_ledgers_every_paid_call_once(
        fast_recovery, start_worker, simulator, database_url, redis_url, tmp_path):
    from worker.app import app

    simulator.update(latency_ms=1000)
    start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)
    run_id = submit(*JUDGED, "--backend", "mistral-base")  # 2 agents x 5 tasks x 2 backends, each judged
    wait_for(lambda: sum(j.status == "ok" for j in jobs_of(run_id)) >= 3 and simulator.stats()["in_flight"] >= 4,
             timeout=60, interval=0.05, what="the run under way, calls in flight")

    postgres_outage(database_url, 6.0)  # the calls in flight are paid meanwhile, and cannot be recorded

    snap = wait_until_reported(run_id, timeout=150)
    jobs = jobs_of(run_id)
    assert snap["by_status"]["ok"] == len(jobs) == 20
    assert all(j.score is not None for j in jobs)  # no journaled answer came back `ok` ungraded
    stats = settled_sim(simulator)
    entries = entries_of(run_id)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("judged run, PostgreSQL refusing connections 6 s", figures)
    assert len(entries) == figures["served"] == stats["completions_ok"]  # every billed call, judge included
    assert stats["by_model"][JUDGE_MODEL] == sum(1 for e in entries if e.operation == "judge")
    assert sorted(e.job_id for e in entries if e.operation == "judge" and e.job_id) == [j.id for j in jobs]
    assert figures["paid_twice"] == 0 and figures["threads_late"] == 0
    assert redis.Redis.from_url(redis_url).hlen("genesis:journal") == 0
    no_reservation_left(redis_url)
    logs = "".join(path.read_text() for path in tmp_path.glob("w*.log"))
    assert "journaled for replay" in logs and "written to SQL" in logs  # the outage did hit paid calls


def test_a_provider_slower_than_the_deadline_is_paid_once_per_delivery_and_every_late_answer_ledgered(
        monkeypatch, genesis, start_worker, simulator, redis_url):
    from shared.config import get_settings
    from worker.app import app

    for name, value in {"GENESIS_RETRY__CALL_TIMEOUT_S": "1", "GENESIS_RETRY__MAX_ATTEMPTS": "3",
                        "GENESIS_RETRY__BACKOFF_BASE_S": "0.1", "GENESIS_RETRY__BACKOFF_MAX_S": "0.2"}.items():
        genesis[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    simulator.update(latency_ms=1500)  # every answer comes half a second after the deadline
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "6")

    snap = wait_until_reported(run_id, timeout=90)
    jobs = jobs_of(run_id)
    assert snap["by_status"]["error"] == 6 and all(j.attempts == 3 for j in jobs)
    stats = settled_sim(simulator)
    no_reservation_left(redis_url)
    figures = wait_for(lambda: (f := paid_call_figures(run_id, simulator, app))["threads_late"] == 0 and f,
                       timeout=10, what="abandoned helper threads to exit")
    print_fault_row("provider 1.5 s, deadline 1 s, 3 attempts", figures)
    deliveries = sum(j.attempts for j in jobs)
    assert stats["requests_total"] <= deliveries  # at most one payment per delivery the deadline let through
    entries = entries_of(run_id)
    assert len(entries) == figures["served"] == stats["completions_ok"] > 0  # every late answer ledgered
    assert all(e.job_id is None and "answered after its deadline" in e.source for e in entries)
    assert figures["threads"] <= 4  # one serving helper per worker thread, none abandoned


def test_a_two_call_job_that_outlives_one_lease_is_not_paid_twice(fast_recovery, monkeypatch, genesis,
                                                                   start_worker, simulator):
    from shared.config import get_settings
    from worker.app import app

    for name, value in {"GENESIS_RECOVERY__LEASE_S": "3", "GENESIS_RETRY__CALL_TIMEOUT_S": "2.5"}.items():
        genesis[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    simulator.update(latency_ms=2000)  # answer 2 s + judge 2 s: the job outlives one 3 s lease
    start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)  # idle, sweeping: it would take a job whose lease ran out
    run_id = submit(*JUDGED, "--limit", "2")  # 4 jobs

    snap = wait_until_reported(run_id, timeout=90)
    jobs = jobs_of(run_id)
    assert snap["by_status"]["ok"] == 4 and all(j.attempts == 1 for j in jobs)
    stats = settled_sim(simulator)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("answer + judge 4 s, lease 3 s", figures)
    assert stats["by_model"][JUDGE_MODEL] == 4 and stats["completions_ok"] == 8
    assert figures["served"] == figures["entries"] == 8 and figures["paid_twice"] == 0


def test_a_worker_killed_mid_call_has_its_calls_ledgered_as_outcome_unknown(fast_recovery, start_worker,
                                                                            simulator, redis_url):
    from worker.app import app

    simulator.update(latency_ms=4000)
    doomed = start_worker("w1", concurrency=3)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "6")
    wait_for(lambda: simulator.stats()["in_flight"] == 3, timeout=30, what="three calls in flight on w1")
    in_flight = running_on(run_id, doomed.hostname)
    doomed.kill()  # SIGKILL: the provider still answers (and bills) the three calls
    start_worker("w2", concurrency=3)

    snap = wait_until_reported(run_id, timeout=90)
    assert snap["by_status"]["ok"] == 6
    stats = settled_sim(simulator)
    entries = entries_of(run_id)
    unknown = [e for e in entries if e.source.startswith("outcome unknown")]
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("worker SIGKILLed with 3 calls in flight", figures)
    assert len(unknown) == 3 == len(in_flight)
    assert {int(e.source.rsplit("job ", 1)[1].rstrip(")")) for e in unknown} == in_flight
    assert all(e.job_id is None and e.cost_usd > 0 for e in unknown)  # at their worst case
    assert stats["completions_ok"] == 9 and len(entries) == 9  # 6 answers + the 3 killed calls, each once
    no_reservation_left(redis_url)


def test_a_billed_answer_without_choices_is_ledgered_before_the_retry(monkeypatch, genesis, start_worker,
                                                                     simulator):
    from shared.config import get_settings
    from worker.app import app

    for name, value in {"GENESIS_RETRY__MAX_ATTEMPTS": "10", "GENESIS_RETRY__BACKOFF_BASE_S": "0.1"}.items():
        genesis[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    simulator.update(empty_choices_rate=0.3)
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--backend", "mistral-base", "--limit", "6")

    snap = wait_until_reported(run_id, timeout=60)
    assert snap["by_status"]["ok"] == 12
    stats = settled_sim(simulator)
    entries = entries_of(run_id)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("30% of 200s without choices", figures)
    assert stats["faults"].get("empty", 0) > 0
    empty = [e for e in entries if e.job_id is None]
    assert len(empty) == stats["faults"]["empty"] and all("no choices" in e.source for e in empty)
    assert len(entries) == stats["completions_ok"] == figures["served"]


def test_a_halt_refused_under_the_old_limit_does_not_halt_again_after_resume_with_a_new_limit(
        monkeypatch, tmp_path, redis_client):
    """The race: a refusal computed under the old limit, then `budget resume --limit`, then the
    refusing worker's HALT step. The HALT re-checks under the new limit; and a halt event that
    reaches SQL after the resume's, but happened before it on the Redis clock, stays lifted in a
    rebuild."""
    from shared.budget import BudgetGuard, BudgetRefused
    from shared.config import get_settings
    from shared.db import migrate, session_scope
    from shared.models import BudgetEvent
    from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
    from worker.halt import halt_on_refusal

    monkeypatch.setenv("GENESIS_BUDGET__LIMIT_USD", "1.0")
    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    migrate()
    guard = BudgetGuard(redis_client, get_settings())
    guard.settle(1, 0.80)
    with pytest.raises(BudgetRefused) as refused:
        guard.reserve(2, 0.10)  # 0.80 + 0.10 > 0.83: refused, the flag set in the same step
    guard.resume(limit_usd=5.0)  # the operator's resume lands before the worker's HALT step

    class Job:
        id, run_id = 2, "r1"

    stopped = []
    app = type("App", (), {"control": type("C", (), {"cancel_consumer": lambda self, q: stopped.append(q)})()})()
    assert halt_on_refusal(app, guard, Job(), refused.value) is None
    assert not guard.is_halted() and stopped == []
    guard.reserve(2, 0.10)  # the call now fits

    # A halt whose event was committed after the resume's but happened before it in Redis
    with session_scope() as session:
        resumed_at = session.exec(select(BudgetEvent.at).where(BudgetEvent.kind == "resume")).one()
        session.add(BudgetEvent(kind="halt", level="emergency", spent_usd=0.8, limit_usd=1.0, message="late",
                                at=resumed_at - timedelta(milliseconds=5)))
    redis_client.flushdb()
    assert guard.status()["halted"] is False and guard.status()["limit_usd"] == 5.0


def _one_call_killed(simulator, redis_url: str, run_id: str, fault: str, app, operation: str = "inference",
                     billed: int = 2) -> None:
    """The run of one job whose call (`operation`) was killed mid-call: the provider billed
    that call, the retry and what came before (`billed` calls); all are in the ledger, the killed
    one as outcome unknown at its worst case, and no reservation is left."""
    snap = wait_until_reported(run_id, timeout=90)
    assert snap["by_status"]["ok"] == 1
    stats = settled_sim(simulator)
    entries = entries_of(run_id)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row(fault, figures)
    unknown = [e for e in entries if e.source.startswith("outcome unknown")]
    assert len(unknown) == 1 and unknown[0].job_id is None and unknown[0].cost_usd > 0
    assert unknown[0].operation == operation
    assert stats["completions_ok"] == billed == len(entries)  # ledger rows = calls the simulator billed
    no_reservation_left(redis_url)


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_a_worker_restarted_under_its_own_name_mid_call_has_that_call_ledgered_and_its_reservation_freed(
        fast_recovery, start_worker, simulator, redis_url, pool):
    """systemd, `docker compose restart` or a container keeping its hostname: the same `-n`, at
    once. The new process is another holder, so the old one's call is seen as dead (design §12)."""
    from worker.app import app

    simulator.update(latency_ms=6000)
    doomed = start_worker("w1", concurrency=2, pool=pool)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    wait_for(lambda: simulator.stats()["in_flight"] == 1, timeout=30, what="the call in flight on w1")
    assert running_on(run_id, doomed.hostname)
    doomed.kill()
    start_worker("w1", concurrency=2, pool=pool)  # the same node name, at once
    simulator.update(latency_ms=20)
    _one_call_killed(simulator, redis_url, run_id, f"{pool} worker SIGKILLed mid-call, restarted under its name",
                     app)


def test_a_prefork_child_killed_mid_call_while_its_parent_lives_has_that_call_ledgered(
        fast_recovery, start_worker, simulator, redis_url):
    """The OOM killer takes a prefork child; its parent keeps beating and forks a new child. The
    child held the call, so its death is seen. (Needs `-P prefork` to be honoured.)"""
    from worker.app import app

    simulator.update(latency_ms=6000)
    worker = start_worker("w1", pool="prefork", concurrency=1)
    parent_children = worker.pool_children()
    assert len(parent_children) == 1  # `-P prefork -c 1`: one pool process, not a thread pool
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    wait_for(lambda: simulator.stats()["in_flight"] == 1, timeout=30, what="the call in flight in w1's child")
    os.kill(parent_children[0], signal.SIGKILL)
    simulator.update(latency_ms=20)
    _one_call_killed(simulator, redis_url, run_id, "prefork child SIGKILLed mid-call, parent alive", app)
    assert worker.proc.poll() is None and worker.pool_children() != parent_children  # a new child took over


def worst_case_of(job) -> float:
    from shared.budget import task_worst_case
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import Run
    from shared.suite import load_task, run_suite_folder

    with session_scope() as session:
        suite = session.get(Run, job.run_id).suite
    return task_worst_case(get_settings(), load_task(run_suite_folder(suite), job.agent, job.task_id), job.backend,
                           job.model)


def budget_spent(redis_url: str) -> int:
    """What the budget counters say was spent, in micro-dollars."""
    from shared.budget.lua import BudgetKeys

    return int(redis.Redis.from_url(redis_url).hget(BudgetKeys.under("genesis:budget").state, "spent"))


def ledger_micro(entries) -> int:
    from shared.budget import to_micro

    return sum(to_micro(e.cost_usd) for e in entries)


@pytest.mark.parametrize("fault", ["malformed_rate", "drop_rate"])
def test_a_reply_lost_within_the_deadline_is_ledgered_at_worst_case_like_one_past_it(
        fault, monkeypatch, genesis, start_worker, simulator, redis_url):
    """A 200 whose body cannot be parsed, or a connection dropped after the provider took the
    request: the provider billed it, so each attempt is in the ledger (outcome unknown, at its
    worst case), one row per request the simulator billed, and the job ends `error` after its
    attempts."""
    from shared.config import get_settings
    from worker.app import app

    for name, value in {"GENESIS_RETRY__MAX_ATTEMPTS": "3", "GENESIS_RETRY__BACKOFF_BASE_S": "0.1",
                        "GENESIS_RETRY__BACKOFF_MAX_S": "0.2"}.items():
        genesis[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    simulator.update(**{fault: 1.0})
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--backend", "mistral-base", "--backend", "anthropic",
                    "--limit", "2")

    snap = wait_until_reported(run_id, timeout=90)
    jobs = jobs_of(run_id)
    assert snap["by_status"]["error"] == len(jobs) == 6 and all(j.attempts == 3 for j in jobs)
    stats = settled_sim(simulator)
    no_reservation_left(redis_url)
    entries = entries_of(run_id)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row(f"{fault.removesuffix('_rate')} on every reply, 3 attempts", figures)
    assert stats["faults"] == {fault.removesuffix("_rate"): 18}
    assert len(entries) == figures["served"] == stats["completions_ok"] == 18  # each billed request, once
    worst = {job.id: worst_case_of(job) for job in jobs}
    for job in jobs:
        paid = [e for e in entries if e.source.endswith(f"job {job.id})")]
        assert len(paid) == 3 and all(e.job_id is None and e.source.startswith("outcome unknown") for e in paid)
        assert all(e.cost_usd == worst[job.id] > 0 for e in paid)
    assert budget_spent(redis_url) == ledger_micro(entries)


def test_a_paid_answer_of_a_node_judged_dead_while_alive_replaces_its_worst_case_entry(
        fast_recovery, monkeypatch, genesis, start_worker, simulator, redis_url):
    """A paused worker (a VM or container paused, a host cut off from Redis) is judged dead: its
    job is handed back and its call in flight ledgered as outcome unknown. Its answer, which
    the provider billed, arrives within the deadline once it runs again: the job keeps it, and
    the ledger holds one row for the call, at its real cost (budget counters moved alike)."""
    import os
    import signal

    from shared.config import get_settings
    from worker.app import app

    monkeypatch.setenv("GENESIS_RETRY__CALL_TIMEOUT_S", "30")  # the pause stays within the deadline
    genesis["GENESIS_RETRY__CALL_TIMEOUT_S"] = "30"
    get_settings.cache_clear()
    simulator.update(latency_ms=1000)
    paused = start_worker("wa", concurrency=1)  # the only consumer of the job's queue
    start_worker("wb", concurrency=1, queues="reports")  # sweeps: it judges wa dead
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    wait_for(lambda: simulator.stats()["in_flight"] == 1, timeout=30, interval=0.05, what="wa's call in flight")

    os.killpg(paused.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: [e.source for e in entries_of(run_id)] == [
                     e.source for e in entries_of(run_id) if e.source.startswith("outcome unknown")] != []
                 and jobs_of(run_id)[0].status == "queued",
                 timeout=30, interval=0.2, what="wa judged dead: its job handed back, its call ledgered at worst")
        [unknown] = entries_of(run_id)
        assert budget_spent(redis_url) == ledger_micro([unknown])
    finally:
        os.killpg(paused.proc.pid, signal.SIGCONT)

    snap = wait_until_reported(run_id, timeout=60)
    [job] = jobs_of(run_id)
    assert snap["by_status"]["ok"] == 1 and job.output and job.attempts == 1
    stats = settled_sim(simulator)
    no_reservation_left(redis_url)
    entries = entries_of(run_id)
    figures = paid_call_figures(run_id, simulator, app)
    print_fault_row("worker paused past its heartbeat, answer within the deadline", figures)
    assert len(entries) == figures["served"] == stats["completions_ok"] == 1
    [entry] = entries
    assert (entry.call_id, entry.job_id) == (unknown.call_id, job.id) and entry.source == "api"
    assert entry.cost_usd == job.cost_usd < unknown.cost_usd  # its real cost, not the worst case
    assert budget_spent(redis_url) == ledger_micro(entries)


@pytest.mark.parametrize("call", ["answer", "judge"])
def test_a_worker_killed_mid_call_then_redis_flushed_has_that_call_ledgered_and_its_reservation_freed(
        fast_recovery, start_worker, simulator, redis_url, call):
    """Issue #27: Redis loses its data (FLUSHDB, a restart without persistence) right after a
    worker died mid-call (the job's answer, or its judge's call once the answer is recorded).
    The budget rebuilt from SQL must still name that call's holder and id, so the sweep ledgers
    it as outcome unknown exactly as without the flush (design §12)."""
    from worker.app import app

    simulator.update(latency_ms=6000 if call == "answer" else 3000)
    doomed = start_worker("w1", concurrency=2)
    if call == "answer":
        run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    else:
        run_id = submit(*JUDGED[:4], "--backend", "mistral-base", "--limit", "1")
    answered = 0 if call == "answer" else 1
    wait_for(lambda: (s := simulator.stats())["in_flight"] == 1 and s["completions_ok"] == answered, timeout=30,
             interval=0.05, what=f"the {call} call in flight on w1")
    assert running_on(run_id, doomed.hostname)
    doomed.kill()
    redis.Redis.from_url(redis_url).flushdb()  # at once: budget, heartbeats, queues, run markers gone
    start_worker("w2", concurrency=2)
    simulator.update(latency_ms=20)
    _one_call_killed(simulator, redis_url, run_id, f"worker SIGKILLed mid-{call}, then Redis flushed", app,
                     "inference" if call == "answer" else "judge", billed=2 + answered)
