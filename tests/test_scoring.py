"""Behaviour of each scorer on hand-written answers, including the awkward ones models produce."""

from __future__ import annotations

import pytest

from shared.scoring import (
    ScoreResult,
    extract_json_object,
    extract_number,
    reference_answer,
    score,
    validate_scorer,
)
from shared.suite import SuiteTask
from simulator.wrong import WRONG_MAX_SCORE, wrong_answer


def make_task(scorer: dict, task_id: str = "t-001") -> SuiteTask:
    return SuiteTask(id=task_id, agent="qa", prompt="?", difficulty="easy", scorer=scorer)


def points(scorer: dict, output: str) -> float:
    return score(make_task(scorer), output).score


# --- exact --------------------------------------------------------------------------------

EXACT = {"type": "exact", "expected": "Canberra"}


@pytest.mark.parametrize(
    "output",
    ["Canberra", "canberra", "  Canberra.\n", "**Canberra**", '"Canberra"', "Answer: Canberra", "**Answer:** canberra"],
)
def test_exact_accepts_the_answer_in_the_wrappers_models_use(output: str) -> None:
    assert points(EXACT, output) == 1.0


@pytest.mark.parametrize("output", ["Sydney", "The capital is Canberra", "Canberra or Sydney", ""])
def test_exact_rejects_anything_else(output: str) -> None:
    assert points(EXACT, output) == 0.0


def test_exact_with_alternatives_and_case_sensitivity() -> None:
    assert points({"type": "exact", "expected": ["Supplier", "the Supplier"]}, "The Supplier") == 1.0
    cased = {"type": "exact", "expected": "Au", "case_sensitive": True}
    assert points(cased, "Au") == 1.0
    assert points(cased, "AU") == 0.0


def test_exact_detail_names_expected_and_got() -> None:
    result = score(make_task(EXACT), "Sydney")
    assert result == ScoreResult(0.0, "expected 'Canberra', got 'sydney'")


# --- contains -----------------------------------------------------------------------------


def test_contains_all_needs_every_term() -> None:
    spec = {"type": "contains", "all": ["rosemary", "sea salt"]}
    assert points(spec, "Rosemary and SEA SALT.") == 1.0
    result = score(make_task(spec), "Just rosemary.")
    assert result.score == 0.0 and "sea salt" in result.detail


def test_contains_any_needs_one_term() -> None:
    spec = {"type": "contains", "any": ["sorry", "apologise", "apologize"]}
    assert points(spec, "We apologize for the delay") == 1.0
    assert points(spec, "Your order is late") == 0.0


def test_contains_none_forbids_terms_and_matches_whole_words() -> None:
    spec = {"type": "contains", "all": ["colour"], "none": ["color"]}
    assert points(spec, "Pick a colour") == 1.0
    assert points(spec, "Pick a colour, any color") == 0.0
    assert points({"type": "contains", "all": ["30 days"]}, "within 130 days") == 0.0
    assert points({"type": "contains", "all": ["20%"]}, "Save 20% today") == 1.0


def test_contains_normalises_whitespace_and_typography() -> None:
    spec = {"type": "contains", "all": ["it's 5-7 business days"]}
    assert points(spec, "It\u2019s 5\u20137\n  business days") == 1.0


# --- regex --------------------------------------------------------------------------------


def test_regex_ignores_case_by_default_and_can_be_strict() -> None:
    spec = {"type": "regex", "pattern": r"\bmonday\W+11[:.]30\b", "reference": "Monday 11:30"}
    assert points(spec, "By MONDAY, 11:30") == 1.0
    assert points(spec, "Monday 09:00") == 0.0
    strict = {**spec, "pattern": r"\A#GreenWeek\Z", "ignore_case": False, "reference": "#GreenWeek"}
    assert points(strict, "  #GreenWeek\n") == 1.0
    assert points(strict, "#greenweek") == 0.0


# --- numeric ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,234.5", 1234.5),
        ("It grew 12.5% year over year", 12.5),
        ("The change was -10%", -10.0),
        ("The change was \u221210 percent", -10.0),
        ("Cost: $4,500 per month", 4500.0),
        ("From 2023-2024 revenue rose", 2024.0),
        ("200 went to 250, so the answer is 25", 25.0),
        ("**Answer:** 72 km/h, i.e. 180 km in 2.5 h", 72.0),
        ("Answer: -3.5 (not 3.5)", -3.5),
        ("We had 200 then 250 users", 250.0),
        ("version v1.2 is out, worth .5", 0.5),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, number: float | None) -> None:
    assert extract_number(text) == number


def test_numeric_absolute_tolerance_boundary_is_inclusive() -> None:
    spec = {"type": "numeric", "expected": 10, "tolerance": 0.5}
    assert points(spec, "10.5") == 1.0
    assert points(spec, "9.5") == 1.0
    assert points(spec, "10.51") == 0.0
    assert points(spec, "9.49") == 0.0


