"""Scorers for suite tasks: turn a model's free-text answer into a score in 0..1.

Each scorer is one pydantic model (scorers.py: exact, contains, regex, numeric, json, keywords;
judge.py: judge) in one discriminated union on `type`, so validating a spec, scoring an answer
and building a reference answer all live with the scorer they belong to."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError

from shared.scoring.judge import JudgeScorer
from shared.scoring.scorers import (
    BaseScorer,
    ContainsScorer,
    ExactScorer,
    JsonScorer,
    KeywordsScorer,
    NumericScorer,
    RegexScorer,
    ScoreResult,
)
from shared.scoring.text import extract_json_object, extract_number

__all__ = [
    "BaseScorer", "JudgeScorer",
    "MAX_OUTPUT_CHARS", "SCORER_TYPES", "Scorer", "ScoreResult", "extract_json_object", "extract_number",
    "parse_scorer", "reference_answer", "score", "score_spec", "validate_scorer",
]

# An answer is judged on its first MAX_OUTPUT_CHARS characters, so a runaway generation costs
# bounded time whatever the scorer.
MAX_OUTPUT_CHARS = 100_000

_CLASSES = (ExactScorer, ContainsScorer, RegexScorer, NumericScorer, JsonScorer, KeywordsScorer, JudgeScorer)
Scorer = Annotated[Union[_CLASSES], Field(discriminator="type")]  # type: ignore[valid-type]
SCORER_TYPES: tuple[str, ...] = tuple(get_args(cls.model_fields["type"].annotation)[0] for cls in _CLASSES)
_ADAPTER: TypeAdapter = TypeAdapter(Scorer)


def parse_scorer(spec: Any) -> BaseScorer:
    """A validated scorer from its JSON spec; any problem is one ValueError in a suite author's words."""
    if isinstance(spec, BaseScorer):
        return spec
    if not isinstance(spec, dict):
        raise ValueError("scorer must be an object")
    kind = spec.get("type")
    if kind not in SCORER_TYPES:
        raise ValueError(f"unknown scorer type {kind!r} (known: {', '.join(SCORER_TYPES)})")
    try:
        return _ADAPTER.validate_python(spec)
    except ValidationError as exc:
        raise ValueError(_describe(kind, exc)) from None


def validate_scorer(spec: Any) -> None:
    """Reject a spec that could not score anything meaningfully (raised at suite load)."""
    parse_scorer(spec)


def _describe(kind: str, exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"][1:])  # loc[0] is the union tag
    if error["type"] == "extra_forbidden":
        return f"{kind} scorer: unknown key {field!r}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "missing":
        return f"{kind} scorer needs {field!r}"
    return f"{kind} scorer: {field!r}: {error['msg']}"


def score(task: Any, output: str) -> ScoreResult:
    """Score one answer to a (validated) task with a local scorer. Never raises on the answer text."""
    return score_spec(task.scorer, output)


def score_spec(spec: BaseScorer | dict, output: str) -> ScoreResult:
    """Score against a bare spec, for callers that hold no task."""
    text = output[:MAX_OUTPUT_CHARS] if isinstance(output, str) else ""
    return parse_scorer(spec).score(text)


def reference_answer(task: Any) -> str:
    """A realistic answer that scores 1.0: the spec's own ``reference``, else one built from it."""
    return parse_scorer(task.scorer).reference_answer()
