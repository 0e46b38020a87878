"""`submit --reuse` end to end, with real workers, Redis, the simulator and the SDKs: an
identical run pays for nothing, a run with new fine-tuned ids pays only for those, two runs at
once pay once per distinct request, and the dry run counts what reuse saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.env import ROOT
from tests.support.runs import ledger_rows, producer, run_jobs, submit, wait_until_reported

SELECTION = ["--agent", "qa", "--agent", "support", "--limit", "3"]  # × 4 backends = 24 jobs
JOBS = 2 * 3 * 4


def slot(job) -> tuple:
    return job.agent, job.task_id, job.backend


def test_an_identical_run_with_reuse_makes_no_call_costs_nothing_and_names_its_source(start_worker, simulator):
    start_worker("w1", concurrency=8)
    first = submit(*SELECTION)
    assert wait_until_reported(first)["by_status"]["ok"] == JOBS
    assert simulator.stats()["requests_total"] == JOBS

    dry = json.loads(producer("submit", *SELECTION, "--reuse", "--dry-run", "--json").stdout)
    paid = sum(e.cost_usd for e in ledger_rows(first))
    assert dry["reuse"]["calls_saved"] == JOBS and dry["estimated_cost_usd"] == 0.0
    assert dry["reuse"]["paid_before_usd"] == pytest.approx(paid, abs=1e-5) and dry["reuse"]["saved_usd"] >= paid

    simulator.reset()
    second = submit(*SELECTION, "--reuse")
    snap = wait_until_reported(second)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == JOBS
    assert simulator.stats()["requests_total"] == 0
    assert ledger_rows(second) == [] and snap["spent_usd"] == 0.0

    originals = {slot(j): j for j in run_jobs(first)}
    for job in run_jobs(second):
        source = originals[slot(job)]
        assert (job.reused_from_run_id, job.reused_from_job_id) == (first, source.id)
        assert job.cost_usd == 0.0 and job.output == source.output and job.score == source.score
    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert sum(b["cost_usd"] for b in report["backends"]) == 0.0
    assert sum(b["reused"] for b in report["backends"]) == JOBS
    assert f"{JOBS} answers reused from runs {first} (no call, $0)" in "\n".join(report["warnings"])


def test_new_fine_tuned_ids_are_paid_and_everything_else_is_reused(start_worker, simulator, genesis, monkeypatch,
                                                                    tmp_path):
    from shared.config import get_settings

    start_worker("w1", concurrency=8)
    first = submit(*SELECTION)
    wait_until_reported(first)

    # A new fine-tune per agent: the producer records jobs with the new ids (workers read them from SQL).
    config = (ROOT / "config" / "genesis.toml").read_text().replace(
        'model_id_file = "models/{agent}_mistral/model_id.txt"',
        'models = { qa = "ft:open-mistral-7b:qa:v2", support = "ft:open-mistral-7b:support:v2" }',
    )
    (tmp_path / "v2.toml").write_text(config)
    monkeypatch.setenv("GENESIS_CONFIG", str(tmp_path / "v2.toml"))
    get_settings.cache_clear()

    simulator.reset()
    second = submit(*SELECTION, "--reuse")
    snap = wait_until_reported(second)
    assert snap["by_status"]["ok"] == JOBS
    served = simulator.stats()
    assert served["requests_total"] == 2 * 3  # only the candidate's calls
    assert set(served["by_model"]) == {"ft:open-mistral-7b:qa:v2", "ft:open-mistral-7b:support:v2"}
    for job in run_jobs(second):
        assert (job.reused_from_run_id is None) == (job.backend == "mistral-ft"), slot(job)
    assert {e.backend for e in ledger_rows(second)} == {"mistral-ft"} and len(ledger_rows(second)) == 6


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_two_concurrent_runs_with_reuse_pay_once_per_request(start_worker, simulator):
    simulator.update(latency_ms=150)
    start_worker("w1", concurrency=8)
    start_worker("w2", concurrency=8)
    runs = [submit(*SELECTION, "--reuse"), submit(*SELECTION, "--reuse")]
    for run_id in runs:
        assert wait_until_reported(run_id)["by_status"]["ok"] == JOBS

    assert simulator.stats()["requests_total"] == JOBS  # each distinct request paid once
    jobs = [job for run_id in runs for job in run_jobs(run_id)]
    paid = {e.job_id for run_id in runs for e in ledger_rows(run_id)}
    by_id = {j.id: j for j in jobs}
    assert len(paid) == JOBS
    for job in jobs:
        assert (job.id in paid) != (job.reused_from_job_id is not None)  # paid or reused, never both
        if job.reused_from_job_id is not None:
            source = by_id[job.reused_from_job_id]
            assert source.id in paid and source.output == job.output and slot(source) == slot(job)


def test_reuse_ignores_answers_older_than_max_age(start_worker, simulator, monkeypatch):
    from sqlalchemy import update

    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import Job, utcnow

    start_worker("w1", concurrency=8)
    first = submit(*SELECTION)
    wait_until_reported(first)
    from datetime import timedelta

    with session_scope() as session:  # age the first run's answers past the limit below
        session.execute(update(Job).where(Job.run_id == first).values(finished_at=utcnow() - timedelta(days=3)))
    monkeypatch.setenv("GENESIS_REUSE__MAX_AGE_DAYS", "2")
    get_settings.cache_clear()

    dry = json.loads(producer("submit", *SELECTION, "--reuse", "--dry-run", "--json").stdout)
    assert dry["reuse"]["calls_saved"] == 0
    simulator.reset()
    second = submit(*SELECTION, "--reuse")
    wait_until_reported(second)
    assert simulator.stats()["requests_total"] == JOBS
    assert all(j.reused_from_job_id is None for j in run_jobs(second))
