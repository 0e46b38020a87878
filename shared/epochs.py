"""Repeated trials (`submit --epochs k`, `[decision] epochs`): every job runs k times, each epoch
its own paid call. Once a model cannot run at temperature 0, one answer is one draw; the paired
unit stays the task, scored by the mean of its epochs, so the decision's interval and power
(shared.stats, shared.power) apply to the task means unchanged.

Missing epochs follow the missing-answer rules of shared.report.decision, epoch by epoch, so no
missing answer helps the candidate:
- the candidate's task mean counts an `error` epoch (after its retries) as 0 and leaves out epochs
  never attempted (halted, cancelled, still queued); a task with no ok epoch but an errored one is
  a candidate error (0), one with neither is missing;
- the baseline's task mean is over its ok epochs only (a baseline error says nothing about the
  candidate); a task with no ok epoch is a baseline error or missing, and left out.
With k = 1 this is exactly the one-answer rule.

Variance components: a task's paired difference varies between tasks (some are harder, some
suit the fine-tune) and within a task (the draw of each epoch); only the within part shrinks
with k. The `k rule`: the smallest k at which the within part is at most WITHIN_SHARE_ENOUGH
of the task difference's variance; more epochs than that buy little, more tasks buy more."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Iterable, Sequence

from shared.models import JobStatus

WITHIN_SHARE_ENOUGH = 0.10  # the k rule's bound on the within-task share of the difference's variance
_NORMAL = NormalDist()


@dataclass(frozen=True)
class TaskMean:
    """One task of one backend over its epochs, shaped like the job rows the decision reads
    (status, score, model): `ok` with the mean, `error`, or a missing status."""

    task_id: str
    model: str | None
    status: str
    score: float | None
    # Per epoch, in epoch order: the value the mean counts (a candidate error is 0.0), None when
    # the epoch is left out.
    epoch_scores: tuple[float | None, ...]
    cluster: str | None = None  # the task's suite family (shared.report.decision.family)


def task_means(jobs: Iterable[Any], *, errors_count_as_zero: bool) -> dict[str, TaskMean]:
    """Job rows (task_id, epoch, status, score, model) reduced to one TaskMean per task.
    `errors_count_as_zero`: the candidate's rule; False: the baseline's (see the module)."""
    by_task: dict[str, list[Any]] = {}
    for job in jobs:
        by_task.setdefault(job.task_id, []).append(job)
    return {task: _reduce(task, sorted(epochs, key=lambda j: getattr(j, "epoch", 1) or 1), errors_count_as_zero)
            for task, epochs in by_task.items()}


def _reduce(task: str, epochs: list[Any], errors_count_as_zero: bool) -> TaskMean:
    values: list[float | None] = []
    for job in epochs:
        if job.status == JobStatus.ok and job.score is not None:
            values.append(float(job.score))
        elif job.status == JobStatus.error and errors_count_as_zero:
            values.append(0.0)
        else:
            values.append(None)
    answered = any(j.status == JobStatus.ok and j.score is not None for j in epochs)
    counted = [v for v in values if v is not None]
    if answered:
        status, score = JobStatus.ok.value, sum(counted) / len(counted)
    elif any(j.status == JobStatus.error for j in epochs):
        status, score = JobStatus.error.value, None
    else:  # never attempted: as missing as its first epoch says
        status, score = epochs[0].status, None
    models = {j.model for j in epochs if getattr(j, "model", None)}
    return TaskMean(task, ", ".join(sorted(models)) or None, status, score, tuple(values),
                    getattr(epochs[0], "cluster", None))


def _pooled_within(tasks: Sequence[Sequence[float]]) -> float | None:
    """The pooled within-task variance (ddof 1 per task) over tasks with two or more values."""
    squares = freedom = 0.0
    for values in tasks:
        if len(values) >= 2:
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            freedom += len(values) - 1
    return squares / freedom if freedom else None


def variance_split(pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
                   enough: float = WITHIN_SHARE_ENOUGH) -> dict[str, Any]:
    """The spread within tasks against the spread between tasks, for one paired comparison.

    `pairs`: per paired task, (the candidate's counted epoch values, the baseline's). The task
    difference d = mean(candidate) - mean(baseline) has variance between + W/k, W being one
    epoch's within-task variance of the difference (candidate's + baseline's, independent draws).
    `within_share`: W's part of the observed variance of d at this run's epochs; `k_enough`: the
    smallest k with (W/k) / (between + W/k) <= `enough` (1 when the epochs agreed; None when the
    spread is all within tasks, so no number of epochs gets there: add tasks)."""
    candidate = [list(c) for c, _ in pairs]
    baseline = [list(b) for _, b in pairs]
    counts = [len(c) for c in candidate] + [len(b) for b in baseline]
    row: dict[str, Any] = {"tasks": len(pairs), "epochs_max": max(counts, default=0),
                           "within_candidate": None, "within_baseline": None, "within_one_epoch": None,
                           "between": None, "observed": None, "within_share": None, "k_enough": None,
                           "agreed": None, "enough_share": enough}
    if not pairs or max(counts) < 2:
        return row  # one epoch per task: nothing to split
    within_c = _pooled_within(candidate) or 0.0
    within_b = _pooled_within(baseline) or 0.0
    within_one = within_c + within_b
    differences = [sum(c) / len(c) - sum(b) / len(b) for c, b in zip(candidate, baseline)]
    mean = sum(differences) / len(differences)
    observed = (sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)) if len(differences) > 1 else 0.0
    within_now = sum(within_c / len(c) + within_b / len(b) for c, b in zip(candidate, baseline)) / len(pairs)
    between = max(0.0, observed - within_now)
    agreed = all(max(v) - min(v) <= 1e-12 for v in candidate + baseline if len(v) >= 2)
    row.update(within_candidate=within_c, within_baseline=within_b, within_one_epoch=within_one, between=between,
               observed=observed, agreed=agreed, k_enough=k_enough(within_one, between, enough),
               within_share=(min(1.0, within_now / observed) if observed > 0 else (0.0 if within_now == 0 else 1.0)))
    return row


def k_enough(within_one_epoch: float, between: float, enough: float = WITHIN_SHARE_ENOUGH) -> int | None:
    """The smallest k with (W/k) / (between + W/k) <= enough; 1 with no within-task spread,
    None with no between-task spread (no k reaches it)."""
    if within_one_epoch <= 0:
        return 1
    if between <= 0:
        return None
    return max(1, math.ceil(within_one_epoch * (1 - enough) / (enough * between) - 1e-9))


def spread_ratio(epochs: int, within_share: float) -> float:
    """The task difference's standard deviation with k epochs over its value with one, when
    `within_share` of one epoch's variance is within-task: sqrt(1 - w + w / k)."""
    return math.sqrt(1.0 - within_share + within_share / epochs)


def epochs_gain(smallest_one_epoch: float | None, threshold: float, epochs: int, within_share: float,
                power: float, alpha_each: float) -> dict[str, Any]:
    """What k epochs buy before paying: the smallest confirmable improvement with k epochs (the
    one-epoch figure, simulated through the test, scaled by spread_ratio; never below the bar)
    and the power at the one-epoch figure (normal approximation), against `power` with one."""
    ratio = spread_ratio(epochs, within_share)
    if smallest_one_epoch is None:
        return {"epochs": epochs, "within_share": within_share, "spread_ratio": ratio,
                "smallest_confirmable_abs": None, "power_at_one_epoch_figure": None}
    z_alpha, z_power = _NORMAL.inv_cdf(1.0 - alpha_each), _NORMAL.inv_cdf(power)
    return {"epochs": epochs, "within_share": within_share, "spread_ratio": ratio,
            "smallest_confirmable_abs": max(threshold, smallest_one_epoch * ratio),
            "power_at_one_epoch_figure": _NORMAL.cdf((z_alpha + z_power) / ratio - z_alpha)}
