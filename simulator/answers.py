"""What a simulated model says: it knows the suites' expected answers and is right with the
probability its quality gives. The draw hashes (seed, model, prompt) instead of using an RNG,
so a run is reproducible and a retried call gets the same answer whatever the arrival order; a
sampled request (temperature > 0, simulator.sampling) adds its own draw key to the hash.
A judge prompt (shared.scoring.judge) is graded from its rubric and answer (simulator.judging)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.scoring import reference_answer
from shared.scoring.judge import read_judge_prompt
from shared.suite import Suite, SuiteTask, load_suite

from simulator.judging import GARBAGE_REPLY, judge_reply
from simulator.text import generic_reply
from simulator.wrong import wrong_answer


@dataclass(frozen=True)
class Draw:
    """A uniform number in [0, 1) for the right/wrong decision, and an integer for variants."""

    uniform: float
    variant: int


def draw_for(seed: int, model: str, prompt: str, sample: str | None = None) -> Draw:
    """`sample`: a sampled request's own draw key (simulator.sampling); None: greedy decoding,
    the same answer for the same (seed, model, prompt) every time."""
    text = f"{seed}\x00{model}\x00{prompt}" + ("" if sample is None else f"\x00{sample}")
    digest = hashlib.sha256(text.encode()).digest()
    return Draw(
        uniform=int.from_bytes(digest[:8], "big") / 2**64,
        variant=int.from_bytes(digest[8:16], "big"),
    )


class Oracle:
    """Answers prompts for one or more suites (comma-separated names or folders; none: every
    prompt gets a generic reply). `suite` is the first, for callers that know only one."""

    def __init__(self, suite_names: str | None) -> None:
        self.suite_name = suite_names
        names = [n.strip() for n in (suite_names or "").split(",") if n.strip()]
        self.suites: list[Suite] = [load_suite(name) for name in names]
        self.suite: Suite | None = self.suites[0] if self.suites else None

    def task_for(self, prompt: str) -> SuiteTask | None:
        return next((t for s in self.suites if (t := s.by_prompt(prompt)) is not None), None)

    def answer(self, prompt: str, model: str, quality: float, seed: int, *, judge_garbage: bool = False,
               fixed: str | None = None, sample: str | None = None) -> str:
        """`fixed`: what the model says to every prompt but a judge's (SimulatorConfig.answers);
        `sample`: the draw key of a sampled request (None: greedy, see draw_for)."""
        judged = read_judge_prompt(prompt)
        if judged is not None:
            return GARBAGE_REPLY if judge_garbage else judge_reply(judged)
        if fixed is not None:
            return fixed
        draw = draw_for(seed, model, prompt, sample)
        task = self.task_for(prompt)
        if task is None:
            return generic_reply(draw.variant)
        if draw.uniform < quality:
            return reference_answer(task)
        return wrong_answer(task, draw.variant)
