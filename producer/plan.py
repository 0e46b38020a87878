"""Power before paying (`submit --dry-run`): per agent and pooled, the smallest improvement the
selected suite can confirm at 80% power, at the same error shares the report will use, from
the baseline model's accuracy in its last run in SQL (or the configured assumption), and
whether the suite can reach GO at all; with --epochs k, what k epochs buy, from the within-task
variance share of the candidate's newest run with epochs in SQL (or the configured assumption).
Under [decision] design = "sequential": the calls and dollars the design is expected to pay
under no gain, at the bar and at the design alternative, beside the fixed design's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func
from sqlmodel import col, select

from shared.config import Settings
from shared.models import Job, JobStatus, Run
from shared.epochs import epochs_gain, task_means
from shared.power import POWER, can_ever_go, confirmable_by_rule
from shared.report.decision import POOLED, epoch_split, error_shares
from shared.report.decision_text import by_rule_text, go_promise


def _ask(settings: Settings, read: Callable[[Any], Any]) -> Any:
    """`read(session)` on the configured database; None when there is no database to ask (a dry
    run creates no SQLite file) or it does not answer."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import session_scope

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return None
    try:
        with session_scope(settings.database_url) as session:
            return read(session)
    except SQLAlchemyError:
        return None


def last_accuracy(settings: Settings, agent: str, model: str) -> tuple[float, str] | None:
    """(mean score, run id) of the newest run with ok answers of `model` for `agent`; None when
    there is none (or no database to ask)."""
    def read(session) -> tuple[float, str] | None:
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

    return _ask(settings, read)


def prior_within_share(settings: Settings, candidate: str, baseline: str) -> tuple[float, str] | None:
    """(w, run id): the within-task share W / (W + B) of one epoch's paired difference variance
    (shared.epochs.variance_split, the report's own split over its agents' tasks pooled) in the
    newest run in SQL where `candidate` ran several epochs against `baseline`; None when none did."""
    def read(session) -> tuple[float, str] | None:
        latest = session.exec(
            select(Job.run_id).join(Run, Run.id == Job.run_id).where(Job.backend == candidate, Job.epoch > 1)
            .order_by(Run.created_at.desc()).limit(1)
        ).first()
        if latest is None:
            return None
        rows = session.exec(
            select(Job.agent, Job.task_id, Job.epoch, Job.backend, Job.status, Job.score, Job.model)
            .where(Job.run_id == latest, col(Job.backend).in_([candidate, baseline]))
        ).all()
        sides: dict[tuple[str, bool], list[Any]] = {}
        for row in rows:
            sides.setdefault((row.agent, row.backend == candidate), []).append(row)
        means = {True: {}, False: {}}
        for (agent, is_candidate), jobs in sides.items():
            means[is_candidate].update({(agent, task): mean for task, mean in
                                        task_means(jobs, errors_count_as_zero=is_candidate).items()})
        split = epoch_split(means[True], means[False])
        within, between = split["within_one_epoch"], split["between"]
        if within is None:
            return None
        return (within / (within + between) if within + between > 0 else 0.0), latest

    return _ask(settings, read)


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
        prior = prior_within_share(settings, candidate, baseline) if selection.epochs > 1 else None
        within = (prior[0], f"run {prior[1]}") if prior else (rule.assumed_within_share, "assumed")
        accuracies = {}
        for agent in selection.agents:
            found = last_accuracy(settings, agent, settings.model_for(baseline, agent))
            accuracy, source = (found[0], f"run {found[1]}") if found else (rule.assumed_baseline_accuracy, "assumed")
            accuracies[agent] = accuracy
            rows.append(_row(agent, candidate, baseline, tasks[agent], accuracy, source, per_agent, rule,
                             selection.epochs, within))
        total = sum(tasks.values())
        pooled_accuracy = sum(accuracies[a] * tasks[a] for a in selection.agents) / total if total else None
        sources = {r["baseline_accuracy_source"] for r in rows if r["candidate"] == candidate and r["agent"] != POOLED}
        rows.append(_row(POOLED, candidate, baseline, total, pooled_accuracy,
                         "assumed" if sources == {"assumed"} else "task-weighted over the agents", per_pooled, rule,
                         selection.epochs, within))
    power = {"power": POWER, "confidence": rule.confidence, "assumed_loss_share": rule.assumed_loss_share,
             "assumed_baseline_accuracy": rule.assumed_baseline_accuracy, "epochs": selection.epochs,
             "assumed_within_share": rule.assumed_within_share, "go": rule.go,
             "go_promise": go_promise(rule.go, 1 - rule.confidence), "rows": rows}
    if rule.design == "sequential" and rows:
        power["sequential"] = sequential_expectation(settings, selection, rows, per_agent)
    return power


SCENARIOS = ("no gain", "at the bar", "at the design alternative")


