"""The report from SQL rows: numbers, verdicts, warnings and the three files."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from shared.config import ConfigError, load_settings
from shared.db import get_engine, migrate
from shared.models import BudgetEvent, CostEntry, Job, Run, RunStatus, utcnow
from shared.report import (
    LATEST_REPORT_NAME,
    build_report_data,
    generate_report,
    render_markdown,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
TASKS = [f"t{i:02d}" for i in range(10)]
DIFFICULTIES = ["easy"] * 4 + ["medium"] * 3 + ["hard"] * 3
MODELS = {
    "mistral-ft": "ft:open-mistral-7b:{agent}",
    "mistral-base": "open-mistral-7b",
    "openai": "gpt-4o-mini",
}
PROVIDERS = {"mistral-ft": "mistral", "mistral-base": "mistral", "openai": "openai"}

# qa: the fine-tuned model clearly wins; legal: it does not (same accuracy).
QA_FT = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
QA_BASE = [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]
LEGAL_FT = [1, 1, 1, 1, 0, 1, 1, 0.5, 0.5, 1]  # the last task ends up halted
LEGAL_BASE = [1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
OPENAI = [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("GENESIS_CONFIG", str(REPO / "config" / "genesis.toml"))
    url = f"sqlite:///{tmp_path}/t.db"
    migrate(url)
    return url


def add_run(
    session: Session, run_id: str, agents: list[str], *, simulated=True,
    status=RunStatus.completed, created_at=None,
) -> Run:
    run = Run(
        id=run_id,
        suite="genesis-custom",
        agents=agents,
        backends=list(MODELS),
        status=status,
        simulated=simulated,
        config=load_settings().snapshot(),
        created_at=created_at or utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def add_jobs(
    session: Session, run_id: str, agent: str, backend: str, scores: list, *,
    model: str | None = None, statuses: dict[int, str] | None = None, tasks: list[str] | None = None,
) -> None:
    """One job per task, ok unless `statuses` says otherwise by task index; ok jobs get a
    score, latency 100 ms x (index + 1), 100 + 20 tokens and $0.001 with its ledger row."""
    for i, task in enumerate(tasks or TASKS):
        status = (statuses or {}).get(i, "ok")
        ok = status == "ok"
        job = Job(
            run_id=run_id, agent=agent, task_id=task, difficulty=DIFFICULTIES[i % len(DIFFICULTIES)], backend=backend,
            provider=PROVIDERS[backend], model=model or MODELS[backend].format(agent=agent),
            status=status,
            score=float(scores[i]) if ok else None,
            latency_ms=100.0 * (i + 1) if ok else None,
            input_tokens=100 if ok else None, output_tokens=20 if ok else None,
            cost_usd=0.001 if ok else None,
            error_type="APIStatusError" if status == "error" else None,
        )
        session.add(job)
        session.flush()
        if ok:
            session.add(CostEntry(
                run_id=run_id, job_id=job.id, agent=agent, backend=backend, model=job.model,
                cost_usd=0.001,
            ))


@pytest.fixture
def mixed_run(db_url) -> str:
    with Session(get_engine(db_url)) as session:
        add_run(session, "run1", ["qa", "legal"])
        add_jobs(session, "run1", "qa", "mistral-ft", QA_FT)
        add_jobs(session, "run1", "qa", "mistral-base", QA_BASE)
        add_jobs(session, "run1", "qa", "openai", OPENAI, model="gpt-<script>alert(1)</script>")
        add_jobs(session, "run1", "legal", "mistral-ft", LEGAL_FT, statuses={9: "halted"})
        add_jobs(session, "run1", "legal", "mistral-base", LEGAL_BASE)
        add_jobs(session, "run1", "legal", "openai", OPENAI, statuses={0: "error", 1: "error"})
        session.add(CostEntry(operation="manual", cost_usd=8.0))  # the budget is global
        session.add(BudgetEvent(
            kind="warning", level="warning", spent_usd=8.0, limit_usd=30.0, run_id="run1",
            message="25% used",
        ))
        session.commit()
    return db_url


def build(db_url: str, run_id: str = "run1", **kwargs) -> dict:
    with Session(get_engine(db_url)) as session:
        return build_report_data(session, run_id, **kwargs)


def mean(values) -> float:
    return sum(values) / len(values)


def comparison(data: dict, agent: str) -> dict:
    return next(c for c in data["comparisons"] if c["agent"] == agent)


def backend_row(data: dict, agent: str, backend: str) -> dict:
    return next(b for b in data["backends"] if b["agent"] == agent and b["backend"] == backend)


def test_comparisons_pair_tasks_and_say_what_would_settle_them(mixed_run):
    data = build(mixed_run)
    qa = comparison(data, "qa")
    assert (qa["candidate"], qa["baseline"], qa["n"]) == ("mistral-ft", "mistral-base", 10)
    assert qa["candidate_accuracy"] == pytest.approx(0.9)
    assert qa["baseline_accuracy"] == pytest.approx(0.7)
    assert qa["improvement_abs"] == pytest.approx(0.2)
    assert qa["improvement_rel"] == pytest.approx(0.2 / 0.7)
    assert qa["threshold_abs"] == pytest.approx(0.08 * 0.7)
    # Differences: eight 0s and two +1s. Score test at 0 (Tango, with the continuity correction):
    # (2 - 1/2) / sqrt(2) = 1.061, one-sided p = 0.144; two agents and the pooled verdict share
    # the run's 5%: 1.25% per agent comparison, so the reported p is 0.144 * 4 = 0.578.
    assert qa["p_value_unadjusted"] == pytest.approx(0.14442, abs=1e-4) and qa["method"] == "score"
    assert qa["p_value"] == pytest.approx(4 * qa["p_value_unadjusted"]) and qa["alpha_each"] == pytest.approx(0.0125)
    assert qa["ci95_abs"][0] < 0 < qa["ci95_abs"][1]
    assert qa["decision"] == "INCONCLUSIVE"
    # Two wins in ten as the truth: the test's own power reaches 80% at 39 tasks (seeded draws).
    assert qa["pairs_needed"] == 39
    assert "about 39 paired tasks would settle it at 80% power" in qa["headline"]
    assert [p["task_id"] for p in qa["pairs"]] == TASKS
    assert qa["pairs"][3] == {"task_id": "t03", "candidate_score": 1.0, "baseline_score": 0.0,
                              "candidate_epochs": [1.0], "baseline_epochs": [0.0]}

    legal = comparison(data, "legal")  # task t09 halted on the candidate: paired over 9 tasks
    assert legal["n"] == 9 and legal["tasks"] == 10
    assert legal["candidate_accuracy"] == pytest.approx(mean(LEGAL_FT[:9]))
    assert legal["baseline_accuracy"] == pytest.approx(mean(LEGAL_BASE[:9]))
    assert legal["improvement_abs"] == pytest.approx(0.0)
    assert legal["decision"] == "INCONCLUSIVE"  # 9 pairs cannot exclude the +6.2 pp needed

    pooled = comparison(data, "ALL")
    assert pooled["n"] == 19 and "pairs" not in pooled
    assert pooled["candidate_accuracy"] == pytest.approx(mean(QA_FT + LEGAL_FT[:9]))
    assert pooled["baseline_accuracy"] == pytest.approx(mean(QA_BASE + LEGAL_BASE[:9]))
    assert pooled["improvement_rel"] == pytest.approx((16 / 19 - 14 / 19) / (14 / 19))  # +14.3%
    assert pooled["decision"] == "INCONCLUSIVE"
    assert data["decision"] == {"overall": "INCONCLUSIVE", "by_agent": {"qa": "INCONCLUSIVE", "legal": "INCONCLUSIVE"}}
    assert data["min_improvement"] == 0.08 and data["confidence"] == 0.95
    assert [(c["agent"], c["candidate"]) for c in data["comparisons"]] == [
        ("qa", "mistral-ft"), ("legal", "mistral-ft"), ("ALL", "mistral-ft"),
    ]  # the openai reference is not compared


def test_go_and_no_go_need_the_interval_clear_of_the_line(db_url):
    with Session(get_engine(db_url)) as session:
        add_run(session, "clear", ["qa", "legal"])
        add_jobs(session, "clear", "qa", "mistral-ft", [1] * 10)
        add_jobs(session, "clear", "qa", "mistral-base", [0] * 8 + [1, 1])
        add_jobs(session, "clear", "legal", "mistral-ft", [0] * 8 + [1, 1])
        add_jobs(session, "clear", "legal", "mistral-base", [1] * 10)
        session.commit()
    data = build(db_url, "clear")
    qa, legal, pooled = (comparison(data, agent) for agent in ("qa", "legal", "ALL"))
    # Eight +1 differences and two ties: (8 - 1/2) / sqrt(8) = 2.652, one-sided p = 0.0040,
    # times 4 for the run's shares (two agents, pooled) = 0.016 < 0.05: GO, the interval above 0.
    assert qa["p_value"] == pytest.approx(0.01602, abs=1e-4)
    assert 0 < qa["ci95_abs"][0] < 0.8 < qa["ci95_abs"][1]
    assert qa["decision"] == "GO" and qa["pairs_needed"] is None
    assert legal["ci95_abs"][1] < 0 and legal["decision"] == "NO-GO"
    # Pooled: eight +1 and eight -1 cancel; 20 pairs cannot yet exclude the needed +4.8 pp (8% of 60%).
    assert pooled["improvement_abs"] == pytest.approx(0.0) and pooled["decision"] == "INCONCLUSIVE"
    assert data["decision"] == {"overall": "INCONCLUSIVE", "by_agent": {"qa": "GO", "legal": "NO-GO"}}
    worse = [d for d in data["disagreements"] if d["kind"] == "candidate worse"]
    better = [d for d in data["disagreements"] if d["kind"] == "candidate better"]
    assert len(worse) == len(better) == 8
    assert data["disagreements"][:8] == worse  # the losses first


def test_the_drill_down_shows_prompts_and_escaped_answers(db_url, tmp_path):
    from sqlmodel import select

    with Session(get_engine(db_url)) as session:
        add_run(session, "drill", ["qa"])
        add_jobs(session, "drill", "qa", "mistral-ft", [1] * 10)
        add_jobs(session, "drill", "qa", "mistral-base", [0] + [1] * 9)
        for job in session.exec(select(Job).where(Job.run_id == "drill", Job.task_id == "t00")):
            job.task_id = "qa-001"  # a task of the shipped suite, so its prompt can be shown
            job.output = "Canberra" if job.backend == "mistral-ft" else '<img src=x onerror="alert(1)">'
            session.add(job)
        session.commit()
    data = build(db_url, "drill")
    (row,) = data["disagreements"]
    assert (row["task_id"], row["kind"], row["candidate_answer"]) == ("qa-001", "candidate better", "Canberra")
    assert row["prompt_start"].startswith("What is the capital city of Australia?")
    page = write_report(data, tmp_path)["html"].read_text()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "What is the capital city of Australia?" in page


def test_backend_rows_counts_budget_and_warnings(mixed_run):
    data = build(mixed_run)
    ft = backend_row(data, "qa", "mistral-ft")
    assert ft["model"] == "ft:open-mistral-7b:qa" and ft["role"] == "candidate"
    assert (ft["n"], ft["ok"], ft["errors"]) == (10, 10, 0)
    assert ft["accuracy"] == pytest.approx(0.9)
    assert ft["latency_p50_ms"] == pytest.approx(550.0)  # linear interpolation between 500 and 600
    assert ft["latency_p95_ms"] == pytest.approx(955.0)
    assert (ft["input_tokens"], ft["output_tokens"]) == (1000, 200)
    assert ft["cost_usd"] == pytest.approx(0.010)
    assert ft["cost_per_request_usd"] == pytest.approx(0.001)

    legal_openai = backend_row(data, "legal", "openai")
    assert (legal_openai["n"], legal_openai["errors"]) == (8, 2)
    assert legal_openai["accuracy"] == pytest.approx(mean(OPENAI[2:]))
    assert legal_openai["cost_usd"] == pytest.approx(0.008)

    assert data["counts"] == {"queued": 0, "running": 0, "ok": 57, "error": 2, "halted": 1, "waiting": 0, "not_needed": 0}
    assert data["complete"] is False and data["simulated"] is True and data["status"] == "completed"

    cells = {(r["agent"], r["backend"], r["difficulty"]): r for r in data["by_difficulty"]}
    easy = cells[("qa", "mistral-base", "easy")]
    assert (easy["n"], easy["accuracy"]) == (4, pytest.approx(mean(QA_BASE[:4])))

    budget = data["budget"]
    assert budget["spent_usd"] == pytest.approx(8.0 + 57 * 0.001)
    assert budget["run_cost_usd"] == pytest.approx(57 * 0.001) == budget["jobs_cost_usd"]
    assert budget["level"] == "warning" and budget["limit_usd"] == 30.0 and budget["halted"] is False
    assert [e["kind"] for e in budget["events"]] == ["warning"]

    warnings = "\n".join(data["warnings"])
    assert "2 job(s) ended in error" in warnings and "legal/openai x2" in warnings
    assert "1 job(s) halted" in warnings and "legal/mistral-ft x1" in warnings
    assert "Simulated" in warnings
    assert "ledger" not in warnings  # jobs and ledger agree


def test_inconclusive_when_the_baseline_all_errored(db_url):
    with Session(get_engine(db_url)) as session:
        add_run(session, "run2", ["qa", "legal"], simulated=False)
        add_jobs(session, "run2", "qa", "mistral-ft", QA_FT)
        all_errors = dict.fromkeys(range(len(TASKS)), "error")
        add_jobs(session, "run2", "qa", "mistral-base", QA_BASE, statuses=all_errors)
        add_jobs(session, "run2", "legal", "mistral-ft", QA_FT)
        add_jobs(session, "run2", "legal", "mistral-base", QA_BASE)
        session.commit()
    data = build(db_url, "run2")
    qa = comparison(data, "qa")
    assert qa["n"] == 0 and qa["candidate_accuracy"] is None and qa["decision"] == "INCONCLUSIVE"
    assert data["decision"]["by_agent"] == {"qa": "INCONCLUSIVE", "legal": "INCONCLUSIVE"}
    assert data["decision"]["overall"] == "INCONCLUSIVE"
    assert data["simulated"] is False and data["complete"] is True
    assert not any("Simulated" in w for w in data["warnings"])
    assert any("no task paired" in w for w in data["warnings"])


def test_a_verdict_exactly_on_the_threshold_is_go(db_url):
    # 243 vs 225 right of 500: (0.486 - 0.45) / 0.45 is 0.0799999... in floating point: still
    # an 8% improvement. (Ten equal differences of +3.6 pp no longer make a point interval: ten
    # tasks cannot rule out rare large losses, so that case is INCONCLUSIVE now.)
    with Session(get_engine(db_url)) as session:
        add_run(session, "edge", ["qa"])
        tasks = [f"e{i:03d}" for i in range(500)]
        add_jobs(session, "edge", "qa", "mistral-ft", [1] * 243 + [0] * 257, tasks=tasks)
        add_jobs(session, "edge", "qa", "mistral-base", [1] * 225 + [0] * 275, tasks=tasks)
        session.commit()
    qa = comparison(build(db_url, "edge"), "qa")
    assert qa["improvement_rel"] == pytest.approx(0.08) and qa["improvement_rel"] < 0.08
    assert qa["decision"] == "GO" and qa["ci95_abs"][0] > 0


def test_unknown_run_and_in_flight_run(db_url):
    with pytest.raises(KeyError, match="nope"):
        build(db_url, "nope")
    with Session(get_engine(db_url)) as session:
        add_run(session, "live", ["qa"], status=RunStatus.running)
        last_three_queued = {7: "queued", 8: "queued", 9: "queued"}
        add_jobs(session, "live", "qa", "mistral-ft", QA_FT, statuses=last_three_queued)
        session.commit()
    with pytest.raises(ConfigError, match="--partial"):
        build(db_url, "live")
    data = build(db_url, "live", partial=True)
    assert data["partial"] is True and data["complete"] is False
    assert data["counts"]["queued"] == 3
    assert any("still queued or running" in w for w in data["warnings"])
    assert data["decision"]["overall"] == "INCONCLUSIVE"  # no baseline ran yet


def test_generate_report_writes_the_files(mixed_run, tmp_path):
    paths = generate_report("run1", database_url=mixed_run, reports_dir=tmp_path / "reports").paths
    assert paths["md"] == tmp_path / "reports" / "run1" / "report.md"
    assert all(p.is_file() for p in paths.values())
    assert paths["latest"] == tmp_path / "reports" / LATEST_REPORT_NAME
    markdown = paths["md"].read_text()
    assert paths["latest"].read_text() == markdown

    saved = json.loads(paths["json"].read_text())
    assert saved["decision"]["by_agent"] == {"qa": "INCONCLUSIVE", "legal": "INCONCLUSIVE"}
    assert saved["comparisons"][0]["pairs"] and saved["disagreements"]
    assert set(saved) >= {
        "run_id", "simulated", "complete", "decision", "comparisons", "backends", "generated_at",
        "suite", "status", "counts", "by_difficulty", "budget", "warnings", "min_improvement",
    }
    assert set(saved["comparisons"][0]) >= {
        "agent", "candidate", "baseline", "n", "candidate_accuracy", "baseline_accuracy",
        "improvement_rel", "improvement_abs", "ci95_abs", "p_value", "decision",
    }

    assert "# Fine-tuning quality report: run run1" in markdown
    assert "SIMULATED" in markdown
    assert "**Overall: INCONCLUSIVE**" in markdown and "\n- qa: INCONCLUSIVE: " in markdown
    assert "- qa: **INCONCLUSIVE**" not in markdown  # one candidate: its headline is the agent's verdict, once
    assert "at least 8% relative" in markdown and "One error rate for the whole run" in markdown
    assert "|---|---|---|---:|" in markdown  # numbers right-aligned
    assert "\\<script\\>" in markdown  # cannot reach a markdown renderer as raw HTML

    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "SIMULATED" in page and 'class="inconclusive">INCONCLUSIVE<' in page
    assert page.index("Overall:") < page.index("<svg") < page.index("Rule:")  # the decision, its chart, the rule
    assert '<td class="num">' in page
    assert "http" not in page.split("<body>")[0].lower()  # no external assets in the head
    assert not list((tmp_path / "reports").rglob("*.tmp"))


def test_an_agent_with_several_candidates_gets_its_own_verdict_beside_their_headlines():
    from shared.report.document import _combined_verdicts

    data = {"comparisons": [{"agent": "qa"}, {"agent": "qa"}, {"agent": "legal"}, {"agent": "ALL"}],
            "decision": {"by_agent": {"qa": "GO", "legal": "NO-GO"}}}
    assert _combined_verdicts(data) == {"qa": "GO"}  # GO if any of its candidates is; legal's headline says it
    assert _combined_verdicts({"comparisons": [], "decision": {"by_agent": {"qa": "INCONCLUSIVE"}}}) == {}


def test_latest_copy_stays_with_the_newest_run(db_url, tmp_path):
    with Session(get_engine(db_url)) as session:
        add_run(session, "old", ["qa"], created_at=utcnow() - timedelta(days=1))
        add_run(session, "new", ["qa"])
        for run_id in ("old", "new"):
            add_jobs(session, run_id, "qa", "mistral-ft", QA_FT)
            add_jobs(session, run_id, "qa", "mistral-base", QA_BASE)
        session.commit()
    reports = tmp_path / "reports"
    generate_report("old", database_url=db_url, reports_dir=reports)
    assert "run old" in (reports / LATEST_REPORT_NAME).read_text()
    generate_report("new", database_url=db_url, reports_dir=reports)
    generate_report("old", database_url=db_url, reports_dir=reports)  # a rebuild of the older run
    latest = (reports / LATEST_REPORT_NAME).read_text()
    assert "run new" in latest and latest == (reports / "new" / "report.md").read_text()


def test_write_report_renders_hostile_names(tmp_path, mixed_run):
    data = build(mixed_run)
    hostile = dict(data["comparisons"][0], agent="<b>x</b>|y")  # two candidates: its own verdict is listed too
    data["comparisons"] += [hostile, dict(hostile)]
    data["decision"]["by_agent"]["<b>x</b>|y"] = "GO"
    paths = write_report(data, tmp_path)
    page = paths["html"].read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;|y" in page
    assert "- \\<b\\>x\\</b\\>\\|y: **GO**" in paths["md"].read_text()


def test_budget_section_follows_the_recorded_halt_and_raised_limit(mixed_run):
    with Session(get_engine(mixed_run)) as session:
        for kind, limit in (("halt", 30.0), ("limit", 100.0), ("resume", 100.0), ("halt", 100.0)):
            session.add(BudgetEvent(kind=kind, level="emergency", spent_usd=8.0, limit_usd=limit, run_id="run1",
                                    message=f"{kind} at ${limit:.0f}"))
        session.commit()
    budget = build(mixed_run)["budget"]
    assert budget["halted"] is True and budget["limit_usd"] == 100.0
    # 8.06 of 100 is under the 25% warning line, but a halted budget is at emergency, with why
    assert budget["level"] == "emergency" and budget["halt_reason"] == "halt at $100"
    assert budget["remaining_usd"] == pytest.approx(83.0 - budget["spent_usd"])
    assert "HALTED by the budget guard: halt at $100" in render_markdown(build(mixed_run))


JUDGE_USD = 0.0005


def reuse_answers(session: Session, run_id: str, backend: str, tasks: list[str], source_run: str) -> None:
    """Turns jobs of `run_id` into reused ones, as shared.lifecycle.finish_reused leaves them: the
    source's answer, $0 and no ledger row of their own."""
    from sqlmodel import delete, select

    for task in tasks:
        job = session.exec(select(Job).where(Job.run_id == run_id, Job.backend == backend, Job.task_id == task)).one()
        source = session.exec(select(Job).where(Job.run_id == source_run, Job.backend == backend, Job.task_id == task)).one()
        job.cost_usd, job.reused_from_job_id, job.reused_from_run_id = 0.0, source.id, source_run
        session.add(job)
        session.exec(delete(CostEntry).where(CostEntry.job_id == job.id))


