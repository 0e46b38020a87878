"""Assembles report data from SQL: facts (data), verdicts (decision), warnings, drill-down.
The result is JSON-ready and is what every renderer, the SQL copy and the CLI read."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlmodel import Session

from shared.looks import is_sequential
from shared.models import JobStatus, iso, utcnow
from shared.report import data as facts_
from shared.report import decision as rule_
from shared.report import decision_text as words
from shared.report.costs import NOTHING, run_costs
from shared.report.drilldown import disagreements
from shared.report.epochs import epochs_section
from shared.report.history import earlier_decisions
from shared.report.looks import judge_looks, sequential_run
from shared.report.sequential_types import SequentialRun
from shared.report.warnings import warnings


def build_report_data(session: Session, run_id: str, *, partial: bool = False) -> dict[str, Any]:
    """Everything the report shows. Refuses (ConfigError) a run still in flight unless
    `partial`; an unknown run raises UnknownRunError."""
    facts = facts_.load_facts(session, run_id, partial=partial)
    run, jobs = facts.run, facts.jobs
    counts = facts_.status_counts(jobs)
    rule = rule_.decision_config(facts)
    backend_config = facts.snapshot.get("backends", {})
    comparisons, sequential = _judged(facts, rule)
    decision = rule_.decide(facts.agents, comparisons)
    budget = facts_.budget_facts(session, run, jobs)
    costs = run_costs(jobs, facts.judge, budget["run_cost_usd"], facts.snapshot, facts.keys)
    in_flight = counts[JobStatus.queued] + counts[JobStatus.running]
    data = {
        "run_id": run.id,
        "suite": run.suite,
        "status": run.status,
        # Answer by answer (each job records whether the simulator answered it); runs recorded
        # before that column existed keep what their submit found.
        "simulated": any(j.simulated for j in jobs) or bool(run.simulated and not any(j.simulated is not None for j in jobs)),
        "simulated_answers": sum(1 for j in jobs if j.simulated),
        "complete": in_flight + counts[JobStatus.halted] + counts[JobStatus.waiting] == 0,
        "partial": partial,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at) if run.finished_at else None,
        "generated_at": iso(utcnow()),
        "total_jobs": len(jobs),
        "counts": {status.value: count for status, count in counts.items()},
        "min_improvement": rule.min_improvement,
        "confidence": rule.confidence,
        "decision_rule": words.rule_text(rule),
        "decision": decision,
        "headlines": [c["headline"] for c in comparisons],
        "sensitivity": [words.sensitivity_line(c) for c in comparisons],
        "power": [words.power_line(c) for c in comparisons],
        "earlier_decisions": earlier_decisions(session, run, comparisons),
        "comparisons": comparisons,
        "epochs": epochs_section(facts, rule, comparisons),
        "backends": [facts_.backend_row(a, b, facts.by_pair[(a, b)], backend_config, facts.judge.get((a, b), NOTHING))
                     for a, b in facts.pairs],
        "by_backend": facts_.backend_summary(facts),
        "by_difficulty": [row for a, b in facts.pairs for row in facts_.difficulty_rows(a, b, facts.by_pair[(a, b)])],
        "disagreements": disagreements(session, facts, comparisons),
        "budget": budget,
        "costs": costs,
        "warnings": warnings(facts, comparisons, decision, budget, costs),
    }
    if sequential is not None:  # a sequential run's looks (SequentialRun as the dict report.json holds); fixed: no key
        data["sequential"] = asdict(sequential)
    return data


def _judged(facts: facts_.RunFacts, rule) -> tuple[list[dict], SequentialRun | None]:
    """The verdicts the report shows: a fixed run's comparisons; a sequential run's are the
    design's, each at the look it stopped at (or its last), with its repeated interval."""
    if not is_sequential(facts.snapshot) or facts.run.look is None:
        return rule_.comparisons(facts, rule), None
    judged = judge_looks(facts, rule, facts.run.look, plan=True)
    return [j.rows[-1] for j in judged if j.rows], sequential_run(facts, rule, judged)
