"""The comparison report (design §9). Built from SQL rows only, so it can be rebuilt at any time:
by the chord callback when a run completes, or by `producer report` for a run still in flight."""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from statistics import fmean
from string import Template
from typing import Any, Hashable, Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from shared.budget import recorded_budget_state
from shared.config import BudgetConfig, ConfigError, DecisionConfig, get_settings
from shared.db import session_scope
from shared.models import BudgetEvent, CostEntry, Job, JobStatus, Run, RunStatus, utcnow
from shared.stats import paired_t_test, percentile

GO, NO_GO, INCONCLUSIVE = "GO", "NO-GO", "INCONCLUSIVE"
LATEST_REPORT_NAME = "finetuning_quality_report.md"
MIN_PAIRED_COVERAGE = 0.8  # below this share of a pair's tasks answered by both, no verdict
SMALL_SAMPLE = 10
DIFFICULTY_ORDER = ("easy", "medium", "hard")
# Rounding must not flip a verdict that sits exactly on the threshold (e.g. 0.54 vs 0.50).
_DECISION_TOLERANCE = 1e-9


class UnknownRunError(ConfigError, KeyError):
    """A KeyError for callers that look runs up, a one-line ConfigError (exit 2) for the CLI."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- the data ----------------------------------------------------------------------------


def build_report_data(session: Session, run_id: str, *, partial: bool = False) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data.

    Refuses (ConfigError) a run that is still queued or running with jobs in flight unless
    `partial`; a halted, cancelled or completed run always gets its report of what finished.
    """
    run = session.get(Run, run_id)
    if run is None:
        raise UnknownRunError(f"no run with id {run_id!r}")
    jobs = list(session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)))
    counts = _status_counts(jobs)
    in_flight = counts[JobStatus.queued] + counts[JobStatus.running]
    if in_flight and not partial and run.status in (RunStatus.queued, RunStatus.running):
        raise ConfigError(
            f"run {run_id} still has {in_flight} job(s) queued or running: "
            "use --partial for a report of what has finished so far"
        )

    snapshot = run.config or {}
    backend_config: dict[str, dict] = snapshot.get("backends", {})
    min_improvement = DecisionConfig.model_validate(snapshot.get("decision") or {}).min_improvement
    agents = _ordered(run.agents, (j.agent for j in jobs))
    backends = _ordered(run.backends, (j.backend for j in jobs))
    by_pair: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        by_pair[(job.agent, job.backend)].append(job)
    pairs = [(a, b) for a in agents for b in backends if (a, b) in by_pair]

    candidates = [
        (name, backend_config[name]["baseline"])
        for name in backends
        if backend_config.get(name, {}).get("role") == "candidate"
        and backend_config[name].get("baseline")
    ]
    comparisons = _comparisons(agents, candidates, by_pair, min_improvement)
    decision = _decision(agents, comparisons)
    backend_rows = [_backend_row(a, b, by_pair[(a, b)], backend_config) for a, b in pairs]
    budget = _budget(session, run, snapshot, jobs)
    return {
        "run_id": run.id,
        "suite": run.suite,
        "status": run.status,
        "simulated": run.simulated,
        "complete": in_flight + counts[JobStatus.halted] == 0,
        "partial": partial,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at) if run.finished_at else None,
        "generated_at": _iso(utcnow()),
        "total_jobs": len(jobs),
        "counts": {status.value: count for status, count in counts.items()},
        "min_improvement": min_improvement,
        "decision_rule": _rule_text(min_improvement),
        "decision": decision,
        "comparisons": comparisons,
        "backends": backend_rows,
        "by_difficulty": [row for a, b in pairs for row in _difficulty_rows(a, b, by_pair[(a, b)])],
        "budget": budget,
        "warnings": _warnings(run, jobs, comparisons, decision, budget),
    }


def _status_counts(jobs: list[Job]) -> dict[JobStatus, int]:
    seen = Counter(job.status for job in jobs)
    return {status: seen.get(status.value, 0) for status in JobStatus}


def _ordered(preferred: Iterable[str], found: Iterable[str]) -> list[str]:
    """The run's own order first, then anything the jobs name that the run row does not."""
    present = set(found)
    listed = [name for name in dict.fromkeys(preferred) if name in present]
    return listed + sorted(present - set(listed))


def _answered(job: Job | None) -> bool:
    """An ok job; one without a score (a worker bug) is not counted as answered."""
    return job is not None and job.status == JobStatus.ok and job.score is not None


