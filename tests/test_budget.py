"""The budget guard against a real Redis (db 12) and SQLite: the strict cap under concurrency,
idempotence, tiers and the webhook, halt/resume, rebuild from SQL, and the Celery side of a halt."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from celery import Celery
from kombu import Queue
from sqlmodel import select

from shared.budget import (
    BudgetGuard,
    BudgetRefused,
    BudgetWait,
    call_cost,
    estimate_run_cost,
    to_micro,
    worst_case_cost,
)
from shared.config import ConfigError, get_settings, load_settings
from shared.messaging import REPORTS_QUEUE
from shared.providers import PROVIDER_QUEUES
from shared.db import migrate, session_scope
from shared.models import BudgetEvent, CostEntry, Job, Run, RunStatus
from shared.tokens import estimate_prompt_tokens
from tests.support.env import use_config
from tests.support.resources import uses
from tests.support.waiting import wait_for
from worker.halt import HaltControlStep  # noqa: E402  (registered on halt_test_app below)

from tests.support.env import SCRATCH_REDIS_URL as REDIS_URL  # noqa: E402
CAP_MICRO = 830_000  # limit $1.00 × emergency 0.83

CONFIG = """
[agents]
names = ["qa", "legal"]

[backends.cheap]
provider = "mistral"
role = "baseline"
model = "cheap-model"

[backends.capped]
provider = "openai"
role = "reference"
model = "pricey-model"
max_tokens = 100

[backends.unpriced]
provider = "anthropic"
role = "reference"
model = "no-price-model"

[pricing."cheap-model"]
input_per_mtok = 1.0
output_per_mtok = 2.0

[pricing."pricey-model"]
input_per_mtok = 10.0
output_per_mtok = 30.0

