"""A sequential run's look arithmetic (issue #28, design §13), used by the look step
(worker/looks.py) and by the report alike, so both judge the same looks the same way.

- Each agent's tasks are taken in a seeded random order (the run's [decision] seed) and cut
  into `looks` slices; every backend and epoch of a task shares its look (`task_looks`).
- At look k a verdict is judged on the jobs released up to k, with the report's own decision
  code (shared.report.decision.compare, called by shared.report.looks): its information
  fraction is its paired tasks so far over its tasks planned (1 at the design's last look,
  which spends what is left), and its interval ends hold at `shared.sequential.look_alpha_each(fractions so far, its error share)`.
- A verdict that is GO or NO-GO at a look stops there (its path ends); an agent releases its
  next slice iff its own verdict (several candidates: combined, GO if any is) is still open and
  (GO is within its reach, shared.sequential.go_within_reach, or a pooled verdict is still
  open): shared.report.looks.releases, the rule bench/sequential_sim.py measures.

This module holds the arithmetic that needs no report code (the producer's submit imports it);
the judging at each look, with the decision code, is shared.report.looks.
"""

from __future__ import annotations

import random
from typing import Sequence

from shared.models import JobStatus

METHOD = ("group-sequential error spending at the information each look reached (shared.sequential): GO "
          "Lan-DeMets O'Brien-Fleming-like, NO-GO Hwang-Shih-DeCani gamma 1; an open agent stops for futility "
          "(INCONCLUSIVE) once the pooled verdict is settled and its chance of GO by the last look is under 5% "
          "and of NO-GO under 50%")
UNRELEASED = (JobStatus.waiting, JobStatus.not_needed)


def is_sequential(snapshot: dict) -> bool:
    return (snapshot.get("decision") or {}).get("design") == "sequential"


def task_looks(task_ids: Sequence[str], looks: int, seed: int, agent: str) -> dict[str, int]:
    """Each task's look, 1..looks: the agent's tasks in a random order seeded by (seed, agent),
    cut into `looks` slices as even as they go (the first ones a task shorter when uneven)."""
    order = sorted(dict.fromkeys(task_ids))
    random.Random(f"{seed}/{agent}").shuffle(order)
    return {task: position * looks // len(order) + 1 for position, task in enumerate(order)}


def fraction_at(pairs: int, planned: int, look: int, looks: int) -> float:
    """The information a verdict reached at a look: pairs so far over pairs planned, capped at 1;
    the design's last look is 1 whatever it holds (it spends what is left of the error)."""
    if look >= looks:
        return 1.0
    return min(1.0, pairs / planned) if planned else 0.0


def full_references(snapshot: dict) -> set[str]:
    """The reference backends kept running to the end ([decision] references = "full"): all their
    jobs are queued at submit and no look waits for them (only the run's end does)."""
    if (snapshot.get("decision") or {}).get("references") != "full":
        return set()
    return {name for name, backend in (snapshot.get("backends") or {}).items()
            if (backend or {}).get("role") == "reference"}


def settled(verdict: str) -> bool:
    """GO or NO-GO: the verdict's path ends at this look."""
    return verdict in ("GO", "NO-GO")
