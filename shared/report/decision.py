"""The go/no-go rule, its one owner: candidate vs baseline paired over the suite's tasks, per
agent and pooled over all agents (`ALL`), judged by shared.stats' score interval.

Missing answers never help the candidate: a candidate `error` (after its retries) scores 0; a
task the baseline failed is left out, whether or not the candidate failed it too (without the
baseline's score there is no pair; counting it as a candidate win would reward a flaky
baseline, and both failing says nothing about the candidate either); jobs never
attempted (halted, cancelled, still queued) are missing. Below MIN_PAIRED_COVERAGE of the
tasks paired, no verdict. The answered-only comparison (both ok) is computed beside it.

One error rate for the run (weighted Bonferroni): of the 1 - confidence allowed, half goes to
the pooled comparison(s), half is shared by the per-agent ones, and each comparison's interval
ends hold at 1 - its share. So with every candidate no better than its baseline, P(any GO) is
at most 1 - confidence; with every candidate above the bar, P(any NO-GO) likewise; that covers
`combine` (an agent is GO if any of its candidates is), every candidate being in the family.
"""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from shared.config.tables import DecisionConfig
from shared.epochs import TaskMean, task_means, variance_split
from shared.models import JobStatus
from shared.power import Truth, tasks_needed
from shared.report.data import RunFacts, answered
from shared.report.decision_power import power_figures
from shared.sequential import Levels, interval_levels, levels
from shared.stats import clustered_score_test, design_effect, paired_score_test

GO, NO_GO, INCONCLUSIVE = "GO", "NO-GO", "INCONCLUSIVE"
POOLED = "ALL"
MIN_PAIRED_COVERAGE = 0.8  # below this share of a comparison's tasks paired, no verdict
POOLED_SHARE = 0.5  # of the run's error rate, for the pooled comparison(s)
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


def error_shares(agent_comparisons: int, pooled_comparisons: int, confidence: float) -> tuple[float, float]:
    """(per agent comparison, per pooled comparison): the error allowed at each interval end."""
    alpha = 1.0 - confidence
    if not agent_comparisons:
        return 0.0, alpha / max(pooled_comparisons, 1)
    if not pooled_comparisons:
        return alpha / agent_comparisons, 0.0
    return alpha * (1 - POOLED_SHARE) / agent_comparisons, alpha * POOLED_SHARE / pooled_comparisons


def comparisons(facts: RunFacts, rule: DecisionConfig, *, plan: bool = True) -> list[dict]:
    """One comparison per agent and candidate, then one per candidate over all agents pooled.
    `plan=False` leaves out the power figures (tasks needed, smallest confirmable), which do not
    change a verdict and cost most of the time (bench/decision.py's thousands of runs)."""
    specs: list[tuple[str, str, str, dict, dict]] = []
    for candidate, baseline in candidate_pairs(facts):
        pooled_candidate: dict[Hashable, Any] = {}
        pooled_baseline: dict[Hashable, Any] = {}
        for agent in facts.agents:  # each task once, scored by the mean of its epochs (shared.epochs)
            cand = task_means(facts.by_pair.get((agent, candidate), []), errors_count_as_zero=True)
            base = task_means(facts.by_pair.get((agent, baseline), []), errors_count_as_zero=False)
            if not cand:
                continue
            specs.append((agent, candidate, baseline, cand, base))
            pooled_candidate.update({(agent, task): j for task, j in cand.items()})
            pooled_baseline.update({(agent, task): j for task, j in base.items()})
        if pooled_candidate:
            specs.append((POOLED, candidate, baseline, pooled_candidate, pooled_baseline))
    pooled = sum(spec[0] == POOLED for spec in specs)
    per_agent, per_pooled = error_shares(len(specs) - pooled, pooled, rule.confidence)
    rows = []
    for spec in specs:
        row = compare(*spec, rule, alpha_each=per_pooled if spec[0] == POOLED else per_agent, plan=plan)
        row["epochs"] = _epochs(row, spec[3], spec[4])
        rows.append(row)
    return rows


def epoch_split(candidate: dict[Hashable, TaskMean], baseline: dict[Hashable, TaskMean]) -> dict[str, Any]:
    """The variance split (shared.epochs.variance_split) over the tasks the decision pairs: the
    candidate's counted epochs (an errored one as 0), the baseline's answered ones."""
    paired = [key for key, _, _ in pairing(candidate, baseline)["pairs"]]
    return variance_split([(tuple(v for v in candidate[k].epoch_scores if v is not None) or (0.0,),
                            tuple(v for v in baseline[k].epoch_scores if v is not None)) for k in paired])


