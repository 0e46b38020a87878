"""The local scorers: each one pydantic model that validates its spec, scores an answer and
builds a reference answer (what a correct model would say), so a new scorer is one class.

Specs (JSON, stored with the task; ``type`` picks the class):

- ``exact``    ``expected`` (a string or a list of accepted strings); the whole answer must equal
               one of them after normalising (case, whitespace, quotes/markdown, a trailing
               period, an "Answer:" prefix).
- ``contains`` ``all`` (every term), ``any`` (at least one term), ``none`` (no term); 1 or 0.
- ``regex``    ``pattern`` searched in the answer (``ignore_case`` defaults to true); needs a
               ``reference`` answer, since an answer cannot be generated from a pattern.
- ``numeric``  ``expected`` with ``tolerance`` (absolute) and/or ``rel_tolerance``; the answer's
               number is the one right after "answer:"/"answer is", else the last number in the
               text. Commas ("1,234.5"), "$", "%" and negatives are understood; "12.5%" reads 12.5.
- ``json``     ``required_keys`` and/or ``values`` (dotted paths allowed); score is the fraction of
               checks passed: valid JSON object + each key present + each value equal.
- ``keywords`` ``keywords`` (each a term or a list of synonyms); score is the fraction found.

Text matching is case-insensitive unless ``case_sensitive`` is true, and a term only matches on
word boundaries ("30 days" is not found in "130 days"). Every spec may carry ``reference`` (a
realistic answer scoring 1.0) and ``distractors`` (plausible wrong answers) for the simulator.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from shared.scoring.text import (
    MISSING,
    bare_answer,
    close,
    extract_json_object,
    extract_number,
    fmt,
    has_term,
    is_number,
    is_str_list,
    join_terms,
    lookup,
    put,
    same,
)


@dataclass(frozen=True)
class ScoreResult:
    score: float
    detail: str


class BaseScorer(BaseModel):
    """What every scorer shares: a reference answer and distractors (for the simulator), and
    a check of the raw spec that words its problems the way a suite author acts on them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Graded locally (False: by the judge backend, a paid call made by the worker).
    local: ClassVar[bool] = True

    reference: str | None = None
    distractors: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "reference" in data and not isinstance(data["reference"], str):
                raise ValueError("'reference' must be a string")
            if "distractors" in data and not is_str_list(data["distractors"]):
                raise ValueError("'distractors' must be a list of strings")
            for flag in ("case_sensitive", "ignore_case"):
                if flag in data and not isinstance(data[flag], bool):
                    raise ValueError(f"{flag!r} must be true or false")
            cls.check(data)
        return data

    @classmethod
    def check(cls, data: dict) -> None:
        """Reject a spec that could not score anything meaningfully (raised at suite load)."""

    def score(self, text: str) -> ScoreResult:
        raise NotImplementedError

    def reference_answer(self) -> str:
        """A realistic answer scoring 1.0: the spec's own ``reference``, else one built from it."""
        return self.reference if self.reference is not None else self.built_reference()

    def built_reference(self) -> str:
        raise NotImplementedError


class ExactScorer(BaseScorer):
    type: Literal["exact"]
    expected: str | list[str]
    case_sensitive: bool = False

    @classmethod
    def check(cls, data: dict) -> None:
        expected = data.get("expected")
        if not (isinstance(expected, str) and expected.strip()) and not (
            is_str_list(expected) and expected and all(e.strip() for e in expected)
        ):
            raise ValueError("exact scorer needs 'expected': a non-empty string or list of strings")

    @property
    def accepted(self) -> list[str]:
        return self.expected if isinstance(self.expected, list) else [self.expected]

    def score(self, text: str) -> ScoreResult:
        answer = bare_answer(text, self.case_sensitive)
        if any(answer == bare_answer(e, self.case_sensitive) for e in self.accepted):
            return ScoreResult(1.0, "exact match")
        shown = answer if len(answer) <= 40 else answer[:37] + "..."
        return ScoreResult(0.0, f"expected {self.accepted[0]!r}, got {shown!r}")

    def built_reference(self) -> str:
        return self.accepted[0]


class ContainsScorer(BaseScorer):
    type: Literal["contains"]
    all: list[str] = []
    any: list[str] = []
    none: list[str] = []
    case_sensitive: bool = False

    @classmethod
    def check(cls, data: dict) -> None:
        for key in ("all", "any", "none"):
            if key in data and not is_str_list(data[key]):
                raise ValueError(f"contains scorer: {key!r} must be a list of strings")
        if not (data.get("all") or data.get("any")):
            raise ValueError("contains scorer needs a non-empty 'all' or 'any'")

    def score(self, text: str) -> ScoreResult:
        cased = self.case_sensitive
        missing = [t for t in self.all if not has_term(text, t, cased)]
        if missing:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            return ScoreResult(0.0, f"missing {missing[0]!r}{more}")
        if self.any and not any(has_term(text, t, cased) for t in self.any):
            return ScoreResult(0.0, f"none of {', '.join(map(repr, self.any))}")
        forbidden = [t for t in self.none if has_term(text, t, cased)]
        if forbidden:
            return ScoreResult(0.0, f"contains forbidden {forbidden[0]!r}")
        return ScoreResult(1.0, "all required terms present")

    def built_reference(self) -> str:
        return f"{join_terms(self.all + self.any[:1])}."


