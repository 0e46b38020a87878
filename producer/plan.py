"""Power before paying (`submit --dry-run`): per agent and pooled, the smallest improvement the
selected suite can confirm at 80% power, at the same error shares the report will use, from
the baseline model's accuracy in its last run in SQL (or the configured assumption), and
whether the suite can reach GO at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from shared.config import Settings
from shared.models import Job, JobStatus, Run
from shared.power import can_ever_go, confirmable_by_rule
from shared.report.decision import POOLED, by_rule_text, error_shares, go_promise


def last_accuracy(settings: Settings, agent: str, model: str) -> tuple[float, str] | None:
    """(mean score, run id) of the newest run with ok answers of `model` for `agent`; None when
    there is none (or no database to ask)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import session_scope

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return None  # a dry run creates no database file
    try:
        with session_scope(settings.database_url) as session:
            latest = session.exec(
                select(Job.run_id).join(Run, Run.id == Job.run_id)
                .where(Job.agent == agent, Job.model == model, Job.status == JobStatus.ok, Job.score.is_not(None))
                .order_by(Run.created_at.desc()).limit(1)
            ).first()
            if latest is None:
                return None
            mean = session.exec(
                select(func.avg(Job.score))
                .where(Job.run_id == latest, Job.agent == agent, Job.model == model, Job.status == JobStatus.ok,
                       Job.score.is_not(None))
            ).one()
            return float(mean), latest
    except SQLAlchemyError:
        return None


def decision_power(settings: Settings, selection) -> dict[str, Any]:
    """Rows per (candidate, agent) and pooled per candidate, as `--json` prints them."""
    rule = settings.decision
    config = settings.backends
    pairs = [(b, config[b].baseline) for b in selection.backends
             if config[b].role == "candidate" and config[b].baseline in selection.backends]
    tasks = {a: len(selection.suite.tasks_for(a, selection.limit)) for a in selection.agents}
    per_agent, per_pooled = error_shares(len(pairs) * len(selection.agents), len(pairs), rule.confidence)
    rows = []
    for candidate, baseline in pairs:
        accuracies = {}
        for agent in selection.agents:
            found = last_accuracy(settings, agent, settings.model_for(baseline, agent))
            accuracy, source = (found[0], f"run {found[1]}") if found else (rule.assumed_baseline_accuracy, "assumed")
            accuracies[agent] = accuracy
            rows.append(_row(agent, candidate, baseline, tasks[agent], accuracy, source, per_agent, rule))
        total = sum(tasks.values())
        pooled_accuracy = sum(accuracies[a] * tasks[a] for a in selection.agents) / total if total else None
        sources = {r["baseline_accuracy_source"] for r in rows if r["candidate"] == candidate and r["agent"] != POOLED}
        rows.append(_row(POOLED, candidate, baseline, total, pooled_accuracy,
                         "assumed" if sources == {"assumed"} else "task-weighted over the agents", per_pooled, rule))
    return {"power": 0.8, "confidence": rule.confidence, "assumed_loss_share": rule.assumed_loss_share,
            "assumed_baseline_accuracy": rule.assumed_baseline_accuracy, "go": rule.go,
            "go_promise": go_promise(rule.go, 1 - rule.confidence), "rows": rows}


def _row(agent, candidate, baseline, tasks, accuracy, source, alpha_each, rule) -> dict[str, Any]:
    by_rule = confirmable_by_rule(tasks, accuracy, rule, alpha_each)
    smallest = by_rule[rule.go]
    return {
        "agent": agent, "candidate": candidate, "baseline": baseline, "tasks": tasks,
        "baseline_accuracy": accuracy, "baseline_accuracy_source": source, "alpha_each": alpha_each,
        "can_ever_go": can_ever_go(tasks, alpha_each),
        "smallest_confirmable_abs": smallest,
        "smallest_confirmable_by_go": by_rule,
        "smallest_confirmable_rel": smallest / accuracy if smallest is not None and accuracy else None,
    }


def power_lines(power: dict) -> list[str]:
    """Plain words for the dry run's table."""
    lines = []
    for r in power["rows"]:
        who = "all agents pooled" if r["agent"] == POOLED else r["agent"]
        head = f"{who} ({r['candidate']} vs {r['baseline']}, {r['tasks']} tasks"
        accuracy = f"baseline accuracy {r['baseline_accuracy']:.0%} ({r['baseline_accuracy_source']})"
        if not r["can_ever_go"]:
            lines.append(f"{head}): cannot reach GO at all: too few tasks, even if the candidate wins every one")
        elif not any(r["smallest_confirmable_by_go"].values()):
            lines.append(f"{head}): cannot confirm any improvement at 80% power; {accuracy}")
        else:
            lines.append(f"{head}): confirms at 80% power {by_rule_text(r['smallest_confirmable_by_go'], power['go'])}; "
                         f"{accuracy}")
    return lines