def ledger_judge(session: Session, run_id: str, backend: str, *, job_ids: list[int | None]) -> None:
    for job_id in job_ids:
        session.add(CostEntry(run_id=run_id, job_id=job_id, agent="qa", backend=backend, model="gpt-4o-mini",
                              operation="judge", cost_usd=JUDGE_USD))


@pytest.fixture
def judged_run(db_url) -> str:
    """qa: the candidate's 10 answers judged (one entry each); the baseline has 4 answers reused
    from two earlier runs and one judge reply that could not be parsed (ledgered, no job link)."""
    from sqlmodel import select

    with Session(get_engine(db_url)) as session:
        for source in ("src1", "src2"):
            add_run(session, source, ["qa"], created_at=utcnow() - timedelta(days=1))
            add_jobs(session, source, "qa", "mistral-base", QA_BASE)
        add_run(session, "judged", ["qa"])
        add_jobs(session, "judged", "qa", "mistral-ft", QA_FT)
        add_jobs(session, "judged", "qa", "mistral-base", QA_BASE)
        reuse_answers(session, "judged", "mistral-base", ["t00", "t01"], "src1")
        reuse_answers(session, "judged", "mistral-base", ["t02", "t03"], "src2")
        ft_ids = list(session.exec(select(Job.id).where(Job.run_id == "judged", Job.backend == "mistral-ft")))
        ledger_judge(session, "judged", "mistral-ft", job_ids=ft_ids)
        ledger_judge(session, "judged", "mistral-base", job_ids=[None])
        session.commit()
    return db_url


