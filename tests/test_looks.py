"""A sequential run's look arithmetic (shared.looks), its judging at each look
(shared.report.looks) on runs built in memory, and its look transitions (shared.lifecycle.looks)
on SQLite."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from sqlmodel import select

from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config

SNAPSHOT = {"backends": {"ft": {"role": "candidate", "baseline": "base"}, "base": {"role": "baseline"}},
            "decision": {"design": "sequential", "looks": 5}}


def test_each_agents_tasks_are_cut_into_even_seeded_slices():
    from shared.looks import task_looks

    tasks = [f"t{i:03d}" for i in range(400)]
    looks = task_looks(tasks, 5, 20261201, "qa")
    assert set(looks) == set(tasks)
    assert sorted(looks.values()) == [k for k in range(1, 6) for _ in range(80)]
    assert task_looks(list(reversed(tasks)), 5, 20261201, "qa") == looks  # the order given does not matter
    assert task_looks(tasks, 5, 7, "qa") != looks and task_looks(tasks, 5, 20261201, "legal") != looks
    uneven = task_looks(tasks[:7], 3, 1, "qa")
    assert sorted(uneven.values()) == [1, 1, 1, 2, 2, 3, 3]
    assert set(task_looks(tasks[:3], 5, 1, "qa").values()) <= {1, 2, 3, 4, 5}  # fewer tasks than looks


def test_the_information_fraction_is_pairs_over_planned_and_one_at_the_last_look():
    from shared.looks import fraction_at

    assert fraction_at(40, 200, 1, 5) == 0.2
    assert fraction_at(35, 200, 2, 5) == 0.175  # errors: fewer pairs than planned
    assert fraction_at(150, 200, 5, 5) == 1.0  # the last look spends what is left
    assert fraction_at(0, 0, 1, 5) == 0.0


def job(agent, task, backend, score, look, status="ok", cost=0.001):
    return SimpleNamespace(agent=agent, task_id=task, backend=backend, model=f"m-{backend}", epoch=1, cluster=None,
                           status=status, score=score if status == "ok" else None, look=look, cost_usd=cost,
                           reused_from_job_id=None)


def facts_of(candidate_accuracy: dict[str, float], base_accuracy: float, tasks: int, released: int,
             looks: int = 5, seed: int = 3):
    """A run of agents x tasks on (ft, base), looks 1..released released and answered, the rest waiting."""
    from shared.looks import task_looks
    from shared.report.data import RunFacts

    rng = random.Random(seed)
    jobs = []
    for agent, accuracy in candidate_accuracy.items():
        order = task_looks([f"{agent}-{i}" for i in range(tasks)], looks, seed, agent)
        for task, look in order.items():
            status = "ok" if look <= released else "waiting"
            jobs.append(job(agent, task, "ft", float(rng.random() < accuracy), look, status))
            jobs.append(job(agent, task, "base", float(rng.random() < base_accuracy), look, status))
    run = SimpleNamespace(id="r", config={**SNAPSHOT, "decision": {**SNAPSHOT["decision"], "looks": looks}},
                          look=released)
    by_pair: dict = {}
    for j in jobs:
        by_pair.setdefault((j.agent, j.backend), []).append(j)
    return RunFacts(run=run, jobs=jobs, agents=list(candidate_accuracy), backends=["ft", "base"], by_pair=by_pair)


def rule_of(facts):
    from shared.report.decision import decision_config

    return decision_config(facts)


def test_a_large_gain_settles_early_and_its_path_ends_there():
    from shared.report.looks import agent_verdicts, judge_looks

    facts = facts_of({"qa": 0.95, "legal": 0.70}, 0.5, 400, released=5)
    judged = {j.agent: j for j in judge_looks(facts, rule_of(facts), 5)}
    qa = judged["qa"]
    assert qa.verdict == "GO" and qa.stopped_at in (1, 2)
    assert len(qa.points) == qa.stopped_at and qa.points[-1].verdict == "GO"
    assert qa.points[0].fraction == pytest.approx(0.2)
    assert agent_verdicts(list(judged.values()), ["qa", "legal"])["qa"] == "GO"


def test_a_loss_settles_no_go_and_no_gain_never_says_go():
    from shared.report.looks import judge_looks

    facts = facts_of({"legal": 0.40, "support": 0.65}, 0.65, 400, released=5)
    judged = {j.agent: j for j in judge_looks(facts, rule_of(facts), 5)}
    assert judged["legal"].verdict == "NO-GO" and judged["legal"].stopped_at < 5
    assert all(p.verdict != "GO" for p in judged["support"].points)
    support = judged["support"]
    if support.stopped_at is None:  # ran to the end: the last look spent all that was left
        assert support.fractions[-1] == 1.0 and support.points[-1].look == 5


def test_an_agent_with_two_candidates_is_settled_once_one_says_go():
    from shared.report.looks import agent_verdicts, judge_looks

    facts = facts_of({"qa": 0.95}, 0.5, 400, released=2)
    facts.run.config = {**facts.run.config, "backends": {**SNAPSHOT["backends"],
                                                         "ft2": {"role": "candidate", "baseline": "base"}}}
    for j in [j for j in facts.jobs if j.backend == "base"]:  # ft2: no better than its baseline
        twin = job(j.agent, j.task_id, "ft2", j.score, j.look, j.status)
        facts.jobs.append(twin)
        facts.by_pair.setdefault((j.agent, "ft2"), []).append(twin)
    facts.backends.append("ft2")
    judged = judge_looks(facts, rule_of(facts), 2)
    by = {(j.agent, j.candidate): j for j in judged}
    assert by[("qa", "ft")].verdict == "GO" and by[("qa", "ft2")].verdict != "GO"
    assert agent_verdicts(judged, ["qa"]) == {"qa": "GO"}  # GO if any candidate is: qa releases no more


def test_an_open_agent_with_go_out_of_reach_stops_once_the_pooled_verdict_is_settled():
    """The release rule bench/sequential_sim.py measures: open AND (GO within reach OR pooled open)."""
    from shared.report.looks import judge_looks, reason, releases, sequential_run
    from shared.report.sequential_section import stop_line
    from shared.sequential import go_within_reach

    facts = facts_of({"qa": 0.95, "support": 0.62}, 0.62, 400, released=3, seed=1)
    rule = rule_of(facts)
    judged = {j.agent: j for j in judge_looks(facts, rule, 3)}
    support = judged["support"]
    assert judged["ALL"].verdict == "GO" and support.verdict == "INCONCLUSIVE"
    assert not go_within_reach(support.rows[-1], support.fractions[-1], rule.go, support.share, rule.looks)
    assert support.futile_at == 3 and judged["qa"].futile_at is None
    assert releases(list(judged.values()), facts.agents, 3, rule.looks) == ([], ["qa", "support"])
    assert reason(support, rule.looks, 3) == (
        "stopped at look 3: GO out of reach (chance of GO by the last look under 5%)")
    line = next(stop_line(p) for p in sequential_run(facts, rule, list(judged.values())).paths if p.comparison == "support")
    assert line == "support: not settled, stopped at look 3: GO out of reach (chance of GO by the last look under 5%)"
    # at look 2 (before FUTILITY_FROM) GO is still within reach: support releases look 3
    early = judge_looks(facts, rule, 2)
    assert releases(early, facts.agents, 2, rule.looks) == (["support"], ["qa"])


def test_a_verdict_with_no_pair_keeps_its_row_and_warning_in_the_report():
    """Every baseline answer of legal failed: its verdict has no look with pairs; the report still
    shows it (INCONCLUSIVE, "no task paired") as the fixed design does."""
    from shared.report.build import _judged
    from shared.report.warnings import _comparison_warnings

    facts = facts_of({"qa": 0.95, "legal": 0.70}, 0.5, 100, released=2)
    for j in facts.jobs:
        if j.agent == "legal" and j.backend == "base" and j.status == "ok":
            j.status, j.score = "error", None
    rule = rule_of(facts)
    rows, run = _judged(facts, rule)
    legal = next(r for r in rows if r["agent"] == "legal")
    assert legal["decision"] == "INCONCLUSIVE" and legal["n"] == 0 and legal["reason"] == "no task paired"
    assert any("no task paired" in w for w in _comparison_warnings(legal))
    assert {p.comparison for p in run.paths} >= {"qa", "legal"}


def test_the_interval_at_a_look_is_the_designs_repeated_one_wider_than_the_fixed():
    from shared.report import decision as rule_
    from shared.report.looks import judge_looks

    facts = facts_of({"qa": 0.70}, 0.65, 400, released=2)
    rule = rule_of(facts)
    path = next(j for j in judge_looks(facts, rule, 2) if j.agent == "qa")
    fixed = next(c for c in rule_.comparisons(facts_of({"qa": 0.70}, 0.65, 400, released=2), rule, plan=False)
                 if c["agent"] == "qa")  # the fixed rule on the same released pairs (waiting ones missing)
    seq_low, seq_high = path.rows[-1]["ci95_abs"]
    assert path.rows[-1]["n"] == 160
    assert seq_high - seq_low > fixed["ci95_abs"][1] - fixed["ci95_abs"][0]


def test_what_stopping_saved_is_the_not_needed_calls_at_their_backends_mean_cost():
    from shared.report.looks import judge_looks, sequential_run

    facts = facts_of({"qa": 0.95}, 0.5, 100, released=2)
    for j in facts.jobs:
        if j.status == "waiting":
            j.status = "not_needed"
    from shared.report.costs import Spend

    facts.answers = Spend(0.08, 80)  # the ledger's calls for the answers
    rule = rule_of(facts)
    run = sequential_run(facts, rule, judge_looks(facts, rule, 2))
    assert run.planned_calls == 200 and run.paid_calls == 80 and run.not_needed_jobs == 120
    assert run.saved_usd == pytest.approx(120 * 0.001) and run.current_look == 2
    assert {p.comparison for p in run.paths} == {"qa", "ALL"}


@pytest.fixture
def sequential_run_in_sql(monkeypatch, tmp_path):
    """A run at look 1 in SQL: qa and legal, 2 tasks each per look over 3 looks, one backend."""
    from shared.db import migrate, session_scope
    from shared.models import Job, Run, RunStatus

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    migrate()
    with session_scope() as session:
        session.add(Run(id="r1", suite="genesis-custom", status=RunStatus.running, total_jobs=12, look=1))
        session.flush()
        for agent in ("qa", "legal"):
            for look in (1, 2, 3):
                for i in range(2):
                    session.add(Job(run_id="r1", agent=agent, task_id=f"{agent}-{look}-{i}", backend="openai",
                                    provider="openai", model="m", look=look,
                                    status="ok" if look == 1 else "waiting"))
    return "r1"


def statuses(run_id: str) -> dict[tuple[str, int], set[str]]:
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job

    found: dict[tuple[str, int], set[str]] = {}
    with session_scope() as session:
        for agent, look, status in session.exec(select(Job.agent, Job.look, Job.status).where(Job.run_id == run_id)):
            found.setdefault((agent, look), set()).add(status)
    return found


def test_a_look_is_released_once_for_open_agents_and_settled_ones_are_not_needed(sequential_run_in_sql):
    from shared import lifecycle

    run_id = sequential_run_in_sql
    assert lifecycle.has_waiting(run_id)
    assert lifecycle.look_state(run_id) == (1, "running", False, False)
    assert lifecycle.advance_look(run_id, 1, ["legal"], ["qa"]) is True
    assert lifecycle.advance_look(run_id, 1, ["legal"], ["qa"]) is False  # a duplicate step: the claim is taken
    found = statuses(run_id)
    assert found[("qa", 2)] == found[("qa", 3)] == {"not_needed"}
    assert found[("legal", 2)] == {"queued"} and found[("legal", 3)] == {"waiting"}
    assert lifecycle.look_state(run_id)[0] == 2 and lifecycle.look_state(run_id)[2] is True  # look 2 running
    assert lifecycle.job_counts(run_id)["not_needed"] == 4


def test_stopping_marks_every_waiting_job_not_needed_and_a_cancelled_run_never_advances(sequential_run_in_sql):
    from shared import lifecycle

    run_id = sequential_run_in_sql
    lifecycle.cancel_run(run_id)
    assert lifecycle.advance_look(run_id, 1, ["qa", "legal"], []) is False  # cancel wins: waiting stays waiting
    assert statuses(run_id)[("qa", 2)] == {"waiting"}
    assert lifecycle.settle_run_status(run_id) == "cancelled"


def test_a_run_with_waiting_jobs_is_not_completed_and_stopping_completes_it(sequential_run_in_sql):
    from shared import lifecycle

    run_id = sequential_run_in_sql
    assert lifecycle.settle_run_status(run_id) == "running"  # looks to come: not completed
    assert lifecycle.advance_look(run_id, 1, [], ["qa", "legal"]) is True  # every verdict settled: stop
    assert all(s == {"not_needed"} for (agent, look), s in statuses(run_id).items() if look > 1)
    assert lifecycle.look_state(run_id)[0] == 1
    assert lifecycle.settle_run_status(run_id) == "completed"


@pytest.mark.redis
def test_resume_between_two_looks_rearms_the_report_a_halt_sent(sequential_run_in_sql):
    """Halted at a look boundary (its report of what finished claimed the marker), resumed with
    nothing pending: the look step that then stops the run must be able to request the report."""
    import redis
    from sqlalchemy import update

    from producer.runs_cli import resume
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.messaging import report_marker, request_report
    from shared.models import Run, RunStatus

    run_id = sequential_run_in_sql
    client = redis.Redis.from_url(get_settings().redis_url)
    client.delete(report_marker(run_id))
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(status=RunStatus.halted))
    assert request_report(run_id) is True  # the halted look step's report
    resume(run_id)
    assert not client.exists(report_marker(run_id))
    assert request_report(run_id) is True  # the stop's report is sent


def test_paid_calls_are_the_ledgers_calls_for_the_answers_and_judge_calls_beside(sequential_run_in_sql):
    """An errored job counts when its call was ledgered (billed, or outcome unknown), not when it
    was refused before sending; judge calls are counted beside the answers'."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry, Job
    from shared.payments import OUTCOME_UNKNOWN
    from shared.report.data import load_facts
    from shared.report.decision import decision_config
    from shared.report.looks import sequential_run

    run_id = sequential_run_in_sql
    with session_scope() as session:
        jobs = {j.task_id: j for j in session.exec(select(Job).where(Job.run_id == run_id, Job.look == 1))}
        jobs["legal-1-0"].status = "error"  # its call's outcome unknown: ledgered at its worst case
        jobs["legal-1-1"].status = "error"  # refused before sending: nothing ledgered
        for task in ("qa-1-0", "qa-1-1"):
            session.add(CostEntry(run_id=run_id, job_id=jobs[task].id, agent="qa", backend="openai",
                                  operation="inference", cost_usd=0.01))
        session.add(CostEntry(run_id=run_id, job_id=jobs["qa-1-0"].id, agent="qa", backend="openai",
                              operation="judge", cost_usd=0.002))
        session.add(CostEntry(run_id=run_id, job_id=jobs["legal-1-0"].id, agent="legal", backend="openai",
                              operation="inference", cost_usd=0.05, source=f"{OUTCOME_UNKNOWN} (test)"))
    with session_scope() as session:
        facts = load_facts(session, run_id, partial=True)
    run = sequential_run(facts, decision_config(facts), [])
    assert (run.paid_calls, run.planned_calls, run.judge_calls) == (3, 12, 1)


