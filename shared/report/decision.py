"""The go/no-go rule, its one owner: candidate vs baseline paired over the tasks both answered
ok, per agent and pooled over all agents (`ALL`), judged by shared.stats' sign-flip interval.

GO: the improvement meets `min_improvement` (relative) and the interval lies above zero.
NO-GO: the interval's upper end is below the required improvement in points.
INCONCLUSIVE: anything else, with about how many paired tasks would settle it."""

from __future__ import annotations

from typing import Any, Hashable

from shared.config import DecisionConfig
from shared.report.data import RunFacts, answered
from shared.stats import pairs_needed, paired_sign_flip

GO, NO_GO, INCONCLUSIVE = "GO", "NO-GO", "INCONCLUSIVE"
POOLED = "ALL"
MIN_PAIRED_COVERAGE = 0.8  # below this share of a pair's tasks answered by both, no verdict
# Rounding must not flip a verdict that sits exactly on the threshold (e.g. 0.54 vs 0.50).
_TOLERANCE = 1e-9


def decision_config(facts: RunFacts) -> DecisionConfig:
    """The rule the run was submitted under (its config snapshot), so a rebuild agrees."""
    return DecisionConfig.model_validate(facts.snapshot.get("decision") or {})


def candidate_pairs(facts: RunFacts) -> list[tuple[str, str]]:
    config = facts.snapshot.get("backends", {})
    return [
        (name, config[name]["baseline"])
        for name in facts.backends
        if config.get(name, {}).get("role") == "candidate" and config[name].get("baseline")
    ]


def comparisons(facts: RunFacts, rule: DecisionConfig) -> list[dict]:
    """One comparison per agent and candidate, then one per candidate over all agents pooled."""
    rows = []
    for candidate, baseline in candidate_pairs(facts):
        pooled_candidate: dict[Hashable, Any] = {}
        pooled_baseline: dict[Hashable, Any] = {}
        for agent in facts.agents:
            cand = {j.task_id: j for j in facts.by_pair.get((agent, candidate), [])}
            base = {j.task_id: j for j in facts.by_pair.get((agent, baseline), [])}
            if not cand:
                continue
            rows.append(compare(agent, candidate, baseline, cand, base, rule))
            pooled_candidate.update({(agent, task): j for task, j in cand.items()})
            pooled_baseline.update({(agent, task): j for task, j in base.items()})
        if pooled_candidate:
            rows.append(compare(POOLED, candidate, baseline, pooled_candidate, pooled_baseline, rule))
    return rows


def paired_keys(candidate_jobs: dict, baseline_jobs: dict) -> list:
    return sorted(k for k in candidate_jobs.keys() & baseline_jobs.keys()
                  if answered(candidate_jobs[k]) and answered(baseline_jobs[k]))


def compare(
    agent: str, candidate: str, baseline: str, candidate_jobs: dict, baseline_jobs: dict,
    rule: DecisionConfig,
) -> dict:
    """Paired over the tasks both backends answered, so easy and hard tasks weigh the same on
    each side and a missing answer cannot flatter either one."""
    tasks = candidate_jobs.keys() | baseline_jobs.keys()
    paired = paired_keys(candidate_jobs, baseline_jobs)
    candidate_scores = [candidate_jobs[k].score for k in paired]
    baseline_scores = [baseline_jobs[k].score for k in paired]
    test = paired_sign_flip(candidate_scores, baseline_scores, confidence=rule.confidence,
                            resamples=rule.resamples, seed=rule.seed)
    row: dict[str, Any] = {
        "agent": agent, "candidate": candidate, "baseline": baseline,
        "tasks": len(tasks), "n": len(paired),
        "paired_coverage": len(paired) / len(tasks) if tasks else 0.0,
        "candidate_accuracy": None, "baseline_accuracy": None,
        "improvement_rel": None, "improvement_abs": None, "threshold_abs": None,
        "confidence": rule.confidence, "ci95_abs": None, "p_value": None, "method": test.method,
        "sd_difference": None,
    }
    if paired:
        candidate_accuracy = sum(candidate_scores) / len(paired)
        baseline_accuracy = sum(baseline_scores) / len(paired)
        improvement = candidate_accuracy - baseline_accuracy
        row.update(
            candidate_accuracy=candidate_accuracy, baseline_accuracy=baseline_accuracy,
            improvement_abs=improvement,
            improvement_rel=improvement / baseline_accuracy if baseline_accuracy else None,
            threshold_abs=rule.min_improvement * baseline_accuracy,
            ci95_abs=list(test.ci), p_value=test.p_value, sd_difference=test.sd_difference,
        )
    if agent != POOLED:
        row["pairs"] = [
            {"task_id": k, "candidate_score": candidate_jobs[k].score, "baseline_score": baseline_jobs[k].score}
            for k in paired
        ]
    row.update(_verdict(row, rule))
    row["headline"] = headline(row)
    return row