def test_reused_answers_and_judge_calls_are_counted_apart(judged_run):
    data = build(judged_run, "judged")
    ft, base = backend_row(data, "qa", "mistral-ft"), backend_row(data, "qa", "mistral-base")
    assert (ft["reused"], base["reused"]) == (0, 4)
    assert ft["cost_usd"] == pytest.approx(0.010) and base["cost_usd"] == pytest.approx(0.006)  # inference only
    assert (ft["judge_calls"], base["judge_calls"]) == (10, 1)  # the unparseable reply counts too
    assert ft["judge_cost_usd"] == pytest.approx(10 * JUDGE_USD) and base["judge_cost_usd"] == pytest.approx(JUDGE_USD)
    assert base["total_cost_usd"] == pytest.approx(0.006 + JUDGE_USD)
    assert base["cost_per_request_usd"] == pytest.approx(0.001)  # over the 6 paid answers, not 0.0006
    by_backend = {b["backend"]: b for b in data["by_backend"]}
    assert by_backend["mistral-ft"]["judge_cost_usd"] == pytest.approx(10 * JUDGE_USD)
    assert by_backend["mistral-base"]["total_cost_usd"] == pytest.approx(0.006 + JUDGE_USD)

    costs, ledger = data["costs"], data["budget"]["run_cost_usd"]
    assert ledger == pytest.approx(0.016 + 11 * JUDGE_USD)
    assert sum(b["total_cost_usd"] for b in data["backends"]) == pytest.approx(ledger)
    assert costs["total_usd"] == pytest.approx(ledger) and costs["ledger_usd"] == ledger
    assert (costs["judge_calls"], costs["judge_usd"]) == (11, pytest.approx(11 * JUDGE_USD))
    assert costs["judge_share"] == pytest.approx(0.0055 / 0.0215)
    assert costs["reuse"] == {"jobs": 4, "source_runs": ["src1", "src2"]}

    assert comparison(data, "qa")["n"] == 10  # reused answers are that model's answers: still paired
    warnings = "\n".join(data["warnings"])
    assert "4 answers reused from runs src1, src2 (no call, $0)" in warnings
    assert "ledger holds" not in warnings  # inference + judge account for the whole ledger


