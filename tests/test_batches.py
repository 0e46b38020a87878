"""Backend mode "batch" end to end (design §11): real workers, the real SDKs, the simulator's
batch APIs. Same answers as a realtime run of the same seed, at the batch price; halts, expired
batches and failed requests handled per job (lost workers, submissions and results:
tests/test_batch_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from tests.support.env import BATCH_BACKENDS as BACKENDS
from tests.support.env import ROOT, batch_mode
from tests.support.http_server import free_ports, get_json, http_status
from tests.support.runs import (all_batched, batch_rows, inference_entries, ledger_rows, producer, run_jobs,
                                run_ledger, submit, wait_until_reported)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def answers(run_id: str) -> dict:
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        rows = session.exec(select(Job).where(Job.run_id == run_id)).all()
    return {(j.agent, j.task_id, j.backend): (j.status, j.output, j.score, j.input_tokens, j.output_tokens)
            for j in rows}


def test_a_batch_run_answers_as_realtime_at_half_the_ledgered_cost(monkeypatch, batch_knobs, start_worker, simulator):
    # Greedy answers throughout: the Anthropic adapter sends no temperature (its default, 1.0, samples).
    simulator.update(batch_delay_s=1.0, sampling="never")
    realtime_worker = start_worker("w1", concurrency=8)
    estimate = json.loads(producer("submit", "--all-agents", "--limit", "3", "--dry-run", "--json").stdout)
    realtime = submit("--all-agents", "--limit", "3")
    assert wait_until_reported(realtime)["status"] == "completed"
    served_realtime = simulator.stats()["requests_total"]
    realtime_entries, realtime_cost = run_ledger(realtime)
    realtime_worker.stop()

    batch_mode(monkeypatch, *BACKENDS)  # workers started from here on take it from the environment
    batch_estimate = json.loads(producer("submit", "--all-agents", "--limit", "3", "--dry-run", "--json").stdout)
    assert batch_estimate["estimated_cost_usd"] == pytest.approx(estimate["estimated_cost_usd"] * 0.5, abs=1e-5)
    start_worker("w2", concurrency=8)
    batched = submit("--all-agents", "--limit", "3")
    snap = wait_until_reported(batched, timeout=180)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 60

    assert answers(batched) == answers(realtime)  # same outputs, scores and tokens
    entries, cost = run_ledger(batched)
    assert entries == realtime_entries == 60
    assert cost == pytest.approx(realtime_cost * 0.5, rel=1e-6)
    keys = {(row.backend, row.key_env) for row in ledger_rows(batched)}  # each batch's variable, as realtime
    assert keys == {(row.backend, row.key_env) for row in ledger_rows(realtime)} and None not in dict(keys).values()
    assert {(j.backend, j.key_env) for j in run_jobs(batched)} == keys
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
    assert {(k["backend"], k["key_env"]) for k in data["costs"]["keys"]} == keys  # the per-key cost table
    status = json.loads(producer("status", batched, "--json").stdout)
    assert {b["state"] for b in status["batches"]} == {"ended"}
    assert sum(b["jobs"].get("ok", 0) for b in status["batches"]) == 60


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
    assert run_ledger(run_id) == (0, 0.0)
    states = [b.state for b in batch_rows()]
    # two backends, two rounds; on a loaded machine an enrolment that waited ~1 s for the opener opens its own
    assert states.count(ended) == len(states) >= 4
    stats = simulator.stats()["batch"]
    assert stats[ended] == stats["requests"] == 24 and stats["succeeded"] == 0
    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert sum(b["errors"] for b in report["backends"]) == 12


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
    entries, spent = run_ledger(first)  # the counters hold each entry in whole micro-dollars
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
