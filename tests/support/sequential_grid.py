"""Simulated runs for the sequential design's error-control tests: many runs at once, each agent
with its own baseline accuracy, ties (the candidate repeating the baseline's answer), candidate
and baseline errors, 0/1 or quarter-step scores, tasks in families whose results move together."""

from __future__ import annotations

import numpy as np

from bench.sequential_sim import Runs

HALTED = 0.01
EASINESS = 0.15  # each family's accuracy: the agent's +/- this (uniform)
SHARED = 0.5  # the chance a task's draw is its family's, not its own


def mean_accuracy(p: float) -> float:
    """E[clip(p + U, 0, 1)] for U uniform on +/- EASINESS."""
    u = np.linspace(-EASINESS, EASINESS, 20001)
    return float(np.clip(p + u, 0.0, 1.0).mean())


def _draws(rng: np.random.Generator, shape: tuple[int, int, int], labels: np.ndarray, chance: np.ndarray,
           step: float) -> np.ndarray:
    """Scores on the `step` grid with mean `chance` (R, A, T): 1 / step Bernoulli draws, each the
    task family's own uniform with probability SHARED (so a family's results move together)."""
    draws = int(round(1.0 / step))
    total = np.zeros(shape)
    for _ in range(draws):
        family = rng.random(shape[:2] + (int(labels.max()) + 1,))[:, :, labels]
        own = rng.random(shape)
        u = np.where(rng.random(shape) < SHARED, family, own)
        total += u < chance
    return total / draws


def grid_runs(rng: np.random.Generator, runs: int, accuracies: list[float], tasks: int, *, gain: float,
              ties: float, errors: float, step: float = 1.0, family: int = 1) -> Runs:
    """`runs` runs of len(accuracies) agents x `tasks` tasks: the candidate's accuracy net of its
    errors is (1 + gain) x the baseline's; it repeats the baseline's score on a share `ties` of the
    tasks (less where the target needs it); errors: each side's share of `error` jobs (a candidate
    error scores 0, a baseline error leaves the task out), HALTED of the candidate's jobs halted;
    families of `family` tasks share their accuracy and half their draws."""
    agents = len(accuracies)
    shape = (runs, agents, tasks)
    labels = np.arange(tasks) // family
    easiness = rng.uniform(-EASINESS, EASINESS, (runs, agents, int(labels.max()) + 1))[:, :, labels]
    p = np.array(accuracies)[None, :, None]
    chance = np.clip(p + easiness, 0.0, 1.0)
    baseline = _draws(rng, shape, labels, chance, step)
    q = np.zeros(agents)
    tie = np.zeros(agents)
    for a, accuracy in enumerate(accuracies):
        mean = mean_accuracy(accuracy)
        gross = mean * (1.0 + gain) / (1.0 - errors)
        if gross > 1.0:
            raise ValueError(f"a gain of {gain:.0%} net of {errors:.0%} errors is out of reach from {accuracy:.0%}")
        # E[candidate] = tie x mean + (1 - tie) x q = gross, with q in [0, 1]
        tie[a] = min(ties, (1.0 - gross) / (1.0 - mean) if gross > mean else gross / mean)
        q[a] = (gross - tie[a] * mean) / (1.0 - tie[a])
    independent = _draws(rng, shape, labels, np.broadcast_to(q[None, :, None], shape), step)
    repeats = rng.random(shape) < tie[None, :, None]
    candidate = np.where(repeats, baseline, independent)
    u = rng.random(shape)
    candidate = np.where(u < errors, 0.0, candidate)
    halted = (u >= errors) & (u < errors + HALTED)
    paired = (rng.random(shape) >= errors) & ~halted
    return Runs(candidate, baseline, paired, labels if family > 1 else None, step)