def test_the_cost_section_and_chart_show_the_judge_apart(judged_run, tmp_path):
    paths = write_report(build(judged_run, "judged"), tmp_path)
    markdown, page = paths["md"].read_text(), paths["html"].read_text()
    assert "judge: $0.005500 over 11 calls, 25.6% of this run's cost" in markdown
    assert "| Reused |" in markdown and "Cost / paid request" in markdown
    assert "judge: $0.005500 over 11 calls, 25.6% of this run&#x27;s cost" in page
    cost_chart = page[page.index('data-chart="cost"'):page.index('data-chart="cost-per-point"')]
    assert "judge stacked in grey" in cost_chart and cost_chart.count('fill="#8c959f"') == 3  # 2 bars + legend


def test_a_ledger_entry_nobody_accounts_for_is_a_warning(judged_run):
    with Session(get_engine(judged_run)) as session:
        session.add(CostEntry(run_id="judged", operation="manual", cost_usd=0.25))
        session.commit()
    data = build(judged_run, "judged")
    assert data["costs"]["ledger_usd"] - data["costs"]["total_usd"] == pytest.approx(0.25)
    assert any("ledger holds $0.271500 for this run" in w for w in data["warnings"])


def test_a_go_after_earlier_non_go_runs_on_the_same_tasks_is_flagged(db_url, tmp_path):
    # Re-running until GO comes up is testing again at the same error rate: the report lists
    # the earlier decisions on the same models and suite, and says so.
    start = utcnow() - timedelta(hours=2)
    for i, (run_id, ft) in enumerate((("try1", [0] * 8 + [1, 1]), ("try2", [1] * 10))):
        with Session(get_engine(db_url)) as session:
            add_run(session, run_id, ["qa", "legal"], created_at=start + timedelta(hours=i))
            add_jobs(session, run_id, "qa", "mistral-ft", ft)
            add_jobs(session, run_id, "qa", "mistral-base", [0] * 8 + [1, 1])
            add_jobs(session, run_id, "legal", "mistral-ft", LEGAL_BASE)
            add_jobs(session, run_id, "legal", "mistral-base", LEGAL_BASE)
            session.commit()
        generate_report(run_id, database_url=db_url, reports_dir=tmp_path)
    data = build(db_url, "try2")
    assert data["decision"]["by_agent"]["qa"] == "GO"
    earlier = data["earlier_decisions"]
    qa = [r for r in earlier["rows"] if r["agent"] == "qa"]
    assert [(r["run_id"], r["decision"], r["same_tasks"]) for r in qa] == [("try1", "INCONCLUSIVE", True)]
    assert qa[0]["candidate_model"] == "ft:open-mistral-7b:qa" and qa[0]["baseline_model"] == "open-mistral-7b"
    assert data["decision"]["overall"] == "GO"  # the pooled verdict too: both are flagged
    qa_note, pooled_note = earlier["notes"]
    assert qa_note.startswith("qa: this GO follows 1 earlier non-GO verdict(s) on the same tasks (try1)")
    assert pooled_note.startswith("all agents pooled: this GO follows 1 earlier non-GO verdict(s)")
    markdown = render_markdown(data)
    assert "Earlier decisions on the same candidate model" in markdown and "this GO follows" in markdown
    first = build(db_url, "try1")  # nothing earlier than the first run
    assert first["earlier_decisions"] == {"rows": [], "notes": []}


def test_task_families_reach_the_verdict_from_sql(db_url):
    """Jobs record their task's family (job.cluster); the report's comparison is clustered and
    its headline says how many clusters carried it."""
    from sqlmodel import select

    with Session(get_engine(db_url)) as session:
        add_run(session, "fam", ["qa"])
        add_jobs(session, "fam", "qa", "mistral-ft", QA_FT)
        add_jobs(session, "fam", "qa", "mistral-base", QA_BASE)
        for job in session.exec(select(Job).where(Job.run_id == "fam")).all():
            job.cluster = f"doc-{int(job.task_id[1:]) // 2}"  # five families of two tasks
            session.add(job)
        session.commit()
    data = build(db_url, "fam")
    qa = comparison(data, "qa")
    assert qa["clustered"] and qa["clusters"] == 5 and qa["n"] == 10
    assert "n=10 in 5 clusters" in qa["headline"]
    assert "n=10 in 5 clusters" in render_markdown(data)