def test_references_kept_to_the_end_hold_up_no_look_only_the_runs_end(monkeypatch, tmp_path):
    """[decision] references = "full": the reference's later jobs queued from the start still run;
    look 1's comparison jobs final -> its look step is due; the report waits for every job."""
    import worker.completion as completion
    import worker.looks as looks_step
    from shared import lifecycle
    from shared.db import migrate, session_scope
    from shared.models import Job, Run, RunStatus

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    migrate()
    config = {"decision": {"design": "sequential", "looks": 2, "references": "full"},
              "backends": {"ft": {"role": "candidate", "baseline": "base"}, "base": {"role": "baseline"},
                           "ref": {"role": "reference"}}}
    with session_scope() as session:
        session.add(Run(id="r2", suite="genesis-custom", status=RunStatus.running, total_jobs=6, look=1, config=config))
        session.flush()
        for backend in ("ft", "base", "ref"):
            for look in (1, 2):
                status = ("ok" if look == 1 else "queued") if backend == "ref" else ("ok" if look == 1 else "waiting")
                session.add(Job(run_id="r2", agent="qa", task_id=f"t{look}", backend=backend, provider="openai",
                                model="m", look=look, status=status))
        session.flush()
        last = session.exec(select(Job.id).where(Job.run_id == "r2", Job.backend == "ft", Job.look == 1)).one()
    assert lifecycle.look_state("r2")[2] is False  # the reference's look-2 job holds up no look
    looked, reported = [], []
    monkeypatch.setattr(completion, "request_look", looked.append)
    monkeypatch.setattr(completion, "request_report", reported.append)
    completion.complete_run_of(last)
    assert looked == ["r2"] and reported == []
    # the look step that stops the run leaves the report to the references' last job
    monkeypatch.setattr(looks_step, "request_report", reported.append)
    monkeypatch.setattr(looks_step, "judge", lambda run_id, look: ([], ["qa"]))
    assert looks_step.take_look("r2") == "stopped" and reported == []
    assert completion.finished_run(last) is None and lifecycle.unfinished("r2")


