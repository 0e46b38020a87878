"""The go/no-go rule on hand-made jobs (no services): what counts, what is missing, the run's
error shares, power and the edge cases the issue lists."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from shared.config.tables import DecisionConfig
from shared.power import Truth, can_ever_go, go_power, smallest_confirmable, tasks_needed
from shared.report.decision import (
    GO, INCONCLUSIVE, NO_GO, POOLED, compare, comparisons, decide, error_shares, power_line, sensitivity_line,
)

RULE = DecisionConfig()  # min_improvement 0.08, confidence 0.95


def jobs(scores, statuses=None, model="m") -> dict:
    statuses = statuses or ["ok"] * len(scores)
    return {f"t{i}": SimpleNamespace(task_id=f"t{i}", status=st, score=s if st == "ok" else None, model=model)
            for i, (s, st) in enumerate(zip(scores, statuses))}


def test_candidate_errors_count_against_it():
    # The case: 20 tasks; the candidate alone right on 6, 4 errors where the baseline
    # was right, the rest tied. Dropping the errors gave GO at p = 0.031.
    candidate = jobs([1] * 6 + [None] * 4 + [1] * 4 + [0] * 6, ["ok"] * 6 + ["error"] * 4 + ["ok"] * 10)
    baseline = jobs([0] * 6 + [1] * 4 + [1] * 4 + [0] * 6)
    row = compare("qa", "ft", "base", candidate, baseline, RULE)
    assert row["decision"] != GO
    assert row["n"] == 20 and row["candidate_errors"] == 4
    assert row["improvement_abs"] == pytest.approx((6 - 4) / 20)
    # The answered-only comparison is beside it, and would have said GO.
    assert row["answered_only"]["n"] == 16 and row["answered_only"]["decision"] == GO
    assert "4 candidate error(s) counted as 0" in sensitivity_line(row)


def test_a_task_only_the_baseline_failed_is_not_a_candidate_win():
    candidate = jobs([1] * 20)
    baseline = jobs([None] * 3 + [1] * 17, ["error"] * 3 + ["ok"] * 17)
    row = compare("qa", "ft", "base", candidate, baseline, RULE)
    assert row["n"] == 17 and row["baseline_errors"] == 3 and row["improvement_abs"] == 0.0
    both_failed = compare("qa", "ft", "base", jobs([None] + [1] * 19, ["error"] + ["ok"] * 19), baseline, RULE)
    assert both_failed["n"] == 17 and both_failed["candidate_errors"] == 0  # left out, not counted as 0


def test_halted_jobs_are_missing_and_too_many_make_it_inconclusive():
    statuses = ["halted"] * 5 + ["ok"] * 15
    candidate = jobs([None] * 5 + [1] * 15, statuses)
    baseline = jobs([0] * 20)
    row = compare("qa", "ft", "base", candidate, baseline, RULE)
    assert row["missing"] == 5 and row["n"] == 15 and row["paired_coverage"] == 0.75
    assert row["decision"] == INCONCLUSIVE and "missing" in row["reason"]


def test_all_ties_are_inconclusive_at_twenty_and_no_go_at_a_thousand():
    tied = compare("qa", "ft", "base", jobs([1] * 12 + [0] * 8), jobs([1] * 12 + [0] * 8), RULE)
    assert tied["decision"] == INCONCLUSIVE  # 20 ties cannot rule out the +4.8 pp needed
    low, high = tied["ci95_abs"]
    assert low < 0 < 0.048 < high
    assert tied["pairs_needed"] and tied["pairs_needed"] > 20
    many = compare("qa", "ft", "base", jobs([1] * 600 + [0] * 400), jobs([1] * 600 + [0] * 400), RULE)
    assert many["decision"] == NO_GO


def test_one_pair_and_a_baseline_accuracy_of_zero():
    one = compare("qa", "ft", "base", jobs([1]), jobs([0]), RULE)
    assert one["decision"] == INCONCLUSIVE and one["n"] == 1
    zero = compare("qa", "ft", "base", jobs([1] * 12 + [0] * 8), jobs([0] * 20), RULE)
    assert zero["baseline_accuracy"] == 0 and zero["improvement_rel"] is None and zero["threshold_abs"] == 0
    assert zero["decision"] == GO


def test_a_suite_too_small_for_go_says_so():
    # genesis-judge: 5 tasks per agent. At a per-agent share of the run's 5%, even five wins
    # out of five cannot clear the interval.
    per_agent, _ = error_shares(3, 1, 0.95)
    row = compare("legal", "ft", "base", jobs([1] * 5), jobs([0] * 5), RULE, alpha_each=per_agent)
    assert row["decision"] == INCONCLUSIVE and row["power"]["can_ever_go"] is False
    assert "cannot reach GO at all" in power_line(row)
    assert not can_ever_go(5, per_agent) and can_ever_go(15, 0.025)


def test_judge_scores_are_judged_by_the_same_rule():
    rng = random.Random(4)
    baseline = [rng.choice([0.25, 0.5, 0.75]) for _ in range(60)]
    better = [min(1.0, b + 0.25) if rng.random() < 0.8 else b for b in baseline]
    row = compare("support", "ft", "base", jobs(better), jobs(baseline), RULE)
    assert row["decision"] == GO and 0 < row["ci95_abs"][0] < row["improvement_abs"] < row["ci95_abs"][1]
    same = compare("support", "ft", "base", jobs(baseline), jobs(baseline), RULE)
    assert same["decision"] != GO and same["ci95_abs"][0] < 0 < same["ci95_abs"][1]


def test_the_run_shares_one_error_rate():
    agents = ["qa", "content", "legal", "support", "analyst"]
    backends = {"ft": {"role": "candidate", "baseline": "base"}, "ft2": {"role": "candidate", "baseline": "base"},
                "base": {"role": "baseline"}}
    by_pair = {}
    for agent in agents:
        by_pair[(agent, "ft")] = list(jobs([1] * 15 + [0] * 5).values())
        by_pair[(agent, "ft2")] = list(jobs([1] * 10 + [0] * 10).values())
        by_pair[(agent, "base")] = list(jobs([1] * 10 + [0] * 10).values())
    facts = SimpleNamespace(agents=agents, backends=list(backends), by_pair=by_pair, snapshot={"backends": backends})
    rows = comparisons(facts, RULE)
    assert len(rows) == 12
    assert sum(r["alpha_each"] for r in rows) == pytest.approx(1 - RULE.confidence)  # Bonferroni over all 12
    assert [r["alpha_each"] for r in rows if r["agent"] == POOLED] == pytest.approx([0.05 / 2 / 2] * 2)
    for r in rows:  # the adjusted p-value and the interval agree
        assert (r["ci95_abs"][0] > 0) == (r["p_value"] < 1 - RULE.confidence)
    verdict = decide(agents, rows)
    assert verdict["overall"] == GO  # ft is +25 pp over 100 pooled tasks; any candidate passing is enough


def test_tasks_needed_targets_eighty_percent_power():
    # b = 8, c = 2 of 20: as the truth, the number the report gives is where the test's own
    # power crosses 80% (bench/decision.py checks it by whole comparisons: 75-85%).
    truth = Truth.observed([1] * 8 + [-1] * 2 + [0] * 10)
    needed = tasks_needed(truth, threshold=0.03, alpha_each=0.005)
    assert needed is not None and needed > 20
    assert go_power(truth, needed, 0.03, 0.005) >= 0.8 > go_power(truth, needed - 1, 0.03, 0.005)
    rng = random.Random(9)
    differences = [(1, 0)] * 8 + [(0, 1)] * 2 + [(1, 1)] * 5 + [(0, 0)] * 5
    hits = 0
    for _ in range(120):
        draw = [rng.choice(differences) for _ in range(needed)]
        row = compare("x", "ft", "base", jobs([c for c, _ in draw]), jobs([b for _, b in draw]), RULE,
                      alpha_each=0.005, plan=False)
        hits += row["decision"] == GO
    assert 0.65 <= hits / 120 <= 0.93  # 80% within about 3 standard errors of 120 draws


def test_smallest_confirmable_improvement():
    pooled = smallest_confirmable(100, 0.6, 0.08, 0.025, 0.05)
    assert pooled is not None and 0.08 < pooled < 0.2
    assert smallest_confirmable(1000, 0.6, 0.08, 0.025, 0.05) < pooled  # more tasks, smaller effects
    assert smallest_confirmable(5, 0.6, 0.08, 0.005, 0.05) is None


@pytest.mark.sockets  # the dry run asks a refused Redis port for the budget left
def test_dry_run_gives_the_power_per_agent_and_pooled(tmp_path, monkeypatch):
    """`submit --dry-run --json` (no services: Redis refused, a fresh SQLite path): the suite's
    power at the report's shares, from the configured assumption, then from the baseline's
    last run in SQL."""
    from pathlib import Path

    from typer.testing import CliRunner

    from producer.cli import app
    from shared.config import get_settings
    from shared.db import migrate, session_scope
    from shared.models import Job, Run

    repo = Path(__file__).resolve().parents[1]
    url = f"sqlite:///{tmp_path}/g.db"
    monkeypatch.setenv("GENESIS_CONFIG", str(repo / "config" / "genesis.toml"))
    monkeypatch.setenv("GENESIS_DATABASE_URL", url)
    monkeypatch.setenv("GENESIS_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    try:
        def dry(*args):
            result = CliRunner().invoke(app, ["submit", "--all-agents", "--backend", "mistral-ft", "--backend",
                                              "mistral-base", *args, "--dry-run", "--json"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return {r["agent"]: r for r in json.loads(result.stdout)["decision_power"]["rows"]}

        judge = dry("--suite", "genesis-judge")
        assert set(judge) == {"content", "legal", "support", POOLED}
        assert not any(judge[a]["can_ever_go"] for a in ("content", "legal", "support"))  # 5 tasks each
        assert judge[POOLED]["tasks"] == 15 and judge[POOLED]["can_ever_go"]

        custom = dry()
        assert custom["qa"]["baseline_accuracy_source"] == "assumed" and custom["qa"]["baseline_accuracy"] == 0.6
        assert custom["qa"]["smallest_confirmable_abs"] is None  # 20 tasks at 99.5% per end, from 60%
        assert custom[POOLED]["smallest_confirmable_abs"] == pytest.approx(0.116, abs=0.005)

        migrate(url)
        with session_scope(url) as session:
            session.add(Run(id="old", suite="genesis-custom", agents=["qa"], backends=["mistral-base"]))
            session.flush()
            for i in range(10):
                session.add(Job(run_id="old", agent="qa", task_id=f"t{i}", backend="mistral-base", provider="mistral",
                                model="open-mistral-7b", status="ok", score=1.0 if i < 3 else 0.0, attempts=1))
        informed = dry()
        assert informed["qa"]["baseline_accuracy"] == pytest.approx(0.3)
        assert informed["qa"]["baseline_accuracy_source"] == "run old"
        assert informed["qa"]["smallest_confirmable_abs"] == pytest.approx(0.52, abs=0.01)
        assert informed["legal"]["baseline_accuracy_source"] == "assumed"
    finally:
        get_settings.cache_clear()