class RegexScorer(BaseScorer):
    type: Literal["regex"]
    pattern: str
    ignore_case: bool = True

    @classmethod
    def check(cls, data: dict) -> None:
        pattern = data.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("regex scorer needs 'pattern': a non-empty string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex scorer: invalid pattern ({exc})") from None
        if "reference" not in data:
            raise ValueError("regex scorer needs a 'reference' answer that matches the pattern")

    def score(self, text: str) -> ScoreResult:
        flags = re.IGNORECASE if self.ignore_case else 0
        if re.search(self.pattern, text.strip(), flags):
            return ScoreResult(1.0, "pattern matched")
        return ScoreResult(0.0, "pattern not matched")


class NumericScorer(BaseScorer):
    type: Literal["numeric"]
    expected: float
    tolerance: float = 0.0
    rel_tolerance: float = 0.0

    @classmethod
    def check(cls, data: dict) -> None:
        if not is_number(data.get("expected")):
            raise ValueError("numeric scorer needs 'expected': a number")
        for key in ("tolerance", "rel_tolerance"):
            if key in data and not (is_number(data[key]) and data[key] >= 0):
                raise ValueError(f"numeric scorer: {key!r} must be a number >= 0")

    def score(self, text: str) -> ScoreResult:
        value = extract_number(text)
        if value is None:
            return ScoreResult(0.0, "no number found")
        if close(value, self.expected, self.tolerance, self.rel_tolerance):
            return ScoreResult(1.0, f"got {fmt(value)}, expected {fmt(self.expected)}")
        return ScoreResult(0.0, f"got {fmt(value)}, expected {fmt(self.expected)}{self._tolerance_text()}")

    def _tolerance_text(self) -> str:
        parts = []
        if self.tolerance:
            parts.append(f"\u00b1{fmt(self.tolerance)}")
        if self.rel_tolerance:
            parts.append(f"\u00b1{fmt(self.rel_tolerance * 100)}%")
        return f" ({' or '.join(parts)})" if parts else ""

    def built_reference(self) -> str:
        return f"Answer: {fmt(self.expected)}"


class JsonScorer(BaseScorer):
    type: Literal["json"]
    required_keys: list[str] = []
    values: dict[str, Any] = {}
    tolerance: float = 0.0

    @classmethod
    def check(cls, data: dict) -> None:
        keys = data.get("required_keys", [])
        values = data.get("values", {})
        if not is_str_list(keys):
            raise ValueError("json scorer: 'required_keys' must be a list of strings")
        if not isinstance(values, dict):
            raise ValueError("json scorer: 'values' must be an object")
        if not keys and not values:
            raise ValueError("json scorer needs 'required_keys' or 'values'")
        if "tolerance" in data and not (is_number(data["tolerance"]) and data["tolerance"] >= 0):
            raise ValueError("json scorer: 'tolerance' must be a number >= 0")

    def score(self, text: str) -> ScoreResult:
        total = 1 + len(self.required_keys) + len(self.values)
        obj = extract_json_object(text)
        if obj is None:
            return ScoreResult(0.0, f"0/{total} checks: no JSON object found")
        failed = [f"key {k!r}" for k in self.required_keys if lookup(obj, k) is MISSING]
        failed += [f"value {k!r}" for k, v in self.values.items() if not same(lookup(obj, k), v, self.tolerance)]
        passed = total - len(failed)
        detail = f"{passed}/{total} checks" + (f": failed {', '.join(failed)}" if failed else "")
        return ScoreResult(passed / total, detail)

    def built_reference(self) -> str:
        obj: dict[str, Any] = {}
        for key in self.required_keys:
            put(obj, key, "see details")
        for key, value in self.values.items():
            put(obj, key, value)
        return f"```json\n{json.dumps(obj, indent=2)}\n```"


class KeywordsScorer(BaseScorer):
    type: Literal["keywords"]
    keywords: list[str | list[str]]
    case_sensitive: bool = False

    @classmethod
    def check(cls, data: dict) -> None:
        keywords = data.get("keywords")
        if not isinstance(keywords, list) or not keywords:
            raise ValueError("keywords scorer needs 'keywords': a non-empty list")
        for kw in keywords:
            if not ((isinstance(kw, str) and kw.strip()) or (is_str_list(kw) and kw)):
                raise ValueError("keywords scorer: each keyword is a string or a list of synonyms")

    @property
    def headwords(self) -> list[str]:
        return [kw if isinstance(kw, str) else kw[0] for kw in self.keywords]

    def score(self, text: str) -> ScoreResult:
        missing = [
            head for head, kw in zip(self.headwords, self.keywords)
            if not any(has_term(text, t, self.case_sensitive) for t in ([kw] if isinstance(kw, str) else kw))
        ]
        found = len(self.keywords) - len(missing)
        detail = f"{found}/{len(self.keywords)} keywords"
        if missing:
            detail += f": missing {', '.join(map(repr, missing[:3]))}" + (" ..." if len(missing) > 3 else "")
        return ScoreResult(found / len(self.keywords), detail)

    def built_reference(self) -> str:
        return f"Key points: {join_terms(self.headwords)}."
