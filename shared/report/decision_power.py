"""The report's power figure for one comparison: what its tasks can confirm at 80% power, from
its baseline accuracy, with its own failures (candidate errors, tasks left out, loss share) and
its task families (the design effect), under each GO rule. Apart from shared.report.decision
because it does not change a verdict."""

from __future__ import annotations

from typing import Any

from shared.config.tables import DecisionConfig
from shared.power import Failures, can_ever_go, confirmable_by_rule
from shared.sequential import levels


def observed_failures(c: dict, both_ok: list[tuple[float, float]], rule: DecisionConfig) -> Failures:
    """What this run lost to failures, for its power figure: the candidate's error share among
    the paired tasks, the share of tasks left out (the baseline failed, or never attempted), and
    the share of the baseline's right answers the candidate got wrong when both answered (the
    assumed share when that is higher: a few tasks often show no loss by chance)."""
    right = sum(base for _, base in both_ok)
    lost = sum(max(base - cand, 0.0) for cand, base in both_ok)
    return Failures(candidate_errors=c["candidate_errors"] / c["n"] if c["n"] else 0.0,
                    left_out=1.0 - c["n"] / c["tasks"] if c["tasks"] else 0.0,
                    loss_share=max(rule.assumed_loss_share, lost / right if right > 0 else 0.0))


def power_figures(c: dict, rule: DecisionConfig, alpha_each, both_ok: list[tuple[float, float]]) -> dict[str, Any]:
    """What this many tasks can confirm at 80% power, from this run's baseline accuracy, with
    this run's failures (candidate errors, tasks left out, loss share) and design effect (task
    families: as many fewer independent tasks), under each GO rule (at the GO side's level when
    `alpha_each` is a sequential look's Levels)."""
    alpha_each = levels(alpha_each).go
    tasks = c["tasks"]
    accuracy = c["baseline_accuracy"]
    failures = observed_failures(c, both_ok, rule)
    by_rule = confirmable_by_rule(tasks, accuracy, rule, alpha_each, failures=failures,
                                  design_effect=c.get("design_effect", 1.0))
    return {"tasks": tasks, "baseline_accuracy": accuracy, "can_ever_go": can_ever_go(tasks, alpha_each),
            "smallest_confirmable_abs": by_rule[rule.go], "smallest_confirmable_by_go": by_rule,
            "go_rule": rule.go, "loss_share": failures.loss_share,
            "candidate_error_share": failures.candidate_errors, "left_out_share": failures.left_out,
            "design_effect": c.get("design_effect", 1.0), "clusters": c.get("clusters")}