def _epochs(row: dict, candidate: dict[Hashable, TaskMean], baseline: dict[Hashable, TaskMean]) -> dict[str, Any]:
    """The comparison's variance split, and each paired task's epoch scores beside its mean in
    `pairs` (report.json)."""
    for pair in row.get("pairs", []):
        pair["candidate_epochs"] = list(candidate[pair["task_id"]].epoch_scores)
        pair["baseline_epochs"] = list(baseline[pair["task_id"]].epoch_scores)
    return epoch_split(candidate, baseline)


def pairing(candidate_jobs: dict, baseline_jobs: dict) -> dict[str, Any]:
    """The suite's tasks as the decision counts them. `pairs`: (key, candidate score, baseline
    score) with a candidate error as 0; `answered`: the keys both answered ok. The counts:
    candidate errors counted as 0, baseline errors left out (`both_errors` of them the
    candidate failed too), tasks missing (never attempted). `clusters`: each pair's family (the
    task's suite `cluster`, per agent; a task without one is its own)."""
    pairs, answered_keys, clusters = [], [], []
    candidate_errors = baseline_errors = both_errors = missing = 0
    for key in sorted(candidate_jobs.keys() | baseline_jobs.keys()):
        cand, base = candidate_jobs.get(key), baseline_jobs.get(key)
        cand_failed = cand is not None and cand.status == JobStatus.error
        if not answered(base):  # left out, whatever the candidate did
            baseline_errors += base is not None and base.status == JobStatus.error
            both_errors += cand_failed and base is not None and base.status == JobStatus.error
            missing += base is None or base.status != JobStatus.error
            continue
        if answered(cand):
            pairs.append((key, cand.score, base.score))
            answered_keys.append(key)
        elif cand_failed:
            pairs.append((key, 0.0, base.score))
            candidate_errors += 1
        else:
            missing += 1
            continue
        clusters.append(family(key, getattr(base, "cluster", None)))
    return {"tasks": len(candidate_jobs.keys() | baseline_jobs.keys()), "pairs": pairs, "answered": answered_keys,
            "candidate_errors": candidate_errors, "baseline_errors": baseline_errors, "both_errors": both_errors,
            "missing": missing, "clusters": clusters}


def family(key: Hashable, cluster: str | None) -> Hashable:
    """A pair's family: its task's suite `cluster` within its agent (pooled keys are (agent,
    task)), or the task alone."""
    if cluster is None:
        return ("task", key)
    return ("cluster", key[0] if isinstance(key, tuple) else None, cluster)


def _model(jobs: dict) -> str | None:
    models = {j.model for j in jobs.values() if getattr(j, "model", None)}
    return models.pop() if len(models) == 1 else (", ".join(sorted(models)) or None)


def compare(
    agent: str, candidate: str, baseline: str, candidate_jobs: dict, baseline_jobs: dict,
    rule: DecisionConfig, *, alpha_each: float | Levels | None = None, plan: bool = True,
) -> dict:
    """One comparison; `alpha_each` is its share of the run's error rate (default: a lone
    comparison, 1 - confidence), or at a sequential look the design's Levels (GO side, NO-GO
    side: shared.sequential.look_alpha_each). `alpha_each` in the row is the GO side's level,
    `alpha_no_go` the NO-GO side's."""
    level = levels(alpha_each if alpha_each is not None else 1.0 - rule.confidence)
    alpha_each = interval_levels(level)
    paired = pairing(candidate_jobs, baseline_jobs)
    pairs = paired["pairs"]
    row: dict[str, Any] = {
        "agent": agent, "candidate": candidate, "baseline": baseline,
        "candidate_model": _model(candidate_jobs), "baseline_model": _model(baseline_jobs),
        "tasks": paired["tasks"], "n": len(pairs),
        "candidate_errors": paired["candidate_errors"], "baseline_errors": paired["baseline_errors"],
        "both_errors": paired["both_errors"], "missing": paired["missing"],
        "paired_coverage": len(pairs) / paired["tasks"] if paired["tasks"] else 0.0,
        "confidence": rule.confidence, "alpha_each": level.go, "alpha_no_go": level.no_go, "method": "score",
        "go_rule": rule.go,
    }
    labels = paired["clusters"]
    families = len(set(labels))
    clustered = families < len(pairs)  # some family holds several tasks
    row.update(clusters=families, clustered=clustered,
               design_effect=design_effect([c - b for _, c, b in pairs], labels) if clustered else 1.0)
    measured = _measure([c for _, c, _ in pairs], [b for _, _, b in pairs], rule, alpha_each,
                        labels if clustered else None)
    row.update(measured)
    row.update(_verdict(row, rule, [c - b for _, c, b in pairs] if plan else None))
    if paired["candidate_errors"]:  # else the answered tasks are the paired ones: the same measure
        by_key = {key: (c, b) for key, c, b in pairs}
        answered = paired["answered"]
        label_of = dict(zip((key for key, _, _ in pairs), labels))
        answered_only = _measure([by_key[k][0] for k in answered], [by_key[k][1] for k in answered], rule, alpha_each,
                                 [label_of[k] for k in answered] if clustered else None)
    else:
        answered_only = dict(measured)
    answered_only.update(n=len(paired["answered"]), tasks=paired["tasks"],
                         paired_coverage=len(paired["answered"]) / paired["tasks"] if paired["tasks"] else 0.0)
    answered_only["decision"] = _verdict(answered_only, rule, None)["decision"]
    row["answered_only"] = answered_only
    answered_set = set(paired["answered"])
    both_ok = [(c, b) for key, c, b in pairs if key in answered_set]
    row["power"] = power_figures(row, rule, level.go, both_ok) if plan else None
    if agent != POOLED:
        row["pairs"] = [{"task_id": k, "candidate_score": c, "baseline_score": b} for k, c, b in pairs]
    row["headline"] = headline(row)
    return row


