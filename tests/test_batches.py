"""Backend mode "batch" end to end (design §11): real workers, the real SDKs, the simulator's
batch APIs. Same answers as a realtime run of the same seed, at the batch price; halts, dead
workers, a flushed Redis, expired batches and failed requests handled per job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from tests.support.env import ROOT
from tests.support.http_server import free_ports, get_json, http_status
from tests.support.runs import all_batched, batch_rows, producer, run_jobs, submit, wait_until_reported
from tests.support.waiting import wait_for

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
    estimate = json.loads(producer("submit", "--all-agents", "--limit", "3", "--dry-run", "--json").stdout)
    realtime = submit("--all-agents", "--limit", "3")
    assert wait_until_reported(realtime)["status"] == "completed"
    served_realtime = simulator.stats()["requests_total"]
    realtime_entries, realtime_cost = ledger(realtime)
    realtime_worker.stop()

    batch_mode(monkeypatch, *BACKENDS)  # workers started from here on take it from the environment
    batch_estimate = json.loads(producer("submit", "--all-agents", "--limit", "3", "--dry-run", "--json").stdout)
    assert batch_estimate["estimated_cost_usd"] == pytest.approx(estimate["estimated_cost_usd"] * 0.5, abs=1e-5)
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

    data = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert data["simulated"] and all(j.simulated for j in run_jobs(batched))  # the simulator's header, as realtime
    assert {b["mode"] for b in data["backends"]} == {"batch"}
    assert all(b["latency_p50_ms"] is None for b in data["backends"])  # a batch's turnaround is no call latency
    assert data["costs"]["batch_saved_usd"] == pytest.approx(cost, rel=1e-6)  # at half price: saved as much
    status = json.loads(producer("status", batched, "--json").stdout)
    assert {b["state"] for b in status["batches"]} == {"ended"}
    assert sum(b["jobs"].get("ok", 0) for b in status["batches"]) == 60


def inference_entries(run_id: str) -> dict[int | None, int]:
    """Ledger entries of a run's inference by job (None: paid but not attached to a job)."""
    from collections import Counter

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        rows = session.exec(select(CostEntry.job_id).where(CostEntry.run_id == run_id,
                                                           CostEntry.operation == "inference")).all()
    return dict(Counter(rows))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_mixed_run_with_failed_requests_retries_them_in_new_batches(monkeypatch, batch_knobs, start_worker,
                                                                     simulator):
    """openai and anthropic in batch mode, mistral realtime; 30% of batch requests fail."""
    simulator.update(batch_delay_s=0.5, batch_error_rate=0.3)
    batch_mode(monkeypatch, "openai", "anthropic")
    start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--limit", "4")
    snap = wait_until_reported(run_id, timeout=180)
    assert snap["status"] == "completed"

    jobs = run_jobs(run_id)
    batch_jobs = [j for j in jobs if j.backend in ("openai", "anthropic")]
    assert {j.status for j in jobs if j.backend.startswith("mistral")} == {"ok"}
    assert all(j.provider_batch_id is None for j in jobs if j.backend.startswith("mistral"))
    failed = [j for j in batch_jobs if j.status == "error"]
    assert all(j.error_type == "BatchErrored" and "Injected batch request error" in j.error_message for j in failed)
    assert all(j.attempts == 3 for j in failed)  # [batch] max_attempts
    assert any(j.attempts > 1 and j.status == "ok" for j in batch_jobs)  # a failed request answered in a later batch

    stats = simulator.stats()
    entries = inference_entries(run_id)
    assert None not in entries and set(entries.values()) == {1}  # nobody paid twice
    ok = [j for j in jobs if j.status == "ok"]
    assert len(entries) == len(ok)
    assert stats["batch"]["succeeded"] == len([j for j in batch_jobs if j.status == "ok"])  # ledger = served
    assert stats["by_status"].get("200", 0) == 40  # the realtime backends' jobs, called once each
    assert stats["batch"]["errored"] >= len(failed) * 3
    assert len(batch_rows(run_id)) >= 4  # both providers, retried requests in new batches