def _scored(jobs: Iterable[Job]) -> list[Job]:
    return [j for j in jobs if _answered(j)]


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def _backend_row(agent: str, backend: str, jobs: list[Job], config: dict[str, dict]) -> dict:
    ok = _scored(jobs)
    latencies = [j.latency_ms for j in ok if j.latency_ms is not None]
    billed = [j.cost_usd for j in jobs if j.cost_usd is not None]
    cost = sum(billed)
    return {
        "agent": agent,
        "backend": backend,
        "model": Counter(j.model for j in jobs).most_common(1)[0][0],
        "role": config.get(backend, {}).get("role"),
        "jobs": len(jobs),
        "n": len(ok),
        "ok": len(ok),
        "errors": sum(j.status == JobStatus.error for j in jobs),
        "halted": sum(j.status == JobStatus.halted for j in jobs),
        "accuracy": _mean([j.score for j in ok]),
        "latency_p50_ms": percentile(latencies, 50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 95) if latencies else None,
        "input_tokens": sum(j.input_tokens or 0 for j in jobs),
        "output_tokens": sum(j.output_tokens or 0 for j in jobs),
        "cost_usd": cost,
        "cost_per_request_usd": cost / len(billed) if billed else None,
    }


def _difficulty_rows(agent: str, backend: str, jobs: list[Job]) -> list[dict]:
    by_difficulty: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_difficulty[job.difficulty].append(job)
    rank = {name: i for i, name in enumerate(DIFFICULTY_ORDER)}
    rows = []
    for difficulty in sorted(by_difficulty, key=lambda d: (rank.get(d, len(rank)), d)):
        ok = _scored(by_difficulty[difficulty])
        rows.append(
            {
                "agent": agent,
                "backend": backend,
                "difficulty": difficulty,
                "n": len(ok),
                "accuracy": _mean([j.score for j in ok]),
            }
        )
    return rows


def _comparisons(
    agents: list[str],
    candidates: list[tuple[str, str]],
    by_pair: dict[tuple[str, str], list[Job]],
    min_improvement: float,
) -> list[dict]:
    """One comparison per agent and candidate, then one per candidate over all agents pooled."""
    rows = []
    for candidate, baseline in candidates:
        pooled_candidate: dict[Hashable, Job] = {}
        pooled_baseline: dict[Hashable, Job] = {}
        for agent in agents:
            cand = {j.task_id: j for j in by_pair.get((agent, candidate), [])}
            base = {j.task_id: j for j in by_pair.get((agent, baseline), [])}
            if not cand:
                continue
            rows.append(_compare(agent, candidate, baseline, cand, base, min_improvement))
            pooled_candidate.update({(agent, task): j for task, j in cand.items()})
            pooled_baseline.update({(agent, task): j for task, j in base.items()})
        if pooled_candidate:
            rows.append(
                _compare(
                    "ALL", candidate, baseline, pooled_candidate, pooled_baseline, min_improvement
                )
            )
    return rows


def _compare(
    agent: str,
    candidate: str,
    baseline: str,
    candidate_jobs: dict[Hashable, Job],
    baseline_jobs: dict[Hashable, Job],
    min_improvement: float,
) -> dict:
    """Paired over the tasks both backends answered, so easy and hard tasks weigh the same on
    each side and a missing answer cannot flatter either one."""
    tasks = candidate_jobs.keys() | baseline_jobs.keys()
    paired = sorted(
        key
        for key in tasks
        if _answered(candidate_jobs.get(key)) and _answered(baseline_jobs.get(key))
    )
    row: dict[str, Any] = {
        "agent": agent,
        "candidate": candidate,
        "baseline": baseline,
        "tasks": len(tasks),
        "n": len(paired),
        "paired_coverage": len(paired) / len(tasks) if tasks else 0.0,
        "candidate_accuracy": None,
        "baseline_accuracy": None,
        "improvement_rel": None,
        "improvement_abs": None,
        "ci95_abs": None,
        "p_value": None,
    }
    if paired:
        candidate_scores = [candidate_jobs[key].score for key in paired]
        baseline_scores = [baseline_jobs[key].score for key in paired]
        test = paired_t_test(candidate_scores, baseline_scores)
        candidate_accuracy, baseline_accuracy = fmean(candidate_scores), fmean(baseline_scores)
        improvement = candidate_accuracy - baseline_accuracy
        row.update(
            candidate_accuracy=candidate_accuracy,
            baseline_accuracy=baseline_accuracy,
            improvement_abs=improvement,
            improvement_rel=improvement / baseline_accuracy if baseline_accuracy else None,
            # A difference of two accuracies lies in [-1, 1]; t intervals at tiny n can overrun it.
            ci95_abs=[max(test.ci95[0], -1.0), min(test.ci95[1], 1.0)] if test.ci95 else None,
            p_value=test.p_value,
        )
    row["decision"] = _verdict(row, min_improvement)
    return row


