"""Everything a reader must know before trusting the numbers: simulated answers, jobs missing
(in flight, errors, halted), reused answers, weak comparisons, ledger mismatches, the budget level."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.models import JobStatus
from shared.report.decision import MIN_PAIRED_COVERAGE, POOLED
from shared.report.data import RunFacts
from shared.report.format import usd

SMALL_SAMPLE = 10


def simulator_qualities(simulator: dict | None) -> str:
    """The decision of a simulated run is set by these knobs: say so next to it."""
    if not simulator:
        return ""
    patterns = ", ".join(f"{p} {q:.2f}" for p, q in (simulator.get("quality") or {}).items())
    default = simulator.get("default_quality")
    return f" (chance of a correct answer per model: {patterns}; others {default:.2f})" if patterns else ""


def warnings(facts: RunFacts, comparisons: list[dict], decision: dict, budget: dict, costs: dict) -> list[str]:
    run, jobs = facts.run, facts.jobs
    found = []
    simulated = [j for j in jobs if j.simulated]
    if simulated:
        answered = [j for j in jobs if j.simulated is not None]
        found.append(f"Simulated answers: {len(simulated)} of {len(answered)} answers came from the provider simulator, "
                     f"not real models (by backend: {_by_backend(simulated)})"
                     + simulator_qualities(facts.snapshot.get("simulator")) + ".")
    elif run.simulated:  # recorded before answers said so (its submit asked the endpoints)
        found.append("Simulated run: answers came from the provider simulator, not real models"
                     + simulator_qualities(facts.snapshot.get("simulator")) + ".")
    in_flight = [j for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    if in_flight:
        found.append(f"{len(in_flight)} job(s) still queued or running: this report is partial "
                     f"({_breakdown(in_flight)}).")
    errors = [j for j in jobs if j.status == JobStatus.error]
    if errors:
        types = Counter(j.error_type or "unknown" for j in errors)
        found.append(f"{len(errors)} job(s) ended in error ({_breakdown(errors)}); error types: "
                     + ", ".join(f"{name} x{count}" for name, count in types.most_common()) + ".")
    halted = [j for j in jobs if j.status == JobStatus.halted]
    if halted:
        found.append(f"{len(halted)} job(s) halted by the budget guard ({_breakdown(halted)}): "
                     f"`producer budget resume`, then `producer resume {run.id}` finishes them.")
    for comparison in comparisons:
        found.extend(_comparison_warnings(comparison))
    undecided = [a for a in decision["by_agent"] if not any(c["agent"] == a for c in comparisons)]
    if undecided:
        found.append(f"No candidate/baseline pair ran for agent(s) {', '.join(undecided)}: no verdict.")
    reuse = costs["reuse"]
    if reuse["jobs"]:
        found.append(f"{reuse['jobs']} answers reused from runs {', '.join(reuse['source_runs']) or '(not recorded)'} "
                     "(no call, $0); they stay in the decision: they are that model's answers.")
    if abs(costs["ledger_usd"] - costs["total_usd"]) > 1e-9:
        found.append(f"The ledger holds ${costs['ledger_usd']:.6f} for this run but its jobs and judge calls "
                     f"account for ${costs['total_usd']:.6f} (manual entries, or missing ledger rows).")
    if budget["level"] != "ok":
        found.append(f"Budget at {budget['level']}: {usd(budget['spent_usd'])} of "
                     f"{usd(budget['limit_usd'])} spent ({budget['used_fraction']:.0%}).")
    return found


def _by_backend(jobs: list[Any]) -> str:
    return ", ".join(f"{backend} x{count}" for backend, count in sorted(Counter(j.backend for j in jobs).items()))


def _breakdown(jobs: list[Any]) -> str:
    counts = Counter(f"{j.agent}/{j.backend}" for j in jobs)
    return ", ".join(f"{pair} x{count}" for pair, count in sorted(counts.items()))


def _comparison_warnings(c: dict) -> list[str]:
    who = "all agents pooled" if c["agent"] == POOLED else f"agent {c['agent']}"
    label = f"{who}, {c['candidate']} vs {c['baseline']}"
    if c["n"] == 0:
        return [f"{label}: no task paired (each missing, or failed by the baseline): INCONCLUSIVE."]
    found = []
    if c["paired_coverage"] < MIN_PAIRED_COVERAGE:
        found.append(f"{label}: only {c['n']} of {c['tasks']} tasks paired (the rest never attempted or failed "
                     f"by the baseline; {c['paired_coverage']:.0%} < {MIN_PAIRED_COVERAGE:.0%}): INCONCLUSIVE.")
    if not c["baseline_accuracy"]:
        found.append(f"{label}: baseline accuracy is 0: any improvement above 0 meets the relative threshold.")
    if c["n"] < SMALL_SAMPLE:
        found.append(f"{label}: only n={c['n']} paired tasks; the comparison is weak.")
    if c.get("candidate_errors"):
        found.append(f"{label}: {c['candidate_errors']} candidate error(s) counted as a score of 0; the "
                     "answered-only comparison is in the decision section.")
    return found
