"""Wrong answers the simulator gives when a model 'misses': plausible (a distractor, a typical
slip, a hedge) and low-scoring, the same for the same task and seed. Only the simulator needs
them, so they live here rather than with the scorers."""

from __future__ import annotations

import json
import random
from typing import Any

from shared.scoring import JudgeScorer, score_spec
from shared.scoring.scorers import JsonScorer, NumericScorer
from shared.scoring.text import fmt
from simulator.judging import rubric_grade

WRONG_MAX_SCORE = 0.34  # what a wrong answer may score at most

HEDGES = (
    "I'm not able to determine that from the information provided.",
    "It depends on several factors that are not specified here.",
    "Sorry, I can't help with that request.",
    "Thanks for your message. Let me look into this and get back to you.",
    "There is not enough context to give a definitive response.",
)


def wrong_answer(task: Any, seed: int) -> str:
    """A plausible but wrong answer scoring <= WRONG_MAX_SCORE, the same for the same task and seed."""
    scorer = task.scorer
    rng = random.Random(f"{getattr(task, 'key', '')}:{seed}")
    candidates = list(scorer.distractors)
    if isinstance(scorer, NumericScorer):
        candidates += _wrong_numbers(scorer, rng)
    elif isinstance(scorer, JsonScorer):
        candidates += _wrong_json(scorer, rng)
    rng.shuffle(candidates)
    hedges = list(HEDGES)
    rng.shuffle(hedges)
    for candidate in candidates + hedges:
        if points(scorer, candidate) <= WRONG_MAX_SCORE:
            return candidate
    return ""


def points(scorer: Any, answer: str) -> float:
    """What an answer scores: locally, or as the simulated judge would grade it."""
    if isinstance(scorer, JudgeScorer):
        return rubric_grade(scorer.rubric, answer)[0]
    return score_spec(scorer, answer).score


def _wrong_numbers(scorer: NumericScorer, rng: random.Random) -> list[str]:
    """Typical slips: a percentage off, a decimal place or sign wrong, a nearby integer."""
    expected = scorer.expected
    decimals = len(fmt(expected).partition(".")[2])
    base = expected if expected else 10.0
    options = [
        base * (1 + rng.choice((-1, 1)) * rng.uniform(0.08, 0.4)),
        base * 10,
        -base if base < 0 else base / 2,
        base + rng.choice((-1, 1)) * rng.randint(2, 9),
    ]
    templates = ("Answer: {}", "{}", "The answer is {}.")
    return [rng.choice(templates).format(fmt(round(v, decimals))) for v in options]


def _wrong_json(scorer: JsonScorer, rng: random.Random) -> list[str]:
    """A model that ignored the requested schema, or whose JSON got cut off."""
    keys = scorer.required_keys + list(scorer.values)
    renamed = {f"{k.split('.')[-1]}_guess": "unknown" for k in keys}
    truncated = json.dumps({k: "unknown" for k in keys}, indent=2)[: rng.randint(8, 24)]
    return [
        f"```json\n{json.dumps({'answer': 'unclear', **renamed})}\n```",
        f"Here is the result:\n```json\n{truncated}",
    ]
