"""What a simulated model says: it knows the suite's expected answers and is right with the
probability its quality gives. The draw hashes (seed, model, prompt) instead of using an RNG,
so a run is reproducible and a retried call gets the same answer whatever the arrival order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.scoring import reference_answer, wrong_answer
from shared.suite import Suite, load_suite

from simulator.text import generic_reply


@dataclass(frozen=True)
class Draw:
    """A uniform number in [0, 1) for the right/wrong decision, and an integer for variants."""

    uniform: float
    variant: int


def draw_for(seed: int, model: str, prompt: str) -> Draw:
    digest = hashlib.sha256(f"{seed}\x00{model}\x00{prompt}".encode()).digest()
    return Draw(
        uniform=int.from_bytes(digest[:8], "big") / 2**64,
        variant=int.from_bytes(digest[8:16], "big"),
    )


class Oracle:
    """Answers prompts for one suite (or none: then every prompt gets a generic reply)."""

    def __init__(self, suite_name: str | None) -> None:
        self.suite_name = suite_name
        self.suite: Suite | None = load_suite(suite_name) if suite_name else None

    def answer(self, prompt: str, model: str, quality: float, seed: int) -> str:
        draw = draw_for(seed, model, prompt)
        task = self.suite.by_prompt(prompt) if self.suite is not None else None
        if task is None:
            return generic_reply(draw.variant)
        if draw.uniform < quality:
            return reference_answer(task)
        return wrong_answer(task, draw.variant)