def _verdict(comparison: dict, min_improvement: float) -> str:
    if comparison["n"] == 0 or comparison["paired_coverage"] < MIN_PAIRED_COVERAGE:
        return INCONCLUSIVE
    if comparison["improvement_rel"] is None:  # baseline accuracy 0: relative gain undefined
        return INCONCLUSIVE
    return GO if comparison["improvement_rel"] >= min_improvement - _DECISION_TOLERANCE else NO_GO


def _combine(verdicts: list[str]) -> str:
    """Several candidates for one agent: one that passes is enough to ship."""
    if GO in verdicts:
        return GO
    if not verdicts or INCONCLUSIVE in verdicts:
        return INCONCLUSIVE
    return NO_GO


def _decision(agents: list[str], comparisons: list[dict]) -> dict[str, Any]:
    by_agent = {
        agent: _combine([c["decision"] for c in comparisons if c["agent"] == agent])
        for agent in agents
    }
    pooled = _combine([c["decision"] for c in comparisons if c["agent"] == "ALL"])
    overall = INCONCLUSIVE if INCONCLUSIVE in by_agent.values() else pooled
    return {"overall": overall, "by_agent": by_agent}


def _rule_text(min_improvement: float) -> str:
    threshold = f"{min_improvement * 100:g}%"
    return (
        f"GO when the fine-tuned (candidate) model's accuracy beats its baseline's by at least "
        f"{threshold} relative ((candidate - baseline) / baseline), both measured on the same "
        "tasks (paired: tasks both answered ok); NO-GO otherwise. INCONCLUSIVE when no task is "
        f"paired, fewer than {MIN_PAIRED_COVERAGE:.0%} of the pair's tasks are paired, or the "
        "baseline's accuracy is 0. An agent with several candidates is GO if any of them is. "
        "Overall: the same rule on all agents' paired tasks pooled, but INCONCLUSIVE if any "
        "agent is INCONCLUSIVE. The 95% CI and p-value (paired Student t) are shown, not gated on."
    )


def _budget(session: Session, run: Run, snapshot: dict, jobs: list[Job]) -> dict[str, Any]:
    """The budget is global, so spend counts every ledger row; this run's share is beside it,
    cross-checked against what its jobs recorded."""
    config = BudgetConfig.model_validate(snapshot.get("budget") or {})
    recorded = recorded_budget_state(session)
    limit_usd = recorded.limit_usd if recorded.limit_usd is not None else config.limit_usd
    total = func.coalesce(func.sum(CostEntry.cost_usd), 0.0)
    spent = float(session.exec(select(total)).one())
    run_cost = float(session.exec(select(total).where(CostEntry.run_id == run.id)).one())
    fraction = spent / limit_usd
    thresholds = {name: getattr(config, name) for name in ("warning", "critical", "emergency")}
    crossed = [name for name, share in thresholds.items() if fraction >= share]
    level = "emergency" if recorded.halted else (crossed[-1] if crossed else "ok")  # halted: no room left
    events = session.exec(
        select(BudgetEvent)
        .where(BudgetEvent.run_id == run.id)
        .order_by(BudgetEvent.at, BudgetEvent.id)
    )
    return {
        "limit_usd": limit_usd,
        "spent_usd": spent,
        "used_fraction": fraction,
        "level": level,
        "halted": recorded.halted,
        "halt_reason": recorded.halt_reason,
        "remaining_usd": max(0.0, limit_usd * config.emergency - spent),  # before the threshold
        "thresholds": thresholds,
        "run_cost_usd": run_cost,
        "jobs_cost_usd": sum(j.cost_usd or 0.0 for j in jobs),
        "events": [
            {
                "at": _iso(e.at),
                "kind": e.kind,
                "level": e.level,
                "spent_usd": e.spent_usd,
                "limit_usd": e.limit_usd,
                "message": e.message,
            }
            for e in events
        ],
    }