@pytest.mark.parametrize("fault", ["expire", "fail"])
def test_an_expired_or_failed_batch_sends_its_jobs_back_then_ends_them_with_the_reason(
        fault, monkeypatch, batch_knobs, start_worker, simulator):
    """Every batch expires (or fails outright, as OpenAI's `failed` and Mistral's `FAILED`): its
    jobs go back for a new batch, and after [batch] max_attempts end `error` with the reason."""
    monkeypatch.setenv("GENESIS_BATCH__MAX_ATTEMPTS", "2")
    simulator.update(batch_delay_s=0.3, **{f"batch_{fault}_rate": 1.0})
    batch_mode(monkeypatch, "openai", "mistral-base")
    start_worker("w1", concurrency=8)
    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--backend", "mistral-base",
                    "--limit", "3")
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["by_status"]["error"] == 12

    ended, error_type = {"expire": ("expired", "BatchExpired"), "fail": ("failed", "BatchFailed")}[fault]
    for job in run_jobs(run_id):
        assert job.error_type == error_type and job.attempts == 2
        assert "after 2 attempt(s)" in job.error_message and "batch" in job.error_message.lower()
        if fault == "fail":  # the provider's reason, from the batch's errors
            assert "Injected batch failure from the simulator." in job.error_message
    assert ledger(run_id) == (0, 0.0)
    states = [b.state for b in batch_rows()]
    # two backends, two rounds; on a loaded machine an enrolment that waited ~1 s for the opener opens its own
    assert states.count(ended) == len(states) >= 4
    stats = simulator.stats()["batch"]
    assert stats[ended] == stats["requests"] == 24 and stats["succeeded"] == 0
    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert sum(b["errors"] for b in report["backends"]) == 12


@pytest.mark.parametrize("fault", ["kill", "flushdb"])
def test_open_batches_survive_a_dead_worker_or_a_flushed_redis(fault, monkeypatch, batch_knobs, fast_recovery,
                                                              start_worker, simulator, redis_url):
    """Polling resumes from SQL; no batch is submitted twice, no answer paid twice."""
    import redis

    simulator.update(batch_delay_s=4.0)
    batch_mode(monkeypatch, *BACKENDS)
    first = start_worker("w1", concurrency=8)
    if fault == "kill":
        start_worker("w2", concurrency=8)
    run_id = submit("--all-agents", "--limit", "2")
    wait_for(lambda: all_batched(run_id, 40), timeout=30, interval=0.2, what="every batch submitted")
    if fault == "kill":
        first.kill()
    else:
        redis.Redis.from_url(redis_url).flushdb()
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 40

    stats = simulator.stats()["batch"]
    assert stats["requests"] == stats["succeeded"] == 40  # nothing submitted twice
    entries = inference_entries(run_id)
    assert len(entries) == 40 and set(entries.values()) == {1} and None not in entries
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    spent = BudgetGuard.from_settings(get_settings()).status()["spent_usd"]
    assert spent == pytest.approx(ledger(run_id)[1], abs=1e-5)  # the counters agree with the ledger
    assert all(b.polls > 0 and b.state == "ended" for b in batch_rows(run_id))


def test_a_submitter_killed_before_it_learns_its_batch_ids_leaves_them_adopted_not_sent_again(
        monkeypatch, batch_knobs, fast_recovery, start_worker, simulator, tmp_path):
    """The provider holds every batch, but their creations are answered only after the only
    worker is SIGKILLed, so no batch id reaches SQL. A new worker's sweep finds each at its
    provider (OpenAI and Mistral by our id in the metadata, Anthropic by creation time, size and,
    once ended, its results) and polls it: nothing is submitted twice, nothing paid twice."""
    simulator.update(batch_delay_s=1.0, batch_create_delay_s=4.0)
    batch_mode(monkeypatch, *BACKENDS)
    first = start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--limit", "2")

    def all_created():
        rows = batch_rows(run_id)
        created = sum(simulator.stats()["batch"]["batches"].values())
        return rows if created == len(rows) == 8 and all(b.state == "submitting" for b in rows) else None

    wait_for(all_created, timeout=30, interval=0.1, what="every batch created, none answered yet")
    first.kill()
    start_worker("w2", concurrency=8)
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 40

    stats = simulator.stats()["batch"]
    assert stats["batches"] == {"openai": 1, "anthropic": 1, "mistral": 6}  # none sent again (a fine-tune each)
    assert stats["requests"] == stats["succeeded"] == 40
    entries = inference_entries(run_id)
    assert len(entries) == 40 and set(entries.values()) == {1} and None not in entries
    rows = batch_rows(run_id)
    assert all(b.state == "ended" and b.attempts == 1 and b.provider_batch_id for b in rows)
    adopted = (tmp_path / "w2.log").read_text().count(": adopted")
    assert adopted == 8, f"{adopted} adoptions logged by w2"
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    status = BudgetGuard.from_settings(get_settings()).status()
    assert status["reserved_usd"] == 0 and status["spent_usd"] == pytest.approx(ledger(run_id)[1], abs=1e-5)