@pytest.mark.parametrize("references", ["follow", "full"])
def test_submit_records_every_job_and_queues_look_one_references_following_unless_full(monkeypatch, tmp_path,
                                                                                         references):
    from producer import submit as submitting
    from shared.config import get_settings
    from shared.db import migrate, session_scope
    from sqlmodel import select

    from shared.models import Job, Run

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    monkeypatch.setenv("GENESIS_DECISION__REFERENCES", references)
    get_settings.cache_clear()
    migrate()
    settings = submitting.with_design(get_settings(), True, 4)
    selection = submitting.select_work(settings, agents=["qa"], all_agents=False,
                                       backends=["mistral-ft", "mistral-base", "openai"], suite=None, limit=20,
                                       check_keys=False)
    run_id, sent = submitting.record_run(settings, selection)
    with session_scope() as session:
        run = session.get(Run, run_id)
        jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
        assert (run.look, run.total_jobs, run.config["decision"]["design"]) == (1, 60, "sequential")
        assert run.config["decision"]["looks"] == 4 and run.config["decision"]["seed"] == settings.decision.seed
        by_task = {}
        for j in jobs:
            by_task.setdefault(j.task_id, set()).add(j.look)
        assert all(len(v) == 1 for v in by_task.values())  # every backend of a task shares its look
        queued = {j.id for j in jobs if j.status == "queued"}
        assert {job_id for job_id, *_ in sent} == queued  # only the queued ones are sent
        for j in jobs:
            full = references == "full" and j.backend == "openai"
            assert j.status == ("queued" if j.look == 1 or full else "waiting")
    assert len(queued) == (5 * 3 if references == "follow" else 5 * 2 + 20)


def test_looks_without_sequential_is_refused(monkeypatch, tmp_path):
    from producer import submit as submitting
    from shared.config import ConfigError, get_settings

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    with pytest.raises(ConfigError, match="--looks needs --sequential"):
        submitting.with_design(get_settings(), False, 3)
    assert submitting.with_design(get_settings(), False, None).decision.design == "fixed"