def _simulator_qualities(simulator: dict | None) -> str:
    """The decision of a simulated run is set by these knobs: say so next to it."""
    if not simulator:
        return ""
    patterns = ", ".join(f"{p} {q:.2f}" for p, q in (simulator.get("quality") or {}).items())
    default = simulator.get("default_quality")
    return f" (chance of a correct answer per model: {patterns}; others {default:.2f})" if patterns else ""


def _warnings(
    run: Run, jobs: list[Job], comparisons: list[dict], decision: dict, budget: dict
) -> list[str]:
    warnings = []
    if run.simulated:
        warnings.append("Simulated run: answers came from the provider simulator, not real models"
                        + _simulator_qualities(run.config.get("simulator")) + ".")
    in_flight = [j for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    if in_flight:
        warnings.append(
            f"{len(in_flight)} job(s) still queued or running: this report is partial "
            f"({_breakdown(in_flight)})."
        )
    errors = [j for j in jobs if j.status == JobStatus.error]
    if errors:
        types = Counter(j.error_type or "unknown" for j in errors)
        warnings.append(
            f"{len(errors)} job(s) ended in error ({_breakdown(errors)}); error types: "
            + ", ".join(f"{name} x{count}" for name, count in types.most_common())
            + "."
        )
    halted = [j for j in jobs if j.status == JobStatus.halted]
    if halted:
        warnings.append(
            f"{len(halted)} job(s) halted by the budget guard ({_breakdown(halted)}): "
            f"`producer budget resume`, then `producer resume {run.id}` finishes them."
        )
    for comparison in comparisons:
        warnings.extend(_comparison_warnings(comparison))
    undecided = [a for a in decision["by_agent"] if not any(c["agent"] == a for c in comparisons)]
    if undecided:
        warnings.append(
            f"No candidate/baseline pair ran for agent(s) {', '.join(undecided)}: no verdict."
        )
    if abs(budget["run_cost_usd"] - budget["jobs_cost_usd"]) > 1e-9:
        warnings.append(
            f"The ledger holds ${budget['run_cost_usd']:.6f} for this run but its jobs recorded "
            f"${budget['jobs_cost_usd']:.6f} (manual or judge entries, or missing ledger rows)."
        )
    if budget["level"] != "ok":
        warnings.append(
            f"Budget at {budget['level']}: {_usd(budget['spent_usd'])} of "
            f"{_usd(budget['limit_usd'])} spent ({budget['used_fraction']:.0%})."
        )
    return warnings


def _breakdown(jobs: list[Job]) -> str:
    counts = Counter(f"{j.agent}/{j.backend}" for j in jobs)
    return ", ".join(f"{pair} x{count}" for pair, count in sorted(counts.items()))


def _comparison_warnings(c: dict) -> list[str]:
    who = "all agents pooled" if c["agent"] == "ALL" else f"agent {c['agent']}"
    label = f"{who}, {c['candidate']} vs {c['baseline']}"
    if c["n"] == 0:
        return [f"{label}: no task answered ok by both: INCONCLUSIVE."]
    warnings = []
    if c["paired_coverage"] < MIN_PAIRED_COVERAGE:
        warnings.append(
            f"{label}: only {c['n']} of {c['tasks']} tasks answered ok by both "
            f"({c['paired_coverage']:.0%} < {MIN_PAIRED_COVERAGE:.0%}): INCONCLUSIVE."
        )
    if not c["baseline_accuracy"]:
        warnings.append(f"{label}: baseline accuracy is 0: the relative improvement is undefined.")
    if c["n"] < SMALL_SAMPLE:
        warnings.append(f"{label}: only n={c['n']} paired tasks; the comparison is weak.")
    ci = c["ci95_abs"]
    if ci and ci[0] <= 0.0 <= ci[1] and ci[0] != ci[1]:
        warnings.append(
            f"{label}: the 95% CI of the difference {_ci(ci)} includes 0 "
            "(not significant at the 5% level)."
        )
    return warnings


def _iso(moment: datetime) -> str:
    """SQLite hands datetimes back naive; they were written as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


# --- rendering ---------------------------------------------------------------------------
# One document model, two renderers: the markdown and the HTML can never say different things.


def _document(data: dict) -> list[tuple]:
    counts = data["counts"]
    blocks: list[tuple] = [
        ("title", f"Fine-tuning quality report: run {data['run_id']}"),
        (
            "p",
            f"Suite {data['suite']} · run created {_date(data['created_at'])} · status "
            f"{data['status']} · {data['total_jobs']} jobs · report generated "
            f"{_date(data['generated_at'])}",
        ),
    ]
    if data["simulated"]:
        blocks.append(
            ("banner", "SIMULATED RUN: answers came from the provider simulator, not real models.")
        )
    if not data["complete"]:
        blocks.append(
            (
                "banner",
                f"INCOMPLETE: {counts['halted']} job(s) halted, "
                f"{counts['queued'] + counts['running']} queued or running. See the warnings.",
            )
        )
    decision = data["decision"]
    blocks += [
        ("h2", "Decision"),
        ("verdicts", [("Overall", decision["overall"]), *decision["by_agent"].items()]),
        ("p", "Rule: " + data["decision_rule"]),
        ("h2", "Candidate vs baseline"),
        (
            "table",
            ["Agent", "Candidate", "Baseline", "n (paired)", "Candidate acc.", "Baseline acc.",
             "Improvement (rel)", "Improvement (abs)", "95% CI (abs)", "p", "Decision"],
            [
                [c["agent"], c["candidate"], c["baseline"], f"{c['n']} / {c['tasks']}",
                 _pct(c["candidate_accuracy"]), _pct(c["baseline_accuracy"]),
                 _pct(c["improvement_rel"], signed=True), _pp(c["improvement_abs"]),
                 _ci(c["ci95_abs"]), _p(c["p_value"]), c["decision"]]
                for c in data["comparisons"]
            ],
        ),
        ("h2", "Per agent and backend"),
        ("p", "Accuracy is the mean score over ok jobs (n); latency percentiles interpolate "
              "linearly between ranks over ok jobs; cost per request is over billed calls."),
        (
            "table",
            ["Agent", "Backend", "Model", "Role", "n", "Errors", "Halted", "Accuracy",
             "p50", "p95", "Input tok.", "Output tok.", "Cost", "Cost / request"],
            [
                [b["agent"], b["backend"], b["model"], b["role"] or "", str(b["n"]),
                 str(b["errors"]), str(b["halted"]), _pct(b["accuracy"]),
                 _ms(b["latency_p50_ms"]), _ms(b["latency_p95_ms"]), f"{b['input_tokens']:,}",
                 f"{b['output_tokens']:,}", _usd(b["cost_usd"]), _usd(b["cost_per_request_usd"])]
                for b in data["backends"]
            ],
        ),
        ("h2", "By difficulty"),
        _difficulty_table(data["by_difficulty"]),
        ("h2", "Budget"),
        *_budget_blocks(data["budget"]),
        ("h2", "Warnings"),
        ("list", data["warnings"]) if data["warnings"] else ("p", "None."),
    ]
    return blocks


def _difficulty_table(rows: list[dict]) -> tuple:
    levels = list(dict.fromkeys(r["difficulty"] for r in rows))
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r in rows:
        cells[(r["agent"], r["backend"])][r["difficulty"]] = f"{_pct(r['accuracy'])} (n={r['n']})"
    return (
        "table",
        ["Agent", "Backend", *levels],
        [[agent, backend, *(row.get(level, "") for level in levels)]
         for (agent, backend), row in cells.items()],
    )


def _budget_blocks(budget: dict) -> list[tuple]:
    t = budget["thresholds"]
    blocks: list[tuple] = [
        (
            "list",
            [
                f"Spent (all runs): {_usd(budget['spent_usd'])} of {_usd(budget['limit_usd'])} "
                f"({budget['used_fraction']:.1%}), {_usd(budget['remaining_usd'])} left before the emergency "
                f"threshold, level {budget['level']}"
                + (f" — queues HALTED by the budget guard: {budget['halt_reason']}" if budget["halted"] else ""),
                f"This run: {_usd(budget['run_cost_usd'])} in the ledger, "
                f"{_usd(budget['jobs_cost_usd'])} recorded on its jobs",
                f"Thresholds: warning {t['warning']:.0%}, critical {t['critical']:.0%}, "
                f"emergency {t['emergency']:.0%} (spend is refused beyond emergency)",
            ],
        )
    ]
    if budget["events"]:
        blocks.append(
            (
                "table",
                ["At", "Kind", "Level", "Spent", "Limit", "Message"],
                [[_date(e["at"]), e["kind"], e["level"], _usd(e["spent_usd"]),
                  _usd(e["limit_usd"]), e["message"]] for e in budget["events"]],
            )
        )
    return blocks


def _pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def _pp(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} pp"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}] pp"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _date(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _md(text: str) -> str:
    """Keeps table cells in one cell and stops raw HTML (e.g. `<script>`) reaching a renderer."""
    return (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")
    )


def render_markdown(data: dict) -> str:
    # The first line lets write_report tell which run the latest copy belongs to.
    lines = [f"<!-- genesis-bench run_id={data['run_id']} created_at={data['created_at']} -->"]
    for block in _document(data):
        match block:
            case ("title", text):
                lines += [f"# {_md(text)}", ""]
            case ("h2", text):
                lines += [f"## {_md(text)}", ""]
            case ("p", text):
                lines += [_md(text), ""]
            case ("banner", text):
                lines += [f"> **{_md(text)}**", ""]
            case ("verdicts", items):
                lines += [f"- {_md(label)}: **{verdict}**" for label, verdict in items] + [""]
            case ("list", items):
                lines += [f"- {_md(item)}" for item in items] + [""]
            case ("table", headers, rows):
                lines.append("| " + " | ".join(_md(h) for h in headers) + " |")
                lines.append("|" + "---|" * len(headers))
                lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
                lines.append("")
    return "\n".join(lines)


_HTML_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; color: #1f2328; max-width: 90rem; margin: 2rem auto;
       padding: 0 1rem; }
table { border-collapse: collapse; margin: 0 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f6f8fa; }
.banner { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.6rem 1rem; font-weight: 600; }
.go { color: #1a7f37; } .no-go { color: #cf222e; } .inconclusive { color: #9a6700; }
</style>
</head>
<body>
$body
</body>
</html>
"""
)