def test_a_lost_submission_is_told_apart_at_its_provider(simulator, monkeypatch):
    """The finder the sweep asks (no worker here, the real SDKs against the simulator): by our id
    in the metadata (OpenAI, Mistral); for Anthropic, whose batches carry none, a batch of its
    size created since, once it has ended and its results name our requests; never by size
    alone while it runs (two alike, or another client's, would be taken for each other)."""
    from datetime import datetime, timedelta, timezone

    from shared.providers import PROVIDERS, ChatRequest
    from shared.providers.batch_api import BATCH_APIS, LostSubmission, Undecided, custom_id
    from shared.providers.clients import client_for

    for provider, variable, url in (("openai", "OPENAI_BASE_URL", f"{simulator.url}/v1"),
                                    ("anthropic", "ANTHROPIC_BASE_URL", simulator.url),
                                    ("mistral", "MISTRAL_BASE_URL", simulator.url)):
        monkeypatch.setenv(variable, url)
        monkeypatch.setenv(PROVIDERS[provider].key_env, "sim-key")
    simulator.update(batch_delay_s=3.0)

    def lines(model: str, batch: int, *jobs: int) -> list:
        return [(custom_id(batch, job), ChatRequest(model, f"question {job}", None, 16, 10.0)) for job in jobs]

    def lost(batch: int, *jobs: int, started_at=None, known=()) -> LostSubmission:
        return LostSubmission({"genesis_batch": str(batch)}, frozenset(custom_id(batch, j) for j in jobs),
                              started_at or datetime.now(timezone.utc) - timedelta(seconds=2), frozenset(known))

    for provider, model in (("openai", "gpt-5-mini"), ("mistral", "open-mistral-7b")):
        api, cli = BATCH_APIS[provider], client_for(PROVIDERS[provider], 10.0)
        ours = api.submit(cli, model, lines(model, 7, 1, 2), {"genesis_batch": "7"})
        api.submit(cli, model, lines(model, 8, 3, 4), {"genesis_batch": "8"})
        assert api.find(cli, lost(7, 1, 2)) == ours
        assert api.find(cli, lost(9, 5)) is None  # never reached the provider
        assert api.find(cli, lost(7, 1, 2, started_at=datetime.now(timezone.utc) + timedelta(minutes=10))) is None

    api, cli = BATCH_APIS["anthropic"], client_for(PROVIDERS["anthropic"], 10.0)
    model = "claude-haiku-4-5"
    assert api.find(cli, lost(1, 1, 2)) is None  # nothing created since
    first = api.submit(cli, model, lines(model, 1, 1, 2), {})
    second = api.submit(cli, model, lines(model, 2, 3, 4), {})
    with pytest.raises(Undecided):  # batches of its size, running: adopting one could be the wrong one
        api.find(cli, lost(1, 1, 2))
    assert api.find(cli, lost(1, 1, 2, 9)) is None  # none of that size
    assert api.find(cli, lost(1, 1, 2, started_at=datetime.now(timezone.utc) + timedelta(minutes=10))) is None
    time.sleep(3.2)  # both ended: their results say which is which
    assert api.find(cli, lost(1, 1, 2)) == first and api.find(cli, lost(2, 3, 4)) == second
    assert api.find(cli, lost(2, 3, 4, known=[second])) is None  # the other one is not ours
    assert api.find(cli, lost(3, 7, 8)) is None


