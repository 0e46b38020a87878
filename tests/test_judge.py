"""The `judge` scorer end to end, with real workers, Redis, the simulator and the SDKs: every
judged job pays for its answer once and for its grade once (operation `judge` in the ledger),
an unparseable grade is retried and then stored as an error that says so (the answer kept, so
resuming pays only the judge again), and the budget guard halts on judge spend too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from simulator.judging import rubric_grade
from tests.support.env import ROOT
from tests.support.runs import ledger_rows, producer, run_jobs, submit, wait_until_reported
from tests.support.waiting import wait_for

SELECTION = ["--suite", "genesis-judge", "--agent", "content", "--agent", "legal",
             "--backend", "mistral-ft", "--backend", "mistral-base", "--limit", "2"]
JOBS = 2 * 2 * 2
JUDGE_MODEL = "gpt-5-mini"  # [judge] backend = "openai"


def rows(run_id: str):
    return run_jobs(run_id), ledger_rows(run_id)


def report_costs(run_id: str) -> tuple[dict, float]:
    """The report's cost figures built from SQL now, and the ledger's total for the run."""
    from shared.db import session_scope
    from shared.report import build_report_data

    with session_scope() as session:
        data = build_report_data(session, run_id)
    return data, sum(e.cost_usd for e in rows(run_id)[1])


def assert_judge_costs_reported(run_id: str, calls: int) -> None:
    data, ledger = report_costs(run_id)
    assert data["costs"]["judge_calls"] == calls
    assert sum(b["judge_calls"] for b in data["backends"]) == calls
    assert sum(b["total_cost_usd"] for b in data["backends"]) == pytest.approx(ledger)
    assert not any("ledger holds" in w for w in data["warnings"])


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_judged_jobs_are_graded_by_the_judge_backend_and_ledgered_as_judge(start_worker, simulator):
    from shared.suite import load_suite

    dry = json.loads(producer("submit", *SELECTION, "--dry-run", "--json").stdout)
    assert dry["judge"]["calls"] == JOBS and dry["judge"]["cost_usd"] > 0
    start_worker("w1", concurrency=8)
    run_id = submit(*SELECTION)
    snap = wait_until_reported(run_id)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == JOBS

    jobs, entries = rows(run_id)
    served = simulator.stats()["by_model"]
    assert served[JUDGE_MODEL] == JOBS and simulator.stats()["requests_total"] == 2 * JOBS
    for operation in ("inference", "judge"):
        assert sorted(e.job_id for e in entries if e.operation == operation) == [j.id for j in jobs]
    assert all(e.model == JUDGE_MODEL and e.cost_usd > 0 for e in entries if e.operation == "judge")

    suite = load_suite("genesis-judge")
    for job in jobs:  # the simulator grades from the rubric: the stored score is that grade
        task = suite.get(job.agent, job.task_id)
        assert job.score == rubric_grade(task.scorer.rubric, job.output)[0]
        assert job.scorer_detail.startswith("judge genesis-judge-v2: meets ")
    assert {j.score for j in jobs} - {1.0}, "some answers were wrong, so some grades are below 1"

    dashboard = producer("budget", "report", "--json")
    assert dashboard.exit_code == 0, dashboard.output
    judge_usd = sum(e.cost_usd for e in entries if e.operation == "judge")
    lines = Path(json.loads(dashboard.stdout)["path"]).read_text().splitlines()
    assert any(line.startswith("| judge |") and f"{judge_usd:.4f}" in line for line in lines), lines
    assert_judge_costs_reported(run_id, calls=JOBS)


def test_an_unparseable_judge_answer_is_retried_then_an_error_and_resume_pays_only_the_judge(
        start_worker, simulator, monkeypatch, genesis):
    genesis["GENESIS_RETRY__MAX_ATTEMPTS"] = "2"
    genesis["GENESIS_RETRY__BACKOFF_BASE_S"] = "0.1"
    simulator.update(judge_garbage_rate=1.0)
    start_worker("w1", concurrency=8)
    run_id = submit(*SELECTION)
    snap = wait_until_reported(run_id)
    assert snap["by_status"]["error"] == JOBS

    jobs, entries = rows(run_id)
    assert all(j.error_type == "JudgeUnparseable" and "could not be parsed" in j.error_message for j in jobs)
    assert all(j.output and j.score is None for j in jobs)  # the paid answer is kept, never a silent 0
    inference = [e for e in entries if e.operation == "inference"]
    judge = [e for e in entries if e.operation == "judge"]
    assert sorted(e.job_id for e in inference) == [j.id for j in jobs]
    assert len(judge) == 2 * JOBS and all(e.job_id is None and "unparseable" in e.source for e in judge)
    assert simulator.stats()["by_model"][JUDGE_MODEL] == 2 * JOBS  # each paid judge call is in the ledger

    simulator.update(judge_garbage_rate=0.0)
    simulator.reset()
    assert producer("resume", run_id).exit_code == 0
    snap = wait_until_reported(run_id)
    assert snap["by_status"]["ok"] == JOBS
    assert simulator.stats()["by_model"] == {JUDGE_MODEL: JOBS}  # no answer paid twice
    jobs, entries = rows(run_id)
    assert sorted(e.job_id for e in entries if e.operation == "judge" and e.job_id) == [j.id for j in jobs]
    assert_judge_costs_reported(run_id, calls=3 * JOBS)  # the unparseable replies were paid too


def test_the_budget_guard_halts_on_judge_spend(start_worker, simulator, monkeypatch, genesis, tmp_path):
    """Answers are cheap and fit the budget; the judge's worst case does not: the guard
    refuses the judge's reservation, halts, and the judged jobs keep their paid answers."""
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import BudgetEvent

    config = (ROOT / "config" / "genesis.toml").read_text() + (
        '\n[pricing."gpt-judge-xl"]\ninput_per_mtok = 500.0\noutput_per_mtok = 500.0\n'
    )
    (tmp_path / "judge.toml").write_text(config)
    overrides = {"GENESIS_CONFIG": str(tmp_path / "judge.toml"), "GENESIS_BUDGET__LIMIT_USD": "1.0",
                 "GENESIS_JUDGE__MODEL": "gpt-judge-xl"}
    for name, value in overrides.items():
        genesis[name] = value
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    start_worker("w1", concurrency=4)
    run_id = submit(*SELECTION)

    def halted():
        snap = json.loads(producer("status", run_id, "--json").stdout)
        return snap if snap["status"] == "halted" and not snap["by_status"]["running"] else None

    wait_for(halted, timeout=60, interval=0.3, what="the run to halt on judge spend")
    jobs, entries = rows(run_id)
    judged = [e for e in entries if e.operation == "judge"]
    halted_jobs = [j for j in jobs if j.status == "halted"]
    # a job whose judge was refused keeps its paid answer; one delivered after the halt was refused
    # at its answer call (no output, no judge) — which of the two a job meets depends on timing
    at_judge = [j for j in halted_jobs if "judge call" in j.error_message]
    assert at_judge and all(j.output for j in at_judge)
    assert all(not j.output and j.error_message.startswith("budget refused") for j in halted_jobs if j not in at_judge)
    cap = 1.0 * get_settings().budget.emergency
    assert sum(e.cost_usd for e in entries) <= cap
    assert 0 < len(judged) < JOBS and all(e.cost_usd > 0.1 for e in judged)  # each judge call is expensive
    with session_scope() as session:
        assert session.exec(select(BudgetEvent).where(BudgetEvent.kind == "halt")).first() is not None
    budget = json.loads(producer("budget", "--json").stdout)
    assert budget["halted"] is True and budget["spent_usd"] <= cap