def _verdict(c: dict, rule: DecisionConfig) -> dict[str, Any]:
    """The decision, why, and (INCONCLUSIVE) about how many paired tasks would settle it."""
    if c["n"] == 0:
        return {"decision": INCONCLUSIVE, "reason": "no task answered ok by both", "pairs_needed": None}
    if c["paired_coverage"] < MIN_PAIRED_COVERAGE:
        return {"decision": INCONCLUSIVE, "pairs_needed": None,
                "reason": f"only {c['paired_coverage']:.0%} of the tasks answered ok by both"}
    low, high = c["ci95_abs"]
    improvement, threshold = c["improvement_abs"], c["threshold_abs"]
    meets = improvement > 0 and improvement >= threshold - _TOLERANCE
    if meets and low > 0:
        return {"decision": GO, "reason": "improvement meets the threshold and the interval is above 0",
                "pairs_needed": None}
    if high < threshold - _TOLERANCE:
        return {"decision": NO_GO, "reason": "the interval's upper end is below the required improvement",
                "pairs_needed": None}
    # With more pairs at this effect, the interval would clear 0 (if the effect meets the
    # threshold) or drop below the threshold (if it does not).
    margin = improvement if meets else threshold - improvement
    needed = pairs_needed(improvement, c["sd_difference"], margin, rule.confidence)
    reason = "the interval includes 0" if meets else "the interval reaches the required improvement"
    return {"decision": INCONCLUSIVE, "reason": reason, "pairs_needed": max(needed, c["n"] + 1) if needed else None}


def combine(verdicts: list[str]) -> str:
    """Several candidates for one agent: one that passes is enough to ship."""
    if GO in verdicts:
        return GO
    if not verdicts or INCONCLUSIVE in verdicts:
        return INCONCLUSIVE
    return NO_GO


def decide(agents: list[str], rows: list[dict]) -> dict[str, Any]:
    """Per agent, and `overall` = the pooled comparison over every agent's paired tasks."""
    by_agent = {agent: combine([c["decision"] for c in rows if c["agent"] == agent]) for agent in agents}
    overall = combine([c["decision"] for c in rows if c["agent"] == POOLED])
    return {"overall": overall, "by_agent": by_agent}


def headline(c: dict) -> str:
    """`content: INCONCLUSIVE: +14 pp, 95% CI -13..+41; about 90 paired tasks would settle it`."""
    who = "all agents pooled" if c["agent"] == POOLED else c["agent"]
    if c["n"] == 0 or c["ci95_abs"] is None:
        return f"{who}: {c['decision']}: {c['reason']}"
    low, high = (_points(x) for x in c["ci95_abs"])
    text = (f"{who}: {c['decision']}: {_points(c['improvement_abs'])} pp, "
            f"{c['confidence']:.0%} CI {low}..{high} (needs {100 * c['threshold_abs']:+.1f} pp; n={c['n']})")
    if c["decision"] == INCONCLUSIVE:
        text += (f"; about {c['pairs_needed']} paired tasks would settle it" if c["pairs_needed"]
                 else f"; {c['reason']}")
    return text


def _points(share: float) -> str:
    """Whole points (+14, -13); a tenth where rounding would hide the sign (-0.2, not "-0")."""
    text = f"{100 * share:+.0f}"
    if text in ("+0", "-0"):
        return "0" if abs(100 * share) < 0.05 else f"{100 * share:+.1f}"
    return text


def rule_text(rule: DecisionConfig) -> str:
    threshold = f"{rule.min_improvement * 100:g}%"
    level = f"{rule.confidence:.0%}"
    return (
        f"GO when the fine-tuned (candidate) model beats its baseline by at least {threshold} "
        f"relative ((candidate - baseline) / baseline accuracy) AND the {level} confidence "
        "interval of the difference lies above zero, both measured on the same tasks (paired: "
        "tasks both answered ok). NO-GO when the interval's upper end is below the required "
        f"improvement ({threshold} of the baseline's accuracy, in points): the candidate cannot "
        "reach it. INCONCLUSIVE otherwise, and when fewer than "
        f"{MIN_PAIRED_COVERAGE:.0%} of the tasks are paired; the report then says about how many "
        "paired tasks would settle it at the observed effect. The interval and p-value come from "
        "a paired sign-flip (randomization) test, exact for 0/1 scores, seeded otherwise. Per "
        "agent, and overall on all agents' paired tasks pooled; an agent with several candidates "
        "is GO if any of them is."
    )