def _measure(candidate: list[float], baseline: list[float], rule: DecisionConfig, alpha_each,
             clusters: list | None = None) -> dict:
    """Accuracies, improvement, threshold, the interval and the p-value (None without pairs).
    `alpha_each`: one level, or (GO side's, NO-GO side's) for the interval's lower and upper end.
    `p_value`: one-sided, "the candidate is no better", multiplied by the run's share factor
    (Bonferroni; at a look, the GO side's level), so GO needs it <= 1 - confidence exactly when
    the interval is above 0."""
    alpha_each = interval_levels(alpha_each)
    go_level = levels(alpha_each).go
    row: dict[str, Any] = dict.fromkeys(
        ("candidate_accuracy", "baseline_accuracy", "improvement_rel", "improvement_abs", "threshold_abs",
         "ci95_abs", "p_value", "p_value_unadjusted", "sd_difference", "bar_margin_low"))
    if not candidate:
        return row
    test = _test(candidate, baseline, alpha_each, clusters)
    candidate_accuracy, baseline_accuracy = sum(candidate) / len(candidate), sum(baseline) / len(baseline)
    improvement = candidate_accuracy - baseline_accuracy
    row.update(
        candidate_accuracy=candidate_accuracy, baseline_accuracy=baseline_accuracy, improvement_abs=improvement,
        improvement_rel=improvement / baseline_accuracy if baseline_accuracy else None,
        threshold_abs=rule.min_improvement * baseline_accuracy, ci95_abs=list(test.ci),
        p_value=min(1.0, test.p_above_zero * (1.0 - rule.confidence) / go_level),
        p_value_unadjusted=test.p_above_zero, sd_difference=test.sd_difference,
    )
    if rule.go == "bar":
        row["bar_margin_low"] = bar_margin_low(candidate, baseline, rule.min_improvement, go_level, clusters)
    return row


def _test(candidate: list[float], baseline: list[float], alpha_each, clusters: list | None):
    """The score test, cluster-robust when the tasks come in families (`alpha_each`: one level,
    or (lower end's, upper end's), or Levels)."""
    alpha_each = interval_levels(alpha_each)
    if clusters is None:
        return paired_score_test(candidate, baseline, alpha_each=alpha_each)
    return clustered_score_test(candidate, baseline, clusters, alpha_each=alpha_each)


def bar_margin_low(candidate: list[float], baseline: list[float], min_improvement: float, alpha_each,
                   clusters: list | None = None) -> float:
    """The lower end of the interval of mean(candidate - (1 + min_improvement) x baseline): above 0
    when the candidate clears the relative bar with the comparison's confidence. The bar moves with
    the measured baseline accuracy, so "the difference's lower end above the measured bar" would
    say GO at the bar more often than promised (6-8% for 5%); this tests the bar itself."""
    scale = 1.0 + min_improvement
    alpha_each = levels(alpha_each).go  # only the lower end counts: the GO side's level
    return _test([c / scale for c in candidate], baseline, alpha_each, clusters).ci[0] * scale


