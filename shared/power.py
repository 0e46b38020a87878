"""Power of the decision's test before and after paying: how many paired tasks settle a
comparison at 80% power, and the smallest improvement a suite of n tasks can confirm.

Power is the share of seeded samples from the assumed truth (a distribution of the paired
differences) on which the decision's own test (shared.stats) gives the verdict: GO when the
statistic at 0 clears z and the mean meets the threshold, NO-GO when the statistic at the
threshold is below -z. A normal formula (n = ((z_a + z_b) sd / effect)^2) misses by far here:
the test's spread is estimated from the same few discordant tasks, and with n=124 draws of
"b=2, c=0 of 20" it promised 80% where the test says GO 97% of the time. bench/decision.py
checks the 80% (GO rate at the tasks-needed n, the observed effect as the truth: 75-85%).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from statistics import NormalDist

import numpy as np

from shared.stats import statistic, support

POWER = 0.8
MAX_TASKS = 1_000_000
DRAWS = 2_000  # samples per power estimate (standard error 0.009 at 80%)
SEED = 20261203  # the same numbers for the same data, every time
_NORMAL = NormalDist()
GO_RULES = ("better", "bar")  # [decision] go


@dataclass(frozen=True)
class Truth:
    """A distribution of paired differences: values in [-1, 1] (with -1 and +1 present) and
    their probabilities."""

    values: np.ndarray
    probabilities: np.ndarray

    @classmethod
    def observed(cls, differences) -> "Truth":
        values, counts = support(np.asarray(differences, dtype=float))
        return cls(values, counts / counts.sum())

    @classmethod
    def binary(cls, wins: float, losses: float) -> "Truth":
        """0/1 scores: the candidate alone right on `wins` of the tasks, alone wrong on `losses`."""
        return cls(np.array([-1.0, 0.0, 1.0]), np.array([losses, 1.0 - wins - losses, wins]))

    @property
    def mean(self) -> float:
        return float(self.probabilities @ self.values)


def go_floor(threshold: float, go: str) -> float:
    """The value GO's interval end must clear: 0 under "better" (and the estimate must meet the
    threshold), the threshold itself under "bar" (never below 0)."""
    return max(threshold, 0.0) if go == "bar" else 0.0


def _chance(truth: Truth, n: int, threshold: float, alpha_each: float, verdict: str, go: str = "better") -> float:
    """P(the verdict at n tasks drawn from `truth`), over DRAWS seeded samples through the
    decision's own test: GO = statistic at go_floor above z (and, under "better", the mean at
    the threshold); NO-GO = statistic at the threshold below -z."""
    if n <= 0:
        return 0.0
    rng = np.random.default_rng(SEED)
    counts = rng.multinomial(n, truth.probabilities, size=DRAWS).astype(float)
    z = _NORMAL.inv_cdf(1.0 - alpha_each)
    if verdict == "GO":
        mean = counts @ truth.values / n
        floor = np.full(DRAWS, min(go_floor(threshold, go), 0.999))
        passed = statistic(truth.values, counts, floor) > z
        return float(np.mean(passed & (mean > 0) & (mean >= threshold - 1e-9)))
    at = np.full(DRAWS, min(max(threshold, -0.999), 0.999))
    return float(np.mean(statistic(truth.values, counts, at) < -z))


def go_power(truth: Truth, n: int, threshold: float, alpha_each: float, go: str = "better") -> float:
    return _chance(truth, n, threshold, alpha_each, "GO", go)


def no_go_power(truth: Truth, n: int, threshold: float, alpha_each: float) -> float:
    """P(the interval's upper end falls below the threshold)."""
    return _chance(truth, n, threshold, alpha_each, "NO-GO")


def tasks_needed(truth: Truth, threshold: float, alpha_each: float, power: float = POWER,
                 go: str = "better") -> int | None:
    """The smallest number of paired tasks at which this truth gets its verdict (GO when its
    mean meets the threshold, else NO-GO) with probability `power`; None if no suite of up to
    MAX_TASKS would (a mean exactly at the threshold, or 0)."""
    if truth.mean > max(threshold, 0.0):
        def chance(truth, n, threshold, alpha_each):
            return go_power(truth, n, threshold, alpha_each, go)
    elif truth.mean < threshold:
        chance = no_go_power
    else:
        return None
    if chance(truth, MAX_TASKS, threshold, alpha_each) < power:
        return None
    low, high = 0, 1
    while chance(truth, high, threshold, alpha_each) < power:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if chance(truth, middle, threshold, alpha_each) >= power:
            high = middle
        else:
            low = middle
    return high


def can_ever_go(n: int, alpha_each: float) -> bool:
    """Whether even the best possible data (the candidate alone right on every task) clears
    the test: with too few tasks, no outcome gives GO."""
    if n <= 0:
        return False
    z = _NORMAL.inv_cdf(1.0 - alpha_each)
    values = np.array([-1.0, 0.0, 1.0])
    return bool(statistic(values, np.array([[0.0, 0.0, float(n)]]), np.zeros(1))[0] > z)


@dataclass(frozen=True)
class Failures:
    """What a run loses to failed jobs, for the power figure: the share of candidate jobs that
    end in `error` (scored 0: a loss where the baseline was right, a tie where it was wrong), the
    share of tasks left out (the baseline failed, or never attempted), and the share of the
    baseline's right answers the candidate gets wrong when it answers."""

    candidate_errors: float = 0.0
    left_out: float = 0.0
    loss_share: float = 0.05


def truth_with_failures(improvement: float, baseline_accuracy: float, failures: Failures) -> Truth:
    """The paired 0/1 differences the decision sees when the improvement it measures (errors
    counted as 0) is `improvement`: the candidate misses `loss_share` of the baseline's right
    answers when it answers, and errs on `candidate_errors` of the tasks (a loss where the
    baseline was right)."""
    kept = 1.0 - failures.candidate_errors
    losses = (failures.loss_share * kept + failures.candidate_errors) * baseline_accuracy
    return Truth.binary(improvement + losses, losses)


def smallest_confirmable(n: int, baseline_accuracy: float, min_improvement: float, alpha_each: float,
                         loss_share: float, power: float = POWER, *, go: str = "better",
                         failures: Failures | None = None, design_effect: float = 1.0) -> float | None:
    """The smallest absolute improvement (as the decision measures it, errors counted as 0)
    that n planned paired 0/1 tasks confirm (GO under `go`) with probability `power`, when the
    baseline is right on `baseline_accuracy` of them and the candidate gets `loss_share` of
    those wrong, with `failures` (errors, tasks left out) as well. None when even a candidate
    right on every task the baseline misses does not reach that power."""
    failures = failures or Failures(loss_share=loss_share)
    paired = int(round(n * (1.0 - failures.left_out) / max(design_effect, 1.0)))  # independent tasks
    if paired <= 0 or not can_ever_go(paired, alpha_each):
        return None
    losses = truth_with_failures(0.0, baseline_accuracy, failures).probabilities[0]
    # wins cannot exceed the baseline's misses the candidate answers
    ceiling = (1.0 - baseline_accuracy) * (1.0 - failures.candidate_errors) - losses
    threshold = min_improvement * baseline_accuracy

    def chance(improvement: float) -> float:
        return go_power(truth_with_failures(improvement, baseline_accuracy, failures), paired, threshold,
                        alpha_each, go)

    if ceiling <= 0 or chance(ceiling) < power:
        return None
    low, high = 0.0, ceiling
    for _ in range(16):  # to 1e-5 of the range: the report shows a tenth of a point
        middle = (low + high) / 2.0
        low, high = (low, middle) if chance(middle) >= power else (middle, high)
    return max(high, threshold)


def confirmable(tasks: int, baseline_accuracy: float | None, rule: Any, alpha_each: float, *,
                go: str | None = None, failures: Failures | None = None,
                design_effect: float = 1.0) -> tuple[bool, float | None]:
    """(whether this many tasks can give GO at all, the smallest improvement they confirm at 80%
    power from `baseline_accuracy` under `rule`'s bar and GO (or `go`), with the rule's assumed
    losses or the run's `failures`): what the dry run and the report both state."""
    smallest = (smallest_confirmable(tasks, baseline_accuracy, rule.min_improvement, alpha_each,
                                     rule.assumed_loss_share, go=go or rule.go, failures=failures,
                                     design_effect=design_effect)
                if baseline_accuracy is not None else None)
    return can_ever_go(tasks, alpha_each), smallest


def confirmable_by_rule(tasks: int, baseline_accuracy: float | None, rule: Any, alpha_each: float, *,
                        failures: Failures | None = None, design_effect: float = 1.0) -> dict[str, float | None]:
    """The smallest improvement confirmed at 80% power under each GO rule, "better" and "bar",
    so that the chosen one's promise is stated with what it costs."""
    return {go: confirmable(tasks, baseline_accuracy, rule, alpha_each, go=go, failures=failures,
                            design_effect=design_effect)[1]
            for go in GO_RULES}
