"""The report's Repeated trials section (`submit --epochs k`): per comparison, the spread within
tasks against the spread between tasks and the k that would have been enough (shared.epochs owns
the formulas); whether every task's epochs agreed, in which case they were not needed."""

from __future__ import annotations

from typing import Any

from shared.config.tables import DecisionConfig
from shared.epochs import WITHIN_SHARE_ENOUGH, task_means
from shared.report.data import RunFacts
from shared.report.decision import POOLED


def epochs_section(facts: RunFacts, rule: DecisionConfig, comparisons: list[dict]) -> dict[str, Any]:
    """report.json's `epochs`: k, whether all epochs agreed, the k rule and a line per comparison."""
    k = max((getattr(j, "epoch", 1) or 1 for j in facts.jobs), default=1)
    k = max(k, rule.epochs)
    agreed = k > 1 and all(
        len({v for v in mean.epoch_scores if v is not None}) <= 1
        for jobs in facts.by_pair.values()
        for mean in task_means(jobs, errors_count_as_zero=False).values()
    )
    return {
        "k": k,
        "agreed": agreed,
        "enough_share": WITHIN_SHARE_ENOUGH,
        "rule": (f"A task scores the mean of its {k} epochs; the decision pairs task means, so the task stays "
                 "the paired unit. Within-task variance: the pooled variance of a task's epoch scores around "
                 "its mean (candidate + baseline, one epoch's difference); between-task: the variance of the "
                 "task differences less the within part at this run's epochs. Enough epochs: the smallest k "
                 f"at which the within part is at most {WITHIN_SHARE_ENOUGH:.0%} of the task difference's "
                 "variance (more epochs buy little; more tasks buy more). An errored candidate epoch counts 0, "
                 "a baseline's is left out, epochs never attempted are left out."),
        "summary": _summary(k, agreed),
        "lines": [line for c in comparisons if (line := _line(c)) is not None] if k > 1 else [],
    }


def _summary(k: int, agreed: bool) -> str:
    if k <= 1:
        return "One epoch per task."
    if agreed:
        return (f"The {k} epochs agreed: every task scored the same in each of its epochs, on every backend "
                "(a deterministic model, e.g. at temperature 0), so the epochs were not needed: one would "
                "have given the same decision.")
    return f"{k} epochs per task: the scores varied between epochs of the same task (sampled answers)."


def _line(c: dict) -> str | None:
    split = c.get("epochs") or {}
    if split.get("within_one_epoch") is None:
        return None
    who = "all agents pooled" if c["agent"] == POOLED else c["agent"]
    enough = split["k_enough"]
    verdict = (f"{enough} epoch(s) would have been enough" if enough is not None
               else "no number of epochs gets there: the spread is all within tasks, add tasks")
    return (f"{who} ({c['candidate']} vs {c['baseline']}, {split['tasks']} tasks): within-task variance of one "
            f"epoch's difference {split['within_one_epoch']:.4f} (candidate {split['within_candidate']:.4f}, "
            f"baseline {split['within_baseline']:.4f}), between tasks {split['between']:.4f}; at this run's "
            f"epochs the within part is {split['within_share']:.0%} of the task difference's variance; {verdict}")