def render_html(data: dict) -> str:
    """One self-contained page: inline CSS, no script, every piece of data escaped."""
    esc = html.escape
    parts = []
    for block in _document(data):
        match block:
            case ("title", text):
                parts.append(f"<h1>{esc(text)}</h1>")
            case ("h2", text):
                parts.append(f"<h2>{esc(text)}</h2>")
            case ("p", text):
                parts.append(f"<p>{esc(text)}</p>")
            case ("banner", text):
                parts.append(f'<p class="banner">{esc(text)}</p>')
            case ("verdicts", items):
                verdicts = "".join(
                    f"<li>{esc(label)}: "
                    f'<strong class="{esc(verdict.lower())}">{esc(verdict)}</strong></li>'
                    for label, verdict in items
                )
                parts.append(f"<ul>{verdicts}</ul>")
            case ("list", items):
                parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>")
            case ("table", headers, rows):
                head = "".join(f"<th>{esc(h)}</th>" for h in headers)
                body = "".join(
                    "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    title = f"Fine-tuning quality report: run {data['run_id']}"
    return _HTML_PAGE.substitute(title=esc(title), body="\n".join(parts))


# --- files -------------------------------------------------------------------------------


def write_report(data: dict, reports_dir: str | Path) -> dict[str, Path]:
    """Writes reports/<run_id>/report.{md,json,html} and the latest-run copy, each atomically
    (two builders of the same run may race). Rebuilding an older run's report leaves the
    latest copy to the newer run."""
    root = Path(reports_dir)
    run_dir = root / data["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": run_dir / "report.md",
        "json": run_dir / "report.json",
        "html": run_dir / "report.html",
        "latest": root / LATEST_REPORT_NAME,
    }
    markdown = render_markdown(data)
    _atomic_write(paths["md"], markdown)
    _atomic_write(paths["json"], json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(paths["html"], render_html(data))
    if not _newer_run_holds(paths["latest"], data):
        _atomic_write(paths["latest"], markdown)
    return paths


_MARKER = re.compile(r"run_id=(\S+) created_at=(\S+) -->")


def _newer_run_holds(latest: Path, data: dict) -> bool:
    try:
        with latest.open(encoding="utf-8") as handle:
            marker = _MARKER.search(handle.readline())
    except FileNotFoundError:
        return False
    if marker is None or marker.group(1) == data["run_id"]:
        return False
    try:
        return datetime.fromisoformat(marker.group(2)) > datetime.fromisoformat(data["created_at"])
    except ValueError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, 0o644)  # reports are for sharing; temp files start owner-only
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def generate_report(
    run_id: str,
    *,
    database_url: str | None = None,
    reports_dir: str | Path | None = None,
    partial: bool = False,
) -> dict[str, Path]:
    """Build from SQL and write the files; the Run row is left to the caller to update."""
    with session_scope(database_url) as session:
        data = build_report_data(session, run_id, partial=partial)
    if reports_dir is None:
        reports_dir = get_settings().reports_dir
    return write_report(data, reports_dir)