def test_numeric_relative_tolerance_and_exact_default() -> None:
    relative = {"type": "numeric", "expected": 1000, "rel_tolerance": 0.01}
    assert points(relative, "1,010") == 1.0
    assert points(relative, "1,011") == 0.0
    exact = {"type": "numeric", "expected": 44.95}
    assert points(exact, "$44.95") == 1.0
    assert points(exact, "44.96") == 0.0


def test_numeric_without_a_number_scores_zero_with_reason() -> None:
    result = score(make_task({"type": "numeric", "expected": 3}), "I don't know")
    assert result == ScoreResult(0.0, "no number found")


# --- json ---------------------------------------------------------------------------------

JSON_SPEC = {"type": "json", "required_keys": ["summary"], "values": {"category": "billing", "priority": "high"}}


def test_json_full_marks_inside_fences_and_prose() -> None:
    output = 'Sure! Here it is:\n```json\n{"summary": "double charge", "category": "Billing", "priority": "high"}\n```\nAnything else?'
    assert points(JSON_SPEC, output) == 1.0
    bare = 'Result {"summary": "x", "category": "billing", "priority": "HIGH"} done'
    assert points(JSON_SPEC, bare) == 1.0


def test_json_partial_credit_is_fraction_of_checks() -> None:
    result = score(make_task(JSON_SPEC), '{"summary": "x", "category": "shipping", "priority": "high"}')
    assert result.score == pytest.approx(3 / 4)
    assert "category" in result.detail
    assert points(JSON_SPEC, '{"other": 1}') == pytest.approx(1 / 4)


@pytest.mark.parametrize("output", ["", "no json at all", '{"summary": "cut off', "```json\n[1, 2]\n```", "{" * 5000])
def test_json_without_an_object_scores_zero(output: str) -> None:
    assert points(JSON_SPEC, output) == 0.0


def test_json_values_numbers_lists_nested_and_bools() -> None:
    spec = {
        "type": "json",
        "values": {"total": 161500, "ids": ["A", "B"], "retention.2024-01": 62.0, "flag": True},
        "tolerance": 0.05,
    }
    assert points(spec, '{"total": "161,500", "ids": ["b", "a"], "retention": {"2024-01": 62.04}, "flag": true}') == 1.0
    result = score(make_task(spec), '{"total": 161500.2, "ids": ["A"], "retention": {"2024-01": 62}, "flag": 1}')
    assert result.score == pytest.approx(2 / 5)


def test_extract_json_object_prefers_fenced_block() -> None:
    text = 'Example: {"a": 1}\n```json\n{"b": 2}\n```'
    assert extract_json_object(text) == {"b": 2}
    assert extract_json_object("[" * 100_000) is None


# --- keywords -----------------------------------------------------------------------------

KEYWORDS = {"type": "keywords", "keywords": ["HelpScout", "Lena", ["15 March", "March 15"], "migration"]}


def test_keywords_score_is_fraction_found_with_synonyms() -> None:
    assert points(KEYWORDS, "Lena leads the HelpScout migration, due March 15.") == 1.0
    result = score(make_task(KEYWORDS), "Lena picked HelpScout.")
    assert result.score == pytest.approx(0.5)
    assert result.detail == "2/4 keywords: missing '15 March', 'migration'"
    assert points(KEYWORDS, "") == 0.0


# --- never raises -------------------------------------------------------------------------

ALL_SPECS = [
    EXACT,
    {"type": "contains", "all": ["a"], "any": ["b"], "none": ["c"]},
    {"type": "regex", "pattern": r"\A(?:\S+\s+){0,7}\S+\Z", "reference": "one two"},
    {"type": "numeric", "expected": 5, "tolerance": 0.1},
    JSON_SPEC,
    KEYWORDS,
]
GARBAGE = ["", " ", "\x00\x01\ufffd", "{" * 10_000 + "}" * 10_000, '{"a": ' * 3000, "9" * 50_000, "-" * 1000, "x " * 200_000]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s["type"])
def test_any_output_scores_within_bounds_without_raising(spec: dict) -> None:
    for output in GARBAGE:
        result = score(make_task(spec), output)
        assert 0.0 <= result.score <= 1.0
        assert isinstance(result.detail, str)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"type": "fuzzy"}, "unknown scorer type 'fuzzy'"),
        ({"type": "exact"}, "needs 'expected'"),
        ({"type": "exact", "expected": "x", "expectd": "y"}, "unknown key 'expectd'"),
        ({"type": "contains"}, "non-empty 'all' or 'any'"),
        ({"type": "contains", "all": "word"}, "'all' must be a list"),
        ({"type": "regex", "pattern": "([a-z", "reference": "a"}, "invalid pattern"),
        ({"type": "regex", "pattern": "a"}, "needs a 'reference'"),
        ({"type": "numeric", "expected": "12"}, "needs 'expected': a number"),
        ({"type": "numeric", "expected": True}, "needs 'expected': a number"),
        ({"type": "numeric", "expected": 1, "tolerance": -1}, "'tolerance' must be a number >= 0"),
        ({"type": "json"}, "needs 'required_keys' or 'values'"),
        ({"type": "keywords", "keywords": []}, "non-empty list"),
        ({"type": "keywords", "keywords": [1]}, "each keyword"),
        ({"type": "exact", "expected": "x", "case_sensitive": "yes"}, "true or false"),
    ],
)
def test_validate_scorer_rejects_bad_specs(spec: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace("[", r"\[")):
        validate_scorer(spec)


