"""Scorers for suite tasks: turn a model's free-text answer into a score in 0..1.

A scorer spec is a plain dict with a `type` (JSON-serialisable, stored with the task):

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
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

# An answer is judged on its first MAX_OUTPUT_CHARS characters, so a runaway generation costs
# bounded time whatever the scorer.
MAX_OUTPUT_CHARS = 100_000
MAX_JSON_CANDIDATES = 64
_FLOAT_SLACK = 1e-9  # makes tolerance boundaries inclusive despite float rounding
WRONG_MAX_SCORE = 0.34  # what the simulator's wrong answers may score at most

SCORER_TYPES = ("exact", "contains", "regex", "numeric", "json", "keywords")
_COMMON_KEYS = {"type", "reference", "distractors"}
_ALLOWED_KEYS = {
    "exact": {"expected", "case_sensitive"},
    "contains": {"all", "any", "none", "case_sensitive"},
    "regex": {"pattern", "ignore_case"},
    "numeric": {"expected", "tolerance", "rel_tolerance"},
    "json": {"required_keys", "values", "tolerance"},
    "keywords": {"keywords", "case_sensitive"},
}


@dataclass(frozen=True)
class ScoreResult:
    score: float
    detail: str


# --- validation --------------------------------------------------------------------------


def validate_scorer(spec: dict) -> None:
    """Reject a spec that could not score anything meaningfully (raised at suite load)."""
    if not isinstance(spec, dict):
        raise ValueError("scorer must be an object")
    kind = spec.get("type")
    if kind not in _ALLOWED_KEYS:
        raise ValueError(f"unknown scorer type {kind!r} (known: {', '.join(SCORER_TYPES)})")
    unknown = set(spec) - _COMMON_KEYS - _ALLOWED_KEYS[kind]
    if unknown:
        raise ValueError(f"{kind} scorer: unknown key {sorted(unknown)[0]!r}")
    if "reference" in spec and not isinstance(spec["reference"], str):
        raise ValueError("'reference' must be a string")
    if "distractors" in spec and not _is_str_list(spec["distractors"]):
        raise ValueError("'distractors' must be a list of strings")
    for flag in ("case_sensitive", "ignore_case"):
        if flag in spec and not isinstance(spec[flag], bool):
            raise ValueError(f"{flag!r} must be true or false")
    _VALIDATORS[kind](spec)


def _validate_exact(spec: dict) -> None:
    expected = spec.get("expected")
    if not (isinstance(expected, str) and expected.strip()) and not (
        _is_str_list(expected) and expected and all(e.strip() for e in expected)
    ):
        raise ValueError("exact scorer needs 'expected': a non-empty string or list of strings")


def _validate_contains(spec: dict) -> None:
    for key in ("all", "any", "none"):
        if key in spec and not _is_str_list(spec[key]):
            raise ValueError(f"contains scorer: {key!r} must be a list of strings")
    if not (spec.get("all") or spec.get("any")):
        raise ValueError("contains scorer needs a non-empty 'all' or 'any'")


def _validate_regex(spec: dict) -> None:
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("regex scorer needs 'pattern': a non-empty string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex scorer: invalid pattern ({exc})") from None
    if "reference" not in spec:
        raise ValueError("regex scorer needs a 'reference' answer that matches the pattern")


def _validate_numeric(spec: dict) -> None:
    if not _is_number(spec.get("expected")):
        raise ValueError("numeric scorer needs 'expected': a number")
    for key in ("tolerance", "rel_tolerance"):
        if key in spec and not (_is_number(spec[key]) and spec[key] >= 0):
            raise ValueError(f"numeric scorer: {key!r} must be a number >= 0")


def _validate_json(spec: dict) -> None:
    keys = spec.get("required_keys", [])
    values = spec.get("values", {})
    if not _is_str_list(keys):
        raise ValueError("json scorer: 'required_keys' must be a list of strings")
    if not isinstance(values, dict):
        raise ValueError("json scorer: 'values' must be an object")
    if not keys and not values:
        raise ValueError("json scorer needs 'required_keys' or 'values'")
    if "tolerance" in spec and not (_is_number(spec["tolerance"]) and spec["tolerance"] >= 0):
        raise ValueError("json scorer: 'tolerance' must be a number >= 0")


def _validate_keywords(spec: dict) -> None:
    keywords = spec.get("keywords")
    if not isinstance(keywords, list) or not keywords:
        raise ValueError("keywords scorer needs 'keywords': a non-empty list")
    for kw in keywords:
        if not ((isinstance(kw, str) and kw.strip()) or (_is_str_list(kw) and kw)):
            raise ValueError("keywords scorer: each keyword is a string or a list of synonyms")


_VALIDATORS: dict[str, Callable[[dict], None]] = {
    "exact": _validate_exact,
    "contains": _validate_contains,
    "regex": _validate_regex,
    "numeric": _validate_numeric,
    "json": _validate_json,
    "keywords": _validate_keywords,
}


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- scoring -----------------------------------------------------------------------------


def score(task: Any, output: str) -> ScoreResult:
    """Score one answer to a (validated) task. Never raises on the answer text."""
    return score_spec(task.scorer, output)


def score_spec(spec: dict, output: str) -> ScoreResult:
    """Score against a bare (validated) spec, for callers that hold no task."""
    text = output[:MAX_OUTPUT_CHARS] if isinstance(output, str) else ""
    return _SCORERS[spec["type"]](spec, text)


def _score_exact(spec: dict, text: str) -> ScoreResult:
    accepted = spec["expected"] if isinstance(spec["expected"], list) else [spec["expected"]]
    cased = spec.get("case_sensitive", False)
    answer = _bare_answer(text, cased)
    if any(answer == _bare_answer(e, cased) for e in accepted):
        return ScoreResult(1.0, "exact match")
    shown = answer if len(answer) <= 40 else answer[:37] + "..."
    return ScoreResult(0.0, f"expected {accepted[0]!r}, got {shown!r}")


def _score_contains(spec: dict, text: str) -> ScoreResult:
    cased = spec.get("case_sensitive", False)
    missing = [t for t in spec.get("all", []) if not _has_term(text, t, cased)]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        return ScoreResult(0.0, f"missing {missing[0]!r}{more}")
    any_terms = spec.get("any", [])
    if any_terms and not any(_has_term(text, t, cased) for t in any_terms):
        return ScoreResult(0.0, f"none of {', '.join(map(repr, any_terms))}")
    forbidden = [t for t in spec.get("none", []) if _has_term(text, t, cased)]
    if forbidden:
        return ScoreResult(0.0, f"contains forbidden {forbidden[0]!r}")
    return ScoreResult(1.0, "all required terms present")


def _score_regex(spec: dict, text: str) -> ScoreResult:
    flags = re.IGNORECASE if spec.get("ignore_case", True) else 0
    if re.search(spec["pattern"], text.strip(), flags):
        return ScoreResult(1.0, "pattern matched")
    return ScoreResult(0.0, "pattern not matched")


def _score_numeric(spec: dict, text: str) -> ScoreResult:
    expected = float(spec["expected"])
    value = extract_number(text)
    if value is None:
        return ScoreResult(0.0, "no number found")
    if _close(value, expected, spec.get("tolerance", 0.0), spec.get("rel_tolerance", 0.0)):
        return ScoreResult(1.0, f"got {_fmt(value)}, expected {_fmt(expected)}")
    return ScoreResult(0.0, f"got {_fmt(value)}, expected {_fmt(expected)}{_tolerance_text(spec)}")


def _score_json(spec: dict, text: str) -> ScoreResult:
    keys = spec.get("required_keys", [])
    values = spec.get("values", {})
    total = 1 + len(keys) + len(values)
    obj = extract_json_object(text)
    if obj is None:
        return ScoreResult(0.0, f"0/{total} checks: no JSON object found")
    failed = [f"key {k!r}" for k in keys if _lookup(obj, k) is _MISSING]
    tolerance = spec.get("tolerance", 0.0)
    failed += [f"value {k!r}" for k, v in values.items() if not _same(_lookup(obj, k), v, tolerance)]
    passed = total - len(failed)
    detail = f"{passed}/{total} checks" + (f": failed {', '.join(failed)}" if failed else "")
    return ScoreResult(passed / total, detail)


def _score_keywords(spec: dict, text: str) -> ScoreResult:
    cased = spec.get("case_sensitive", False)
    keywords = spec["keywords"]
    missing = [
        kw if isinstance(kw, str) else kw[0]
        for kw in keywords
        if not any(_has_term(text, t, cased) for t in ([kw] if isinstance(kw, str) else kw))
    ]
    found = len(keywords) - len(missing)
    detail = f"{found}/{len(keywords)} keywords"
    if missing:
        detail += f": missing {', '.join(map(repr, missing[:3]))}" + (" ..." if len(missing) > 3 else "")
    return ScoreResult(found / len(keywords), detail)


_SCORERS: dict[str, Callable[[dict, str], ScoreResult]] = {
    "exact": _score_exact,
    "contains": _score_contains,
    "regex": _score_regex,
    "numeric": _score_numeric,
    "json": _score_json,
    "keywords": _score_keywords,
}


# --- text helpers ------------------------------------------------------------------------

_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " "})
_ANSWER_PREFIX = re.compile(r"^(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)
_WRAPPING = " \t\n\"'`*_"


def _normalise(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.translate(_TYPOGRAPHY).split())
    return text if case_sensitive else text.casefold()


def _bare_answer(text: str, case_sensitive: bool) -> str:
    """The answer stripped of what models wrap around it: markdown, quotes, "Answer:", a period."""
    answer = _normalise(text, case_sensitive).strip(_WRAPPING)
    answer = _ANSWER_PREFIX.sub("", answer).strip(_WRAPPING)
    return answer.rstrip(".!").strip(_WRAPPING)


def _has_term(text: str, term: str, case_sensitive: bool) -> bool:
    needle = re.escape(_normalise(term, case_sensitive))
    if re.match(r"\w", term):
        needle = r"(?<!\w)" + needle
    if re.search(r"\w$", term):
        needle += r"(?!\w)"
    return re.search(needle, _normalise(text, case_sensitive)) is not None


_NUMBER = r"(?<![\w.])(-?)\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_MARKED_NUMBER_RE = re.compile(
    r"\banswer\b[^\w-]{0,4}(?:is[^\w-]{0,4})?(?:approximately |about |roughly |~)?" + _NUMBER, re.IGNORECASE
)


def extract_number(text: str) -> float | None:
    """The number right after "answer:"/"answer is" (the last such), else the last number."""
    text = text.translate(_TYPOGRAPHY)
    marked = list(_MARKED_NUMBER_RE.finditer(text))
    match = marked[-1] if marked else None
    if match is None:
        numbers = list(_NUMBER_RE.finditer(text))
        match = numbers[-1] if numbers else None
    if match is None:
        return None
    sign, digits = match.groups()
    return float(sign + digits.replace(",", ""))


def _close(value: float, expected: float, tolerance: float, rel_tolerance: float) -> bool:
    diff = abs(value - expected)
    allowed = max(tolerance, rel_tolerance * abs(expected))
    return diff <= allowed + _FLOAT_SLACK * max(1.0, abs(expected))


def _tolerance_text(spec: dict) -> str:
    parts = []
    if spec.get("tolerance"):
        parts.append(f"\u00b1{_fmt(spec['tolerance'])}")
    if spec.get("rel_tolerance"):
        parts.append(f"\u00b1{_fmt(spec['rel_tolerance'] * 100)}%")
    return f" ({' or '.join(parts)})" if parts else ""


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in the text: inside ```json fences first, else anywhere in it."""
    candidates = [m.group(1) for m in _FENCED.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        starts = [m.start() for m in re.finditer(r"\{", candidate)][:MAX_JSON_CANDIDATES]
        for start in starts:
            try:
                obj, _ = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                return obj
    return None


_MISSING = object()


def _lookup(obj: dict, path: str) -> Any:
    """A key, or a dotted path into nested objects ("totals.revenue")."""
    if path in obj:
        return obj[path]
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _same(actual: Any, expected: Any, tolerance: float) -> bool:
    """Loose JSON equality: strings ignore case/spacing, numbers within tolerance (numeric
    strings like "12.5%" count), lists ignore order, objects need every expected key."""
    if isinstance(expected, bool) or expected is None:
        return actual is expected
    if _is_number(expected):
        if isinstance(actual, str):
            actual = extract_number(actual) if re.fullmatch(r"\s*-?\$?[\d,.]+\s*%?\s*", actual) else None
        return _is_number(actual) and _close(float(actual), float(expected), tolerance, 0.0)
    if isinstance(expected, str):
        return isinstance(actual, str) and _normalise(actual, False) == _normalise(expected, False)
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return False
        remaining = list(actual)
        for item in expected:
            match = next((i for i, a in enumerate(remaining) if _same(a, item, tolerance)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            _same(actual.get(k, _MISSING), v, tolerance) for k, v in expected.items()
        )
    return False


# --- answers for the simulator -----------------------------------------------------------


def reference_answer(task: Any) -> str:
    """A realistic answer that scores 1.0: the spec's own ``reference``, else one built from it."""
    spec = task.scorer
    if "reference" in spec:
        return spec["reference"]
    kind = spec["type"]
    if kind == "exact":
        return spec["expected"][0] if isinstance(spec["expected"], list) else spec["expected"]
    if kind == "contains":
        terms = spec.get("all", []) + spec.get("any", [])[:1]
        return f"{_join(terms)}."
    if kind == "numeric":
        return f"Answer: {_fmt(spec['expected'])}"
    if kind == "json":
        obj: dict[str, Any] = {}
        for key in spec.get("required_keys", []):
            _put(obj, key, "see details")
        for key, value in spec.get("values", {}).items():
            _put(obj, key, value)
        return f"```json\n{json.dumps(obj, indent=2)}\n```"
    keywords = [kw if isinstance(kw, str) else kw[0] for kw in spec["keywords"]]
    return f"Key points: {_join(keywords)}."


_HEDGES = (
    "I'm not able to determine that from the information provided.",
    "It depends on several factors that are not specified here.",
    "Sorry, I can't help with that request.",
    "Thanks for your message. Let me look into this and get back to you.",
    "There is not enough context to give a definitive response.",
)


def wrong_answer(task: Any, seed: int) -> str:
    """A plausible but wrong answer scoring <= 0.34, the same for the same task and seed."""
    spec = task.scorer
    rng = random.Random(f"{getattr(task, 'key', '')}:{seed}")
    candidates = list(spec.get("distractors", []))
    if spec["type"] == "numeric":
        candidates += _wrong_numbers(spec, rng)
    elif spec["type"] == "json":
        candidates += _wrong_json(spec, rng)
    rng.shuffle(candidates)
    hedges = list(_HEDGES)
    rng.shuffle(hedges)
    for candidate in candidates + hedges:
        if score_spec(spec, candidate).score <= WRONG_MAX_SCORE:
            return candidate
    return ""


def _wrong_numbers(spec: dict, rng: random.Random) -> list[str]:
    """Typical slips: a percentage off, a decimal place or sign wrong, a nearby integer."""
    expected = float(spec["expected"])
    decimals = len(_fmt(expected).partition(".")[2])
    base = expected if expected else 10.0
    options = [
        base * (1 + rng.choice((-1, 1)) * rng.uniform(0.08, 0.4)),
        base * 10,
        -base if base < 0 else base / 2,
        base + rng.choice((-1, 1)) * rng.randint(2, 9),
    ]
    templates = ("Answer: {}", "{}", "The answer is {}.")
    return [rng.choice(templates).format(_fmt(round(v, decimals))) for v in options]


def _wrong_json(spec: dict, rng: random.Random) -> list[str]:
    """A model that ignored the requested schema, or whose JSON got cut off."""
    keys = spec.get("required_keys", []) + list(spec.get("values", {}))
    renamed = {f"{k.split('.')[-1]}_guess": "unknown" for k in keys}
    truncated = json.dumps({k: "unknown" for k in keys}, indent=2)[: rng.randint(8, 24)]
    return [
        f"```json\n{json.dumps({'answer': 'unclear', **renamed})}\n```",
        f"Here is the result:\n```json\n{truncated}",
    ]


def _put(obj: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


def _join(terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
