"""End to end, with real parts: the `producer` CLI records and enqueues, real `celery worker`
processes call the simulator through the real SDKs, SQL gets every result and cost, and the
chord callback writes a report that agrees with SQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from tests.support.runs import producer, submit, wait_until_reported


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_all_agents_run_completes_with_a_report_consistent_with_sql(start_worker, simulator, database_url):
    from shared.db import session_scope
    from shared.models import CostEntry, Job

    start_worker("w1", concurrency=8)
    start_worker("w2", concurrency=8)
    result = producer("submit", "--all-agents", "--limit", "3", "--json")
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    assert submitted["jobs"] == 5 * 3 * 4

    snap = wait_until_reported(submitted["run_id"])
    assert snap["status"] == "completed"
    assert snap["by_status"]["ok"] == 60 and sum(snap["by_status"].values()) == 60

    status = json.loads(producer("status", submitted["run_id"], "--json").stdout)
    assert status["by_status"] == {"ok": 60, "error": 0, "halted": 0, "queued": 0, "running": 0}
    assert simulator.stats()["requests_total"] == 60  # no call was made twice

    with session_scope() as session:
        jobs = session.exec(select(Job).where(Job.run_id == submitted["run_id"])).all()
        entries = session.exec(select(CostEntry).where(CostEntry.run_id == submitted["run_id"])).all()
        assert {e.job_id for e in entries} == {j.id for j in jobs}  # one ledger entry per job
        assert all(j.worker and j.worker.split("@")[0] in ("w1", "w2") for j in jobs)
        assert all(j.input_tokens > 0 and j.output_tokens > 0 and j.latency_ms > 0 for j in jobs)
        ledger_total = session.exec(select(func.sum(CostEntry.cost_usd))).one()

    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert report["run_id"] == submitted["run_id"] and report["simulated"] is True and report["complete"] is True
    # every answer said it came from the simulator (its header), recorded job by job
    assert report["simulated_answers"] == 60 and all(j.simulated for j in jobs)
    assert any(w.startswith("Simulated answers: 60 of 60") for w in report["warnings"])
    assert {c["agent"] for c in report["comparisons"]} >= {"qa", "content", "legal", "support", "analyst"}
    assert report["decision"]["overall"] in ("GO", "NO-GO", "INCONCLUSIVE")
    by_key = {(b["agent"], b["backend"]): b for b in report["backends"]}
    for job in jobs:
        assert (job.agent, job.backend) in by_key
    qa_ft = [j for j in jobs if j.agent == "qa" and j.backend == "mistral-ft"]
    assert by_key[("qa", "mistral-ft")]["accuracy"] == pytest.approx(sum(j.score for j in qa_ft) / len(qa_ft))
    assert sum(b["cost_usd"] for b in report["backends"]) == pytest.approx(ledger_total)
    rebuilt = json.loads(producer("report", submitted["run_id"], "--json").stdout)
    assert rebuilt["decision"] == report["decision"]
    for name in ("report.md", "report.html"):
        assert (Path(snap["report"]).parent / name).stat().st_size > 0


def test_provider_errors_are_counted_and_the_report_still_appears(monkeypatch, start_worker, simulator):
    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "1")
    start_worker("w1", concurrency=8)
    simulator.update(error_rates={500: 0.5})
    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--backend", "mistral-base",
                    "--limit", "5")

    snap = wait_until_reported(run_id)
    served = simulator.stats()["by_status"]
    assert snap["by_status"]["error"] == served.get("500", served.get(500, 0)) > 0
    assert snap["by_status"]["ok"] + snap["by_status"]["error"] == 20
    report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
    assert sum(b["errors"] for b in report["backends"]) == snap["by_status"]["error"]
    assert any("error" in w.lower() for w in report["warnings"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "nobody"], "unknown agent 'nobody'"),
        (["--all-agents", "--backend", "gpt-9"], "unknown backend 'gpt-9'"),
        (["--all-agents", "--suite", "no-such-suite"], "unknown suite"),
        (["--all-agents", "--limit", "0"], "--limit"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(genesis, args, message):
    from shared.db import session_scope
    from shared.models import Run

    result = producer("submit", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    with session_scope() as session:
        assert session.exec(select(Run)).all() == []


def test_missing_api_key_is_refused_before_anything_is_written(genesis, monkeypatch):
    from shared.db import session_scope
    from shared.models import Run

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = producer("submit", "--all-agents")
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY" in result.stderr
    with session_scope() as session:
        assert session.exec(select(Run)).all() == []


def test_a_suite_given_as_a_folder_runs_from_that_folder(start_worker, tmp_path):
    from shared.suite import SUITES_DIR

    suite_dir = tmp_path / "my-suite"
    suite_dir.mkdir()
    lines = (SUITES_DIR / "genesis-custom" / "qa.jsonl").read_text().splitlines()[:3]
    (suite_dir / "qa.jsonl").write_text("\n".join(lines) + "\n")
    start_worker("w1", concurrency=4)

    run_id = submit("--agent", "qa", "--backend", "openai", "--suite", str(suite_dir))
    snap = wait_until_reported(run_id)
    assert snap["by_status"]["ok"] == 3 == snap["total"]
