"""How the simulator grades a judge prompt: deterministically from the rubric and the answer,
so judge-scored runs work offline and tests know the grade in advance.

A criterion is met when at least half of its content words (4+ letters, not stop words) occur
in the answer; the score is the fraction of criteria met, rounded to two decimals."""

from __future__ import annotations

import json
import re

from shared.scoring.judge import JudgePrompt

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]{3,}")
_STOP_WORDS = frozenset(
    "that this with from what when where which while their there them they then than into onto "
    "your yours have has been being were will would should could must also only each every such "
    "about over under more most less least very does answer mentions states says gives explains "
    "includes clearly".split()
)
GARBAGE_REPLY = "Grading complete. The answer looks fine overall, I would give it a solid mark!"


def content_words(text: str) -> set[str]:
    return {w.strip("'-") for w in _WORD.findall(text.lower())} - _STOP_WORDS


def criterion_met(criterion: str, answer_words: set[str]) -> bool:
    wanted = content_words(criterion)
    return not wanted or 2 * len(wanted & answer_words) >= len(wanted)


def rubric_grade(rubric: list[str], answer: str) -> tuple[float, list[str]]:
    """(fraction of criteria met, the criteria missed)."""
    words = content_words(answer)
    missed = [c for c in rubric if not criterion_met(c, words)]
    return round((len(rubric) - len(missed)) / len(rubric), 2), missed


def judge_reply(prompt: JudgePrompt) -> str:
    """The JSON a judge model answers with."""
    grade, missed = rubric_grade(prompt.rubric, prompt.answer)
    met = len(prompt.rubric) - len(missed)
    reason = f"meets {met} of {len(prompt.rubric)} criteria" + (f"; misses: {missed[0]}" if missed else "")
    return json.dumps({"score": grade, "reason": reason})