def sequential_expectation(settings: Settings, selection, rows: list[dict], alpha_each: float) -> dict[str, Any]:
    """Expected calls and dollars of the sequential design (shared.sequential_plan.expected_stop)
    per scenario, beside the fixed design's worst case: an agent pays for the share of its
    tasks it is expected to release (several candidates: the largest share, it releases while
    any verdict is open); reference backends kept to the end ([decision] references = "full")
    pay in full. The design alternative: the improvement the fixed design confirms at 80% power."""
    from shared.budget import estimate_run_cost
    from shared.sequential_plan import expected_stop

    rule = settings.decision
    full = [b for b in selection.backends
            if rule.references == "full" and settings.backends[b].role == "reference"]
    totals = {name: {"calls": 0.0, "usd": 0.0, "go": 0.0, "no_go": 0.0} for name in SCENARIOS}
    fixed = {"calls": 0, "usd": 0.0}
    agent_rows = [r for r in rows if r["agent"] != POOLED]
    for agent in selection.agents:
        cost = estimate_run_cost(settings, selection.suite, [agent], selection.backends, selection.limit,
                                 epochs=selection.epochs)
        fixed["calls"] += cost["jobs"]
        fixed["usd"] += cost["estimated_cost_usd"]
        kept = {"calls": sum(cost["by_backend"][b]["jobs"] for b in full),
                "usd": sum(cost["by_backend"][b]["cost_usd"] for b in full)}
        mine = [r for r in agent_rows if r["agent"] == agent and r["baseline_accuracy"] is not None]
        for name in SCENARIOS:
            stops = []
            for r in mine:
                threshold = rule.min_improvement * r["baseline_accuracy"]
                difference = {"no gain": 0.0, "at the bar": threshold,
                              "at the design alternative": r["smallest_confirmable_abs"]}[name]
                if difference is None:
                    difference = threshold
                stops.append(expected_stop(r["tasks"], r["baseline_accuracy"], difference,
                                           min_improvement=rule.min_improvement, go=rule.go, alpha=alpha_each,
                                           looks=rule.looks, loss_share=rule.assumed_loss_share))
            share = max((s["share"] for s in stops), default=1.0)
            totals[name]["calls"] += kept["calls"] + share * (cost["jobs"] - kept["calls"])
            totals[name]["usd"] += kept["usd"] + share * (cost["estimated_cost_usd"] - kept["usd"])
            totals[name]["go"] += max((s["go"] for s in stops), default=0.0) / len(selection.agents)
            totals[name]["no_go"] += min((s["no_go"] for s in stops), default=0.0) / len(selection.agents)
    return {"looks": rule.looks, "fixed": {"calls": fixed["calls"], "usd": round(fixed["usd"], 6)},
            "scenarios": [{"name": name, "calls": round(t["calls"]), "usd": round(t["usd"], 6),
                           "share": t["calls"] / fixed["calls"] if fixed["calls"] else 0.0,
                           "agent_go": t["go"], "agent_no_go": t["no_go"]} for name, t in totals.items()]}


def sequential_lines(sequential: dict) -> list[str]:
    """The sequential design's expected cost in plain words, beside the fixed design's."""
    fixed = sequential["fixed"]
    lines = [f"sequential design ({sequential['looks']} looks): expected calls and dollars against the fixed "
             f"design's {fixed['calls']} calls, ${fixed['usd']:.4f} (normal approximation at the assumed loss share; the "
             "design alternative: the improvement the fixed design confirms at 80% power, the bar where it confirms "
             "none):"]
    for s in sequential["scenarios"]:
        lines.append(f"{s['name']}: {s['calls']} calls ({s['share']:.0%}), ${s['usd']:.4f}; per agent GO "
                     f"{s['agent_go']:.0%}, NO-GO {s['agent_no_go']:.0%}")
    return lines


def _row(agent, candidate, baseline, tasks, accuracy, source, alpha_each, rule, epochs: int = 1,
         within: tuple[float, str] = (0.0, "assumed")) -> dict[str, Any]:
    """`epochs` (k > 1): what k epochs per task buy against one (shared.epochs.epochs_gain), at
    `within` = (the within-task share of one answer's paired variance, where it comes from)."""
    by_rule = confirmable_by_rule(tasks, accuracy, rule, alpha_each)
    smallest = by_rule[rule.go]
    row = {
        "agent": agent, "candidate": candidate, "baseline": baseline, "tasks": tasks,
        "baseline_accuracy": accuracy, "baseline_accuracy_source": source, "alpha_each": alpha_each,
        "can_ever_go": can_ever_go(tasks, alpha_each),
        "smallest_confirmable_abs": smallest,
        "smallest_confirmable_by_go": by_rule,
        "smallest_confirmable_rel": smallest / accuracy if smallest is not None and accuracy else None,
    }
    if epochs > 1:
        threshold = rule.min_improvement * accuracy if accuracy is not None else 0.0
        row["with_epochs"] = {**epochs_gain(smallest, threshold, epochs, within[0], POWER, alpha_each),
                              "within_share_source": within[1]}
    return row


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
                         f"{accuracy}" + _epochs_words(r.get("with_epochs"), r["smallest_confirmable_abs"]))
    if power.get("sequential"):
        lines.extend(sequential_lines(power["sequential"]))
    return lines


def _epochs_words(gain: dict | None, one_epoch: float) -> str:
    """What k epochs add to a row's power figure (none with one epoch)."""
    if not gain or gain["smallest_confirmable_abs"] is None:
        return ""
    return (f"; with {gain['epochs']} epochs: +{100 * gain['smallest_confirmable_abs']:.1f} pp "
            f"(power at +{100 * one_epoch:.1f} pp: {gain['power_at_one_epoch_figure']:.0%} instead of 80%), "
            f"with {gain['within_share']:.0%} of one answer's variance within-task ({gain['within_share_source']})")