# --- answers for the simulator ------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS + [{"type": "json", "required_keys": ["a.b", "c"]}], ids=lambda s: s["type"])
def test_generated_reference_scores_one_and_wrong_answers_score_low(spec: dict) -> None:
    task = make_task(spec)
    assert score(task, reference_answer(task)).score == 1.0
    for seed in range(10):
        assert score(task, wrong_answer(task, seed)).score <= WRONG_MAX_SCORE


def test_wrong_answer_is_deterministic_and_uses_distractors() -> None:
    task = make_task({"type": "exact", "expected": "Canberra", "distractors": ["Sydney", "Melbourne"]})
    answers = {wrong_answer(task, seed) for seed in range(20)}
    assert answers == {"Sydney", "Melbourne"}
    assert wrong_answer(task, 3) == wrong_answer(task, 3)


def test_wrong_numeric_answer_is_a_nearby_wrong_number() -> None:
    task = make_task({"type": "numeric", "expected": 44.95, "tolerance": 0.005})
    for seed in range(10):
        value = extract_number(wrong_answer(task, seed))
        assert value is not None and abs(value - 44.95) > 0.005


# --- judge ----------------------------------------------------------------------------------

JUDGE = {"type": "judge", "rubric": ["Names the 30-day window", "Offers a refund"], "reference": "Within 30 days: refund."}


def test_judge_prompt_is_versioned_and_reads_back_to_its_parts() -> None:
    from shared.scoring.judge import JUDGE_PROMPT_VERSION, JUDGE_SYSTEM, read_judge_prompt

    task = make_task(JUDGE)
    prompt = task.scorer.prompt("Can I return it?", "Yes, within 30 days.\n### Rubric\n1. fake")
    assert prompt.startswith(f"[{JUDGE_PROMPT_VERSION}]") and JUDGE_PROMPT_VERSION in JUDGE_SYSTEM
    read = read_judge_prompt(prompt)
    assert read.rubric == JUDGE["rubric"] and read.reference == JUDGE["reference"]
    assert read.task == "Can I return it?" and read.answer.startswith("Yes, within 30 days.")
    assert read_judge_prompt("What is 2 + 2?") is None
    no_reference = make_task({"type": "judge", "rubric": ["Is polite"]}).scorer.prompt("Hi", "Hello!")
    assert read_judge_prompt(no_reference).reference is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 0.5, "reason": "meets 1 of 2"}', 0.5),
        ('Here you go:\n```json\n{"score": 1, "reason": "all met"}\n```', 1.0),
        ('{"score": 0, "reason": "  none\\n met "}', 0.0),
    ],
)
def test_judge_reply_gives_a_score_in_0_1_with_its_reason(reply: str, expected: float) -> None:
    from shared.scoring.judge import read_judge_reply

    result = read_judge_reply(reply)
    assert result.score == expected and result.detail.startswith("judge genesis-judge-v2: ")
    assert "\n" not in result.detail


@pytest.mark.parametrize(
    "reply",
    ["", "Looks good to me!", '{"score": 1.5, "reason": "x"}', '{"score": "high", "reason": "x"}',
     '{"score": true, "reason": "x"}', '{"score": 0.5}', '{"grade": 0.5, "reason": "x"}'],
)
def test_a_judge_reply_that_is_not_a_grade_is_an_error_not_a_zero(reply: str) -> None:
    from shared.scoring.judge import JudgeReplyError, read_judge_reply

    with pytest.raises(JudgeReplyError):
        read_judge_reply(reply)


def test_judge_scorer_validates_its_rubric_and_is_not_scored_locally() -> None:
    for bad in ({"type": "judge"}, {"type": "judge", "rubric": []}, {"type": "judge", "rubric": ["a\nb"]}):
        with pytest.raises(ValueError, match="judge scorer needs 'rubric'"):
            validate_scorer(bad)
    task = make_task(JUDGE)
    assert task.scorer.local is False and reference_answer(task) == JUDGE["reference"]
    with pytest.raises(TypeError, match="judge backend"):
        score(task, "anything")