def _verdict(c: dict, rule: DecisionConfig, differences: list[float] | None) -> dict[str, Any]:
    """The decision, why, and (INCONCLUSIVE) how many paired tasks would settle it at 80% power
    if the observed differences were the truth. GO under `rule.go`: "better" = the interval
    above 0 and the estimate meets the threshold; "bar" = the interval's lower end clears it."""
    if c["n"] == 0:
        return {"decision": INCONCLUSIVE, "reason": "no task paired", "pairs_needed": None}
    if c["paired_coverage"] < MIN_PAIRED_COVERAGE:
        return {"decision": INCONCLUSIVE, "pairs_needed": None,
                "reason": f"only {c['paired_coverage']:.0%} of the tasks paired (the rest missing)"}
    low, high = c["ci95_abs"]
    improvement, threshold = c["improvement_abs"], c["threshold_abs"]
    bar_low = c.get("bar_margin_low")
    go, no_go = settled(low, high, improvement, threshold, -1.0 if bar_low is None else bar_low, rule.go)
    if go:
        reason = ("the candidate clears the required improvement with the comparison's confidence" if rule.go == "bar"
                  else "improvement meets the threshold and the interval is above 0")
        return {"decision": GO, "reason": reason, "pairs_needed": None}
    if no_go:
        return {"decision": NO_GO, "reason": "the interval's upper end is below the required improvement",
                "pairs_needed": None}
    meets = improvement > 0 and improvement >= threshold - _TOLERANCE
    if not meets:
        reason = "the interval reaches the required improvement"
    else:
        reason = "the interval reaches below the required improvement" if rule.go == "bar" else "the interval includes 0"
    needed = tasks_needed(Truth.observed(differences), threshold, c["alpha_each"], go=rule.go) if differences else None
    if needed:  # families: as many more tasks as they inflate the variance
        needed = int(needed * c.get("design_effect", 1.0) + 0.999)
    return {"decision": INCONCLUSIVE, "reason": reason, "pairs_needed": max(needed, c["n"] + 1) if needed else None}


def settled(low, high, improvement, threshold, bar_low, go: str):
    """(GO, NO-GO) from a comparison's measures, for one comparison or numpy arrays of many (the
    benches): GO under "better" = the estimate meets the threshold and the interval is above 0;
    under "bar" = the estimate meets it and the interval of candidate - (1 + bar) x baseline
    (`bar_low`, its lower end) is above 0. NO-GO = the upper end below the threshold."""
    improvement, threshold = np.asarray(improvement), np.asarray(threshold)
    meets = (improvement > 0) & (improvement >= threshold - _TOLERANCE)
    clears = np.asarray(bar_low) > _TOLERANCE if go == "bar" else np.asarray(low) > 0
    go_ = meets & clears
    no_go = ~go_ & (np.asarray(high) < threshold - _TOLERANCE)
    return (bool(go_), bool(no_go)) if go_.ndim == 0 else (go_, no_go)


def combine(verdicts: list[str]) -> str:
    """Several candidates for one agent: one that passes is enough to ship (each is in the
    run's error family, so this adds no false GO beyond its rate)."""
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
    """`content: INCONCLUSIVE: +14 pp, CI -13..+41 (...); about 90 paired tasks would settle it`."""
    who = "all agents pooled" if c["agent"] == POOLED else c["agent"]
    if c["n"] == 0 or c["ci95_abs"] is None:
        return f"{who}: {c['decision']}: {c['reason']}"
    low, high = (points(x) for x in c["ci95_abs"])
    families = f" in {c['clusters']} clusters" if c.get("clustered") else ""
    text = (f"{who}: {c['decision']}: {points(c['improvement_abs'])} pp, "
            f"CI {low}..{high} (needs {100 * c['threshold_abs']:+.1f} pp; n={c['n']}{families})")
    if c["decision"] == INCONCLUSIVE:
        text += (f"; about {c['pairs_needed']} paired tasks would settle it at 80% power" if c["pairs_needed"]
                 else f"; {c['reason']}")
    return text


def points(share: float) -> str:
    """Whole points (+14, -13); a tenth where rounding would hide the sign (-0.2, not "-0")."""
    text = f"{100 * share:+.0f}"
    if text in ("+0", "-0"):
        return "0" if abs(100 * share) < 0.05 else f"{100 * share:+.1f}"
    return text