def test_flower_shows_each_open_batch_by_its_provider_id_and_state(monkeypatch, batch_knobs, start_worker, simulator,
                                                                    genesis, tmp_path):
    """Flower, with its basic auth, as the README starts it: the poll tasks' results name each
    open batch at its provider and what the provider says of it."""
    simulator.update(batch_delay_s=6.0)
    batch_mode(monkeypatch, "openai", "anthropic")
    start_worker("w1", concurrency=8)
    (port,) = free_ports(1)
    flower_url, auth = f"http://127.0.0.1:{port}", ("admin", "pw")
    flower = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "worker.app", "flower", "--address=127.0.0.1",
         f"--port={port}"], cwd=ROOT, env={**os.environ, **genesis, "FLOWER_BASIC_AUTH": ":".join(auth)},
        stdout=open(tmp_path / "flower.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: http_status(f"{flower_url}/", auth) == 200, timeout=60, interval=0.5, what="Flower")
        run_id = submit("--all-agents", "--backend", "openai", "--backend", "anthropic", "--limit", "2")
        batches = wait_for(lambda: all_batched(run_id, 20), timeout=30, interval=0.2, what="both batches submitted")

        def shown() -> str | None:
            tasks = get_json(f"{flower_url}/api/tasks?taskname=genesis.poll_batch", auth)
            said = "\n".join(str(task.get("result")) for task in tasks.values())
            return said if all(f"{b.provider} {b.provider_batch_id} (batch {b.id}, 10 jobs): in_progress" in said
                               for b in batches) else None

        wait_for(shown, timeout=30, interval=0.5, what="Flower to show both open batches")
        assert http_status(f"{flower_url}/api/tasks", ("admin", "wrong")) == 401
        snap = wait_until_reported(run_id, timeout=60)
        assert snap["status"] == "completed" and snap["by_status"]["ok"] == 20
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(20)


def test_a_halt_cancels_open_batches_and_pays_nothing_past_the_threshold(monkeypatch, batch_knobs, start_worker,
                                                                        simulator):
    """An openai batch is submitted (its worst case reserved); then a job whose worst case alone
    exceeds what the settled ledger leaves is refused, which halts. The halt cancels the openai
    batch at the provider: its answers so far are ledgered, nothing after; its other jobs, and
    the refused one, are halted; the spend stays under the emergency threshold."""
    from shared.budget import BudgetGuard, task_worst_case
    from shared.config import get_settings
    from shared.suite import load_suite

    simulator.update(batch_delay_s=10.0)
    batch_mode(monkeypatch, "openai", "anthropic")
    # each openai request's allowance as small as the tasks', so one anthropic job outweighs the batch
    monkeypatch.setenv("GENESIS_BACKENDS__OPENAI__PARAMS__MAX_OUTPUT_TOKENS", "16")
    get_settings.cache_clear()
    settings = get_settings()
    suite = load_suite(settings.suite)
    batch_worst = sum(task_worst_case(settings, t, "openai", "gpt-5-mini")
                      for a in settings.agents.names for t in suite.tasks_for(a, 1))
    agent, costly = max(((a, task_worst_case(settings, suite.tasks_for(a, 1)[0], "anthropic",
                                             settings.model_for("anthropic", a))) for a in settings.agents.names),
                        key=lambda pair: pair[1])
    assert costly > batch_worst  # fits the budget below on its own only if nothing else were reserved
    limit = round((batch_worst + costly) / 2 / settings.budget.emergency, 6)
    monkeypatch.setenv("GENESIS_BUDGET__LIMIT_USD", str(limit))
    get_settings.cache_clear()
    start_worker("w1", concurrency=4)

    first = submit("--all-agents", "--backend", "openai", "--limit", "1")
    wait_for(lambda: all_batched(first, 5), timeout=30, interval=0.2, what="the openai batch submitted")
    time.sleep(3)  # its first request is answered (one every 2 s) before the halt
    second = submit("--agent", agent, "--backend", "anthropic", "--limit", "1")
    wait_for(lambda: all(b.state == "cancelled" for b in batch_rows(first)), timeout=40, interval=0.3,
             what="the halt to cancel the openai batch")
    snaps = [wait_until_reported(run_id, timeout=60) for run_id in (first, second)]
    assert [s["status"] for s in snaps] == ["halted", "halted"]

    assert {j.status for j in run_jobs(second)} == {"halted"}
    assert [b.state for b in batch_rows(second)] == ["halted"]
    jobs = run_jobs(first)
    ok = [j for j in jobs if j.status == "ok"]
    halted = [j for j in jobs if j.status == "halted"]
    assert len(ok) + len(halted) == 5 and ok and halted  # answered before the cancel: paid; the rest halted
    assert all("cancelled by the budget halt" in j.error_message for j in halted)
    stats = simulator.stats()["batch"]
    assert stats["batches"] == {"openai": 1} and stats["cancels"] == 1
    assert stats["succeeded"] == len(ok) and inference_entries(first) == {j.id: 1 for j in ok}  # ledger = served
    status = BudgetGuard.from_settings(get_settings()).status()
    assert status["halted"] and status["reserved_usd"] == 0
    entries, spent = ledger(first)  # the counters hold each entry in whole micro-dollars
    assert spent == pytest.approx(status["spent_usd"], abs=max(1, entries) * 0.5e-6)
    assert status["spent_usd"] <= limit * settings.budget.emergency


def test_judged_answers_from_a_batch_are_graded_through_the_realtime_judge(monkeypatch, batch_knobs, start_worker,
                                                                          simulator):
    """The answers come through the batch API at the batch price; each is then graded once by
    the [judge] backend as a realtime call (ledgered `judge`), as a realtime job's would be."""
    simulator.update(batch_delay_s=0.5)
    batch_mode(monkeypatch, "mistral-ft", "mistral-base")
    start_worker("w1", concurrency=8)
    run_id = submit("--suite", "genesis-judge", "--agent", "content", "--agent", "legal",
                    "--backend", "mistral-ft", "--backend", "mistral-base", "--limit", "2")
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 8

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        entries = session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all()
    jobs = run_jobs(run_id)
    for operation in ("inference", "judge"):
        assert sorted(e.job_id for e in entries if e.operation == operation) == [j.id for j in jobs]
    assert all(e.source.endswith("(batch)") for e in entries if e.operation == "inference")
    assert all(j.score is not None and j.scorer_detail.startswith("judge ") for j in jobs)
    stats = simulator.stats()
    assert stats["batch"]["succeeded"] == 8 and stats["by_model"] == {"gpt-5-mini": 8}  # the judge, realtime


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_outage_while_a_batch_s_results_are_written_journals_them_and_pays_each_once(
        monkeypatch, batch_knobs, fast_recovery, start_worker, simulator, database_url, redis_url):
    """PostgreSQL refuses connections (and drops open ones) for 4 s, starting once the first of
    a 100-job batch's answers is ledgered: write_results meets DATABASE_AWAY for the others,
    which BatchMoney.record journals to Redis and settles; the batch's next SQL step raises and
    poll_batch polls again. Once the database is back, the batch's results are read again and
    the sweep replays the journal, and each answer is ledgered once. The test fails unless the
    outage began mid-write (some answers ledgered before it, some journaled during it).
    Measured over 16 runs, 4 of them beside two CPU-bound processes: 84..96 of the 100 answers
    journaled, 14..18 s a run."""
    import threading

    import redis

    from shared.budget import BudgetGuard
    from shared.budget.money import to_usd
    from shared.budget.recorded import ledger_members
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.journal import JOURNAL_KEY
    from tests.support.postgres import postgres_outage

    monkeypatch.setenv("GENESIS_BATCH__MAX_JOBS", "100")  # one batch: a long write to land in
    monkeypatch.setenv("GENESIS_BATCH__MAX_WAIT_S", "5")  # sent when full, not split by its age
    simulator.update(batch_delay_s=1.0)
    batch_mode(monkeypatch, "openai")
    worker = start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--backend", "openai", "--limit", "20")  # 100 jobs
    wait_for(lambda: ledger(run_id)[0], timeout=60, interval=0.005, what="the batch's first answer ledgered")

    client = redis.Redis.from_url(redis_url)
    outage = threading.Thread(target=postgres_outage, args=(database_url, 4.0))
    outage.start()
    journaled = 0
    while outage.is_alive():  # journaled answers stay in Redis until the database is back
        journaled = max(journaled, client.hlen(JOURNAL_KEY))
        time.sleep(0.05)
    outage.join()
    assert journaled > 0  # the outage began before the batch's last answer was written
    assert "poll failed" in worker.log_path.read_text()  # poll_batch caught DATABASE_AWAY and polled again

    snap = wait_until_reported(run_id, timeout=60)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 100
    entries = inference_entries(run_id)
    assert None not in entries and len(entries) == 100 and set(entries.values()) == {1}  # each answer once
    stats = simulator.stats()["batch"]
    assert stats["requests"] == stats["succeeded"] == len(entries)  # nothing sent twice; the ledger is what was billed
    rows = batch_rows(run_id)
    assert [b.state for b in rows] == ["ended"] * len(rows)
    # the sweep replays the journal (answers the batch's second read may have written already): it ends empty
    wait_for(lambda: client.hlen(JOURNAL_KEY) == 0, timeout=10, what="the journal replayed")
    budget = BudgetGuard.from_settings(get_settings()).status()
    with session_scope() as session:
        ledgered_micro, _ = ledger_members(session)  # the (fresh) ledger summed as the guard adds it, in micro-$
    assert budget["spent_usd"] == to_usd(ledgered_micro) and budget["reserved_usd"] == 0
