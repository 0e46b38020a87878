"""Text helpers the scorers share: normalising answers, finding terms, numbers and JSON in
them, and loose JSON equality. Pure functions, no scorer knowledge."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_CANDIDATES = 64
_FLOAT_SLACK = 1e-9  # makes tolerance boundaries inclusive despite float rounding


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)



_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " "})
_ANSWER_PREFIX = re.compile(r"^(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)
_WRAPPING = " \t\n\"'`*_"


def normalise(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.translate(_TYPOGRAPHY).split())
    return text if case_sensitive else text.casefold()


def bare_answer(text: str, case_sensitive: bool) -> str:
    """The answer stripped of what models wrap around it: markdown, quotes, "Answer:", a period."""
    answer = normalise(text, case_sensitive).strip(_WRAPPING)
    answer = _ANSWER_PREFIX.sub("", answer).strip(_WRAPPING)
    return answer.rstrip(".!").strip(_WRAPPING)


def has_term(text: str, term: str, case_sensitive: bool) -> bool:
    needle = re.escape(normalise(term, case_sensitive))
    if re.match(r"\w", term):
        needle = r"(?<!\w)" + needle
    if re.search(r"\w$", term):
        needle += r"(?!\w)"
    return re.search(needle, normalise(text, case_sensitive)) is not None


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


def close(value: float, expected: float, tolerance: float, rel_tolerance: float) -> bool:
    diff = abs(value - expected)
    allowed = max(tolerance, rel_tolerance * abs(expected))
    return diff <= allowed + _FLOAT_SLACK * max(1.0, abs(expected))


def fmt(value: float) -> str:
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


MISSING = object()


def lookup(obj: dict, path: str) -> Any:
    """A key, or a dotted path into nested objects ("totals.revenue")."""
    if path in obj:
        return obj[path]
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def same(actual: Any, expected: Any, tolerance: float) -> bool:
    """Loose JSON equality: strings ignore case/spacing, numbers within tolerance (numeric
    strings like "12.5%" count), lists ignore order, objects need every expected key."""
    if isinstance(expected, bool) or expected is None:
        return actual is expected
    if is_number(expected):
        if isinstance(actual, str):
            actual = extract_number(actual) if re.fullmatch(r"\s*-?\$?[\d,.]+\s*%?\s*", actual) else None
        return is_number(actual) and close(float(actual), float(expected), tolerance, 0.0)
    if isinstance(expected, str):
        return isinstance(actual, str) and normalise(actual, False) == normalise(expected, False)
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return False
        remaining = list(actual)
        for item in expected:
            match = next((i for i, a in enumerate(remaining) if same(a, item, tolerance)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            same(actual.get(k, MISSING), v, tolerance) for k, v in expected.items()
        )
    return False


def put(obj: dict, path: str, value: Any) -> None:
    """Set a dotted path in nested objects, creating parents."""
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


def join_terms(terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