[budget]
limit_usd = 1.0
warning = 0.25
critical = 0.50
emergency = 0.83
"""


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra_budget: str = "") -> None:
    use_config(monkeypatch, tmp_path, CONFIG + extra_budget, REDIS_URL)


@pytest.fixture
def settings(tmp_path, monkeypatch, redis_client):
    write_config(tmp_path, monkeypatch)
    loaded = load_settings()
    migrate(loaded.database_url)
    return loaded


@pytest.fixture
def guard(settings, redis_client) -> BudgetGuard:
    return BudgetGuard(redis_client, settings)


def events(settings, kind: str | None = None) -> list[BudgetEvent]:
    with session_scope(settings.database_url) as session:
        query = select(BudgetEvent).where(BudgetEvent.kind != "ledger").order_by(BudgetEvent.id)
        if kind:
            query = query.where(BudgetEvent.kind == kind)
        return list(session.exec(query).all())


def ledger(settings, job_id: int | None, cost: float, **fields) -> None:
    """What the worker writes before settling: the CostEntry of one call."""
    with session_scope(settings.database_url) as session:
        session.add(CostEntry(job_id=job_id, cost_usd=cost, **fields))


class Sampler(threading.Thread):
    """Reads settled + reserved straight from Redis, atomically, as often as it can."""

    def __init__(self, client: redis.Redis, key: str = "genesis:budget:state") -> None:
        super().__init__(daemon=True)
        self.client, self.key = client, key
        self.highest = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            spent, reserved = self.client.hmget(self.key, "spent", "reserved")
            if spent is not None:
                self.highest = max(self.highest, int(spent) + int(reserved))
                self.samples += 1

    def __enter__(self) -> "Sampler":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join()


def spend_until_refused(
    guard: BudgetGuard, first_job: int, amount: float, actual_fraction: tuple[float, float], seed: int
) -> tuple[list[int], list[BudgetRefused]]:
    """Reserve, then settle at a real cost at most the reservation, until the guard refuses;
    a reservation told to wait (calls in flight hold the room) tries again, as a job would."""
    rng = random.Random(seed)
    settled: list[int] = []
    refusals: list[BudgetRefused] = []
    job_id = first_job
    wanted = None
    while True:
        wanted = wanted or (amount if amount > 0 else rng.uniform(0.001, 0.03))
        try:
            guard.reserve(job_id, wanted)
        except BudgetWait:
            time.sleep(0.0005)
            continue
        except BudgetRefused as refused:
            refusals.append(refused)
            return settled, refusals
        actual = round(wanted * rng.uniform(*actual_fraction), 6)
        guard.settle(job_id, actual)
        settled.append(to_micro(actual))
        job_id += 1
        wanted = None


def run_threads(guard: BudgetGuard, n: int, amount: float, fraction: tuple[float, float], base: int = 0):
    results: list[tuple[list[int], list[BudgetRefused]]] = [([], [])] * n
    barrier = threading.Barrier(n)

    def work(index: int) -> None:
        barrier.wait()
        results[index] = spend_until_refused(guard, base + index * 1000, amount, fraction, seed=index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def process_worker(index: int, n_threads: int, amount: float) -> list[int]:
    """One of several processes hammering the same budget (settings come from the environment)."""
    settings = load_settings()
    guard = BudgetGuard(redis.Redis.from_url(settings.redis_url), settings)
    results = run_threads(guard, n_threads, amount, (1.0, 1.0), base=(index + 1) * 100_000)
    return [micro for settled, _ in results for micro in settled]


# --- the strict cap under concurrency -----------------------------------------------------


def test_48_threads_grant_exactly_what_fits(guard, redis_client):
    guard.status()  # counters in place, so the sampler sees every step
    with Sampler(redis_client) as sampler:
        results = run_threads(guard, 48, 0.01, (1.0, 1.0))
    granted = [micro for settled, _ in results for micro in settled]
    assert len(granted) == 83  # $0.83 / $0.01
    assert sampler.samples > 0 and sampler.highest <= CAP_MICRO
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.83)
    assert state["reserved_usd"] == 0
    assert state["halted"] is True and state["level"] == "emergency"
    assert all(len(refusals) == 1 for _, refusals in results)  # every thread was stopped by the guard


def test_48_threads_random_amounts_never_pass_the_cap(guard, redis_client):
    guard.status()
    with Sampler(redis_client) as sampler:
        results = run_threads(guard, 48, 0.0, (0.3, 1.0))
    granted = [micro for settled, _ in results for micro in settled]
    refusals = [r for _, rs in results for r in rs]
    spent = int(redis_client.hget("genesis:budget:state", "spent"))
    assert spent == sum(granted) <= CAP_MICRO
    assert sampler.highest <= CAP_MICRO
    # The refusal that halted the budget was a lack of settled room, not room held by calls in
    # flight: settled + its amount > cap. So the whole threshold was used but one call's worst case.
    assert any(to_micro(r.spent_usd) + to_micro(r.amount_usd) > CAP_MICRO for r in refusals)
    assert spent >= CAP_MICRO - to_micro(0.03)
    assert len(granted) > 30  # random amounts of ≤ $0.03: dozens fit before the cap


@pytest.mark.processes
def test_4_processes_of_12_threads_grant_exactly_what_fits(guard, redis_client):
    guard.status()
    with Sampler(redis_client) as sampler, ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        granted = [m for ms in pool.map(process_worker, range(4), [12] * 4, [0.01] * 4) for m in ms]
    assert len(granted) == 83
    assert sampler.highest <= CAP_MICRO
    assert guard.status()["spent_usd"] == pytest.approx(0.83)
    assert guard.status()["reserved_usd"] == 0


# --- idempotence --------------------------------------------------------------------------


def test_each_paid_call_holds_its_own_reservation_and_settles_it_by_id(guard):
    first = guard.reserve(7, 0.10)
    assert guard.reserve(7, 0.10, call_id=first) == first  # the same call reserving again: once
    assert guard.status()["reserved_usd"] == pytest.approx(0.10)
    second = guard.reserve(7, 0.25)  # a duplicate delivery of job 7, live at the same time
    assert guard.status()["reserved_usd"] == pytest.approx(0.35)
    guard.settle(7, 0.05, second)  # settles its own call only: the first call is still held
    assert guard.status()["reserved_usd"] == pytest.approx(0.10)
    assert guard.release(7, second) is False and guard.release(7, first) is True
    assert guard.status()["reserved_usd"] == 0


def test_a_denied_reservation_leaves_another_deliverys_live_reservation(guard):
    live = guard.reserve(1, 0.80)
    with pytest.raises(BudgetWait):
        guard.reserve(1, 0.10)  # a duplicate delivery of the same job must wait...
    assert guard.status()["reserved_usd"] == pytest.approx(0.80)  # ...without dropping the live call's room
    guard.settle(1, 0.80, live)
    with pytest.raises(BudgetRefused):
        guard.reserve(1, 0.10)
    assert guard.status()["spent_usd"] == pytest.approx(0.80)


def test_settling_twice_counts_once(guard):
    guard.reserve(1, 0.10)
    guard.settle(1, 0.04)
    guard.settle(1, 0.04)
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.04)
    assert state["reserved_usd"] == 0


def test_a_redelivered_job_reserving_after_its_settle_costs_nothing_more(guard):
    guard.reserve(1, 0.10)
    guard.settle(1, 0.05)
    guard.reserve(1, 0.10)  # a redelivery, before the worker sees the job is done
    guard.settle(1, 0.05)
    state = guard.status()
    assert (state["spent_usd"], state["reserved_usd"]) == (pytest.approx(0.05), 0)


# --- tiers and the webhook ------------------------------------------------------------------


@pytest.fixture
@uses("sockets")
def webhook():
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"content_type": self.headers["Content-Type"], **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_warning_and_critical_fire_once_each_with_a_log_line_and_a_webhook(
    tmp_path, monkeypatch, redis_client, webhook, caplog
):
    url, received = webhook
    write_config(tmp_path, monkeypatch, f'webhook_url = "{url}"\n')
    settings = load_settings()
    migrate(settings.database_url)
    guard = BudgetGuard(redis_client, settings)
    caplog.set_level(logging.WARNING, logger="genesis.budget")

    for job_id in range(40):  # 40 × $0.02 = $0.80: past 25% and 50%, short of 83%
        guard.reserve(job_id, 0.02)
        guard.settle(job_id, 0.02)

    assert [e.kind for e in events(settings)] == ["warning", "critical"]
    warning, critical = events(settings)
    assert warning.spent_usd == pytest.approx(0.26) and critical.spent_usd == pytest.approx(0.50)
    assert [r["kind"] for r in received] == ["warning", "critical"]
    assert received[0]["content_type"] == "application/json"
    assert received[1]["level"] == "critical" and received[1]["limit_usd"] == 1.0
    assert sum("budget warning" in m for m in caplog.messages) == 1
    assert sum("budget critical" in m for m in caplog.messages) == 1
    assert guard.status()["level"] == "critical"


@pytest.mark.sockets
def test_a_dead_webhook_is_logged_and_never_raised(tmp_path, monkeypatch, redis_client, caplog):
    write_config(tmp_path, monkeypatch, 'webhook_url = "http://127.0.0.1:9/nothing-listens"\n')
    settings = load_settings()
    migrate(settings.database_url)
    guard = BudgetGuard(redis_client, settings)
    guard.settle(1, 0.30)
    assert [e.kind for e in events(settings)] == ["warning"]
    assert any("webhook" in m and "failed" in m for m in caplog.messages)


# --- halt, resume, rebuild ----------------------------------------------------------------------


def test_refusal_halts_once_marks_the_run_and_resume_persists_a_new_limit(guard, settings, redis_client):
    with session_scope(settings.database_url) as session:
        session.add(Run(id="run1", suite="s", status=RunStatus.running))
    guard.reserve(1, 0.80)
    with pytest.raises(BudgetWait) as waiting:
        guard.reserve(2, 0.05)  # 0.80 reserved + 0.05 > 0.83, but nothing is settled: wait, no halt
    assert waiting.value.reserved_usd == pytest.approx(0.80) and not guard.is_halted()
    ledger(settings, 1, 0.80)
    guard.settle(1, 0.80)
    with pytest.raises(BudgetRefused) as refused:
        guard.reserve(2, 0.05)  # settled 0.80 + 0.05 > 0.83: no room left, halt
    assert refused.value.spent_usd == pytest.approx(0.80) and refused.value.limit_usd == 1.0
    assert guard.is_halted()
    assert guard.halt(run_id="run1", reason=str(refused.value)) is True  # the one that records it
    assert guard.halt(run_id="run1", reason="again") is False
    with pytest.raises(BudgetRefused):
        guard.reserve(3, 0.000001)  # halted: nothing passes, however small
    assert [e.kind for e in events(settings)] == ["warning", "critical", "halt"]
    with session_scope(settings.database_url) as session:
        assert session.get(Run, "run1").status == RunStatus.halted
    state = guard.status()
    assert {k: state[k] for k in ("limit_usd", "spent_usd", "reserved_usd", "level", "halted")} == {
        "limit_usd": 1.0, "spent_usd": 0.8, "reserved_usd": 0.0, "level": "emergency", "halted": True,
    }  # 80% spent is past critical only, but a halted budget has no room left: emergency
    assert state["remaining_usd"] == pytest.approx(0.03)
    assert "no room for this call's worst case" in state["halt_reason"]

    guard.resume(limit_usd=2.0)
    assert not guard.is_halted()
    guard.reserve(4, 0.50)  # fits under the new cap of $1.66
    redis_client.flushdb()  # Redis loses everything: the limit, the spend and the halt come back from SQL
    state = guard.status()
    assert (state["limit_usd"], state["spent_usd"], state["halted"]) == (2.0, pytest.approx(0.8), False)
    assert state["reserved_usd"] == 0
    # The tiers start afresh with a new limit: $0.80 of $2.00 is past 25% of it, reported once.
    assert [e.kind for e in events(settings)] == ["warning", "critical", "halt", "limit", "resume", "warning"]
    guard.settle(5, 0.01)
    assert len(events(settings, "warning")) == 2


def test_a_halt_survives_a_redis_flush(guard, settings, redis_client):
    guard.halt(run_id=None, reason="operator said so")
    redis_client.flushdb()
    assert guard.is_halted()
    assert guard.halt(run_id=None, reason="again") is False  # rebuilt as already recorded
    guard.resume()
    redis_client.flushdb()
    assert not guard.is_halted()


def test_rebuild_after_flush_restores_spend_without_counting_anything_twice(guard, settings, redis_client):
    for job_id, cost in ((1, 0.10), (2, 0.05)):
        guard.reserve(job_id, 0.2)
        ledger(settings, job_id, cost, agent="qa", backend="cheap")
        guard.settle(job_id, cost)
    guard.log_manual(agent="qa", operation="judge", cost_usd=0.07)
    guard.reserve(3, 0.2)  # in flight when Redis is lost
    ledger(settings, 3, 0.02)  # its worker wrote the ledger row...
    redis_client.flushdb()
    guard.settle(3, 0.02)  # ...and settles after the flush: already in the rebuilt spend
    guard.settle(1, 0.10)  # a duplicate settle after the flush
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.24)
    assert state["reserved_usd"] == 0


def add_jobs(settings, statuses: dict[int, str]) -> None:
    """A run of the shipped suite with one job per id, in the given statuses (qa tasks, `cheap`)."""
    with session_scope(settings.database_url) as session:
        session.add(Run(id="run1", suite="genesis-custom", status=RunStatus.running))
        session.flush()
        for job_id, status in statuses.items():
            session.add(Job(id=job_id, run_id="run1", agent="qa", task_id=f"qa-{job_id:03d}", backend="cheap",
                            provider="mistral", model="cheap-model", status=status))


def qa_worst_case(settings, job_id: int) -> float:
    from shared.budget import task_worst_case
    from shared.suite import load_suite

    return task_worst_case(settings, load_suite("genesis-custom").get("qa", f"qa-{job_id:03d}"), "cheap", "cheap-model")


def test_rebuild_after_flush_restores_the_reservations_of_running_jobs(guard, settings, redis_client):
    """Redis loses everything mid-run: the calls SQL says are running keep their room."""
    add_jobs(settings, {1: "ok", 2: "running", 3: "running", 4: "queued"})
    ledger(settings, 1, 0.01)
    guard.settle(1, 0.01)
    for job_id in (2, 3):
        guard.reserve(job_id, qa_worst_case(settings, job_id))
    before = guard.status()
    redis_client.flushdb()
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.01)
    assert state["reserved_usd"] == pytest.approx(before["reserved_usd"]) == pytest.approx(
        qa_worst_case(settings, 2) + qa_worst_case(settings, 3), abs=2e-6)
    ledger(settings, 2, 0.0001)
    guard.settle(2, 0.0001)  # a rebuilt reservation settles like the worker's own
    guard.release(3)
    assert guard.status()["reserved_usd"] == 0


def test_a_rebuild_restores_each_running_jobs_paid_call_under_its_holder_and_id(guard, settings, redis_client):
    """Issue #27: what renew_lease records (job.paid_call) comes back after a flush as the holder
    reserved it: a live holder's settle by id drops exactly it, a dead holder's call is ledgered
    as outcome unknown, and a call already in the ledger holds nothing."""
    from shared import lifecycle
    from shared.budget.reconcile import OUTCOME_UNKNOWN

    add_jobs(settings, {1: "running", 2: "running", 3: "running"})
    holders = {1: "w-live/1.aa", 2: "w-dead/2.bb", 3: "w-live/1.aa"}
    for job_id, holder in holders.items():
        with session_scope(settings.database_url) as session:
            session.get(Job, job_id).holder = holder
        job = lifecycle.ClaimedJob(job_id, "run1", "qa", f"qa-{job_id:03d}", "cheap", "mistral", "cheap-model", 0,
                                   "genesis-custom", holder)
        assert lifecycle.renew_lease(job, datetime.now(timezone.utc), f"{job_id}#call{job_id}", 0.05)
        guard.reserve(job_id, 0.05, call_id=f"call{job_id}", holder=f"{holder}|cheap-model")
    ledger(settings, 3, 0.01, operation="inference", call_id="call3")  # job 3's answer is in, its settle was not
    redis_client.flushdb()

    assert guard.status()["reserved_usd"] == pytest.approx(0.10)  # jobs 1 and 2; job 3's call is in the ledger
    assert redis_client.hget(guard.keys.reservation_holders, "2#call2") == b"w-dead/2.bb|cheap-model"
    guard.settle(1, 0.02, "call1")  # the live holder's answer arrives
    done = guard.reconcile({"w-dead/2.bb"})
    assert done.unknown == ["2"] and guard.status()["reserved_usd"] == 0
    with session_scope(settings.database_url) as session:
        unknown = session.exec(select(CostEntry).where(CostEntry.call_id == "call2")).one()
    assert unknown.source.startswith(OUTCOME_UNKNOWN) and unknown.cost_usd == pytest.approx(0.05)
    assert guard.status()["spent_usd"] == pytest.approx(0.01 + 0.02 + 0.05)


def test_reconcile_releases_or_settles_what_sql_says_is_not_running(guard, settings):
    add_jobs(settings, {1: "running", 2: "ok", 3: "queued", 4: "error", 5: "halted"})
    for job_id in (1, 2, 3, 4, 5, 99):  # 99: no such job in SQL
        guard.reserve(job_id, 0.05)
    ledger(settings, 2, 0.03)  # its worker committed the result, then died before settling
    done = guard.reconcile()
    assert (sorted(done.released), done.settled) == (["3", "4", "5", "99"], ["2"])
    state = guard.status()
    assert state["reserved_usd"] == pytest.approx(0.05)  # job 1's call may still be in flight
    assert state["spent_usd"] == pytest.approx(0.03)
    guard.settle(2, 0.03)  # the worker's own settle, had it lived: nothing counted twice
    assert guard.status()["spent_usd"] == pytest.approx(0.03)
    assert guard.reconcile().released == [] and guard.maybe_reconcile() is not None
    assert guard.maybe_reconcile() is None  # at most once per interval across the fleet


def test_a_release_by_a_stale_reservation_id_leaves_a_newer_reservation(guard, redis_client):
    seen = guard.reserve(1, 0.05)
    assert redis_client.hexists(guard.keys.reservations, f"1#{seen}")
    guard.release(1)
    guard.reserve(1, 0.07)  # a new delivery of the same job reserved after the sweep looked
    assert guard.release(1, seen) is False
    assert guard.status()["reserved_usd"] == pytest.approx(0.07)


def test_a_call_costing_more_than_it_reserved_is_settled_at_its_real_cost(guard, settings, caplog):
    guard.reserve(1, 0.10)
    guard.settle(1, 0.40)
    state = guard.status()
    assert (state["spent_usd"], state["reserved_usd"]) == (pytest.approx(0.40), 0)
    assert (state["overruns"], state["overrun_usd"]) == (1, pytest.approx(0.30))
    assert any("more than the $0.100000 it reserved" in m for m in caplog.messages)
    with pytest.raises(BudgetRefused):
        guard.reserve(2, 0.45)  # the next reservation sees the real spend: 0.40 + 0.45 > 0.83


def test_waiting_never_halts_and_the_halt_comes_once_the_ledger_is_full(guard):
    for job_id in range(8):  # 8 calls in flight hold 0.80
        guard.reserve(job_id, 0.10)
    for _ in range(3):
        with pytest.raises(BudgetWait):
            guard.reserve(100, 0.10)
    assert guard.status()["waits"] == 3 and not guard.is_halted()
    for job_id in range(8):
        guard.settle(job_id, 0.10)
    with pytest.raises(BudgetRefused):
        guard.reserve(100, 0.10)  # 0.80 settled + 0.10 > 0.83
    state = guard.status()
    assert state["halted"] and state["level"] == "emergency"
    assert state["spent_usd"] >= 0.83 - 0.10


def test_a_jobs_judge_call_settles_apart_from_its_answer_and_survives_a_rebuild(guard, settings, redis_client):
    from worker.judge import budget_key

    guard.reserve(1, 0.2)
    ledger(settings, 1, 0.10, operation="inference")
    guard.settle(1, 0.10)
    guard.reserve(budget_key(1), 0.3)  # the judge of the same job, reserved under its own key
    ledger(settings, 1, 0.05, operation="judge")
    redis_client.flushdb()  # Redis lost between the judge's ledger row and its settle
    guard.settle(budget_key(1), 0.05)
    guard.settle(1, 0.10)
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.15) and state["reserved_usd"] == 0


def test_concurrent_rebuilds_install_one_consistent_state(guard, settings, redis_client):
    for job_id in range(5):
        ledger(settings, job_id, 0.01)
    guards = [BudgetGuard(redis.Redis.from_url(REDIS_URL), settings) for _ in range(8)]
    threads = [threading.Thread(target=g.reserve, args=(100 + i, 0.01)) for i, g in enumerate(guards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.05)
    assert state["reserved_usd"] == pytest.approx(0.08)  # all 8 reservations kept, none wiped by a rebuild


def test_manual_entries_are_validated_and_counted(guard, settings):
    with pytest.raises(ValueError, match="cost >= 0"):
        guard.log_manual(agent="qa", operation="inference", cost_usd=-1)
    with pytest.raises(ValueError, match="one-word operation"):
        guard.log_manual(agent="qa", operation="", cost_usd=1)
    entry = guard.log_manual(agent="qa", operation="inference", cost_usd=0.5, backend="cheap")
    with session_scope(settings.database_url) as session:
        stored = session.get(CostEntry, entry.id)
    assert (stored.source, stored.operation, stored.agent, stored.cost_usd) == ("manual", "inference", "qa", 0.5)
    assert guard.status()["spent_usd"] == 0.5


def test_a_manual_entry_past_the_cap_halts_new_reservations(guard):
    guard.log_manual(agent=None, operation="manual", cost_usd=0.9)
    assert guard.is_halted()
    assert guard.status()["halt_reason"] == "settled spend passed the emergency threshold"
    with pytest.raises(BudgetRefused):
        guard.reserve(1, 0.01)


def test_resume_refuses_a_non_positive_limit(guard):
    with pytest.raises(ValueError):
        guard.resume(limit_usd=0)


# --- pricing and the dry-run estimate ---------------------------------------------------------


def test_call_and_worst_case_costs(settings):
    assert call_cost(settings, "pricey-model", 1_000, 500) == pytest.approx((1_000 * 10 + 500 * 30) / 1e6)
    assert worst_case_cost(settings, "cheap-model", 100, 256) == pytest.approx((100 * 1 + 256 * 2) / 1e6)
    with pytest.raises(ConfigError, match="no-price-model"):
        call_cost(settings, "no-price-model", 1, 1)


def fake_suite(tasks_per_agent: int) -> SimpleNamespace:
    tasks = [SimpleNamespace(prompt="x" * 30 * (i + 1), system="be brief", max_tokens=200) for i in range(tasks_per_agent)]
    return SimpleNamespace(tasks_for=lambda agent, limit: tasks[:limit] if limit else tasks)


def test_estimate_run_cost_is_the_worst_case_per_backend(settings, guard):
    suite = fake_suite(3)
    estimate = estimate_run_cost(settings, suite, ["qa", "legal"], ["cheap", "capped"], 2, guard=guard)
    inputs = 2 * sum(estimate_prompt_tokens(t.prompt, t.system) for t in suite.tasks_for("qa", 2))
    assert estimate["jobs"] == 8
    assert estimate["by_backend"]["cheap"] == {
        "jobs": 4, "input_tokens": inputs, "output_tokens": 4 * 200,
        "cost_usd": pytest.approx((inputs * 1 + 800 * 2) / 1e6),
    }
    assert estimate["by_backend"]["capped"]["output_tokens"] == 4 * 100  # the backend's max_tokens caps
    assert estimate["estimated_cost_usd"] == pytest.approx(
        estimate["by_backend"]["cheap"]["cost_usd"] + estimate["by_backend"]["capped"]["cost_usd"]
    )
    assert estimate["remaining_usd"] == pytest.approx(0.83) and estimate["within_budget"] is True

    guard.log_manual(agent=None, operation="manual", cost_usd=0.8299)
    tight = estimate_run_cost(settings, suite, ["qa", "legal"], ["cheap", "capped"], None, guard=guard)
    assert tight["within_budget"] is False


def test_estimate_refuses_an_unpriced_model(settings):
    with pytest.raises(ConfigError, match="no price"):
        estimate_run_cost(settings, fake_suite(1), ["qa"], ["unpriced"], None)


# --- the Celery side of a halt ------------------------------------------------------------------

ALL_QUEUES = (*PROVIDER_QUEUES, REPORTS_QUEUE)


def make_celery_app() -> Celery:
    app = Celery("budget-halt-test", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.task_queues = [Queue(name) for name in ALL_QUEUES]
    app.conf.worker_hijack_root_logger = False
    app.steps["consumer"].add(HaltControlStep)
    return app


halt_test_app = make_celery_app()  # what the worker subprocess below runs (-A test_budget:halt_test_app)


def consumed_queues(app: Celery, node_prefix: str) -> set[str] | None:
    replies = app.control.inspect(timeout=0.5).active_queues() or {}
    for node, queues in replies.items():
        if node.startswith(node_prefix):
            return {q["name"] for q in queues}
    return None


# Stop and restore against real worker processes: tests/test_halt_control.py.


@pytest.mark.processes
def test_a_worker_started_while_halted_does_not_consume_provider_queues(guard, tmp_path):
    guard.halt(run_id=None, reason="test")
    tests_dir = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), str(tests_dir.parent)])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "test_budget:halt_test_app", "worker", "-P", "solo",
         "-n", "haltedstart@local", "-Q", ",".join(ALL_QUEUES), "--without-mingle", "--without-gossip",
         "--loglevel", "WARNING"],
        cwd=tests_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        queues = wait_for(lambda: consumed_queues(halt_test_app, "haltedstart@"), timeout=30, interval=0.2,
                          what="the halted worker's queues")
        assert queues == {"reports"}
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=15)
    assert "budget is halted" in output


def test_counters_left_by_another_ledger_are_rebuilt_from_this_one(settings, redis_client, tmp_path, monkeypatch):
    """A reused Redis db (or a deleted genesis.db) must not cap this ledger with other spend."""
    other = BudgetGuard(redis_client, settings)
    other.reserve(1, 0.10)
    other.settle(1, 0.10)
    assert other.status()["spent_usd"] == pytest.approx(0.10)

    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/another.db")
    get_settings.cache_clear()
    fresh = load_settings()
    migrate(fresh.database_url)
    ours = BudgetGuard(redis_client, fresh)
    assert ours.status()["spent_usd"] == 0.0
    ours.reserve(1, 0.02)  # job 1 of this ledger is not "already settled" by the other one
    ours.settle(1, 0.02)
    assert ours.status()["spent_usd"] == pytest.approx(0.02)


def _unknown_then_real(guard, *, count_the_worst_case: bool) -> list:
    """A call ledgered as outcome unknown at its worst case ($0.30; counted, or its writer died
    between SQL and Redis), then its real outcome ($0.02) arrives, unattached."""
    call_id = guard.reserve(9, 0.30, holder="dead@host|gpt-4o-mini")
    unknown = CostEntry(operation="inference", cost_usd=0.30, call_id=call_id, source="outcome unknown (job 9)")
    if count_the_worst_case:
        guard.record_entry(unknown, key=9)
    else:
        with session_scope(guard.database_url) as session:
            session.add(unknown)
    guard.record_entry(CostEntry(operation="inference", cost_usd=0.02, call_id=call_id, input_tokens=40,
                                 output_tokens=9, source="api (answered after its deadline, job 9)"), key=9)
    with session_scope(guard.database_url) as session:
        return session.exec(select(CostEntry)).all()


@pytest.mark.parametrize("count_the_worst_case", [True, False])
def test_a_real_cost_replaces_its_calls_outcome_unknown_entry_and_spent_follows(guard, count_the_worst_case):
    [entry] = _unknown_then_real(guard, count_the_worst_case=count_the_worst_case)
    assert (entry.cost_usd, entry.source) == (0.02, "api (answered after its deadline, job 9)")
    status = guard.status()
    assert (status["spent_usd"], status["reserved_usd"]) == (pytest.approx(0.02), 0)
    guard.settle(9, 0.02, entry.call_id, 0.30)  # the same correction again (a retried settle): once
    assert guard.status()["spent_usd"] == pytest.approx(0.02)
    guard.redis.delete(*guard.keys.all())
    assert guard.status()["spent_usd"] == pytest.approx(0.02)  # a rebuild from SQL agrees


def test_an_outcome_unknown_entry_for_a_call_already_ledgered_is_that_entry(guard):
    """Reconcile racing the live answer: the real row came first; the worst case is not added."""
    call_id = guard.reserve(9, 0.30, holder="dead@host|gpt-4o-mini")
    guard.record_entry(CostEntry(operation="inference", cost_usd=0.02, call_id=call_id, source="api"), key=9)
    kept = guard.record_entry(CostEntry(operation="inference", cost_usd=0.30, call_id=call_id,
                                        source="outcome unknown (job 9)"), key=9)
    assert (kept.cost_usd, kept.source) == (0.02, "api")
    assert guard.status()["spent_usd"] == pytest.approx(0.02)


def test_a_reservation_names_the_key_its_call_was_given_and_reconcile_still_reads_its_model(guard, redis_client):
    from shared.budget.reconcile import holder_parts

    guard.reserve(7, 0.05, call_id="c7", holder="w/1.aa|cheap-model")
    guard.name_key(7, "c7", "OPENAI_API_KEY_B")  # the limiter chose that variable's pool after the reservation
    assert redis_client.hget(guard.keys.reservation_holders, "7#c7") == b"w/1.aa|cheap-model|OPENAI_API_KEY_B"
    assert holder_parts("w/1.aa|cheap-model|OPENAI_API_KEY_B") == ("w/1.aa", "cheap-model")
    guard.settle(7, 0.01, "c7")
    guard.name_key(7, "c7", "OPENAI_API_KEY")  # settled: the reservation stays gone
    assert redis_client.hget(guard.keys.reservation_holders, "7#c7") is None
