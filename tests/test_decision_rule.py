"""The go/no-go rule on hand-made jobs (no services): what counts, what is missing, the run's
error shares, power and the edge cases the issue lists."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from shared.config.tables import DecisionConfig
from shared.power import Failures, Truth, can_ever_go, go_power, smallest_confirmable, tasks_needed, truth_with_failures
from shared.report.decision import GO, INCONCLUSIVE, NO_GO, POOLED, compare, comparisons, decide, error_shares
from shared.report.decision_text import power_line, rule_text, sensitivity_line

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


def test_a_task_both_failed_is_left_out_and_the_texts_say_so():
    """The code leaves out every task the baseline failed, the candidate's failure too; the rule
    text, the sensitivity line and the counts say that, not "only the baseline"."""
    candidate = jobs([None] * 2 + [1] * 18, ["error"] * 2 + ["ok"] * 18)
    baseline = jobs([None] * 3 + [1] * 17, ["error"] * 3 + ["ok"] * 17)
    row = compare("qa", "ft", "base", candidate, baseline, RULE)
    assert row["n"] == 17 and row["baseline_errors"] == 3 and row["both_errors"] == 2
    assert "(2 of them failed by both)" in sensitivity_line(row)
    text = rule_text(RULE)
    assert "a task the baseline failed (whether or not the candidate failed it too)" in text
    assert "only the baseline failed" not in text


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
        by_go = custom[POOLED]["smallest_confirmable_by_go"]  # the power each GO rule has at this size
        assert by_go["better"] == custom[POOLED]["smallest_confirmable_abs"] and by_go["bar"] > by_go["better"] + 0.03
        text = CliRunner().invoke(app, ["submit", "--all-agents", "--backend", "mistral-ft", "--backend",
                                        "mistral-base", "--dry-run"], catch_exceptions=False)
        assert text.exit_code == 0, text.output
        assert 'GO (go = "better") promises that the candidate is better' in " ".join(text.stdout.split())
        assert 'under "bar"' in text.stdout

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


def _at(improvement: float, n: int, rng: random.Random, baseline_accuracy: float = 0.6, loss: float = 0.05):
    """n paired 0/1 tasks whose true difference is `improvement`."""
    truth = Truth.binary(improvement + loss * baseline_accuracy, loss * baseline_accuracy)
    draws = [rng.random() for _ in range(n)]
    differences = [1 if u < truth.probabilities[2] else -1 if u > 1 - truth.probabilities[0] else 0 for u in draws]
    tie_right = (baseline_accuracy - truth.probabilities[0]) / truth.probabilities[1]  # so the baseline's accuracy holds
    base = [1.0 if d == -1 or (d == 0 and rng.random() < tie_right) else 0.0 for d in differences]
    return [b + d for b, d in zip(base, differences)], base


def test_go_bar_needs_the_interval_above_the_bar():
    # +15 pp over 200 tasks from 50%: the interval (about +7..+23) is above 0 but not above the bar.
    candidate, baseline = [1.0] * 40 + [0.0] * 10 + [1.0] * 80 + [0.0] * 70, [0.0] * 40 + [1.0] * 10 + [1.0] * 80 + [0.0] * 70
    bar = DecisionConfig(go="bar", min_improvement=0.3)  # needs +13.5 pp from 45%
    better = DecisionConfig(min_improvement=0.3)
    as_better = compare("qa", "ft", "base", jobs(candidate), jobs(baseline), better, plan=False)
    as_bar = compare("qa", "ft", "base", jobs(candidate), jobs(baseline), bar, plan=False)
    low = as_bar["ci95_abs"][0]
    assert 0 < low < as_bar["threshold_abs"] <= as_bar["improvement_abs"]
    assert as_better["decision"] == GO and as_bar["decision"] == INCONCLUSIVE
    assert "below the required improvement" in as_bar["reason"]
    clear = compare("qa", "ft", "base", jobs(candidate), jobs(baseline), DecisionConfig(go="bar"), plan=False)
    assert clear["decision"] == GO and clear["ci95_abs"][0] > clear["threshold_abs"]  # needs +3.6 pp
    assert 'GO (go = "bar") promises that the improvement clears the bar' in rule_text(bar)
    assert 'it does not promise the bar' in rule_text(better)


def test_go_bar_keeps_go_at_the_bar_within_the_error_rate():
    """A candidate exactly at the bar: "better" says GO about half the time (it promises only
    "better"); "bar" at most 1 - confidence of the time."""
    rng = random.Random(28)
    rule_bar, rule_better = DecisionConfig(go="bar"), DecisionConfig()
    go_bar = go_better = 0
    runs = 600
    for i in range(runs):
        candidate, baseline = _at(0.08 * 0.6, 400, rng)
        go_bar += compare("x", "ft", "base", jobs(candidate), jobs(baseline), rule_bar, plan=False)["decision"] == GO
        if i < 100:
            go_better += compare("x", "ft", "base", jobs(candidate), jobs(baseline), rule_better,
                                 plan=False)["decision"] == GO
    assert go_bar / runs <= 0.05 + 2 * (0.05 * 0.95 / runs) ** 0.5  # 5% within two standard errors
    assert go_better / 100 > 0.2


def test_the_power_figure_takes_the_runs_failures():
    """3% candidate errors, 3% baseline errors and a 10% loss share: the report's figure is the
    improvement that still gets GO 80% of the time with those failures, not the failure-free one."""
    rng = random.Random(5)
    n, accuracy = 400, 0.6
    statuses = ["error" if rng.random() < 0.03 else "ok" for _ in range(n)]
    base_statuses = ["error" if rng.random() < 0.03 else "ok" for _ in range(n)]
    candidate, baseline = _at(0.1, n, rng, accuracy, loss=0.10)
    row = compare("x", "ft", "base", jobs(candidate, statuses), jobs(baseline, base_statuses), RULE, alpha_each=0.0125)
    power = row["power"]
    assert power["candidate_error_share"] > 0.01 and power["left_out_share"] > 0.01 and power["loss_share"] > 0.07
    failure_free = smallest_confirmable(n, row["baseline_accuracy"], RULE.min_improvement, 0.0125, RULE.assumed_loss_share)
    stated = power["smallest_confirmable_abs"]
    assert stated > failure_free + 0.005
    # At the stated improvement, whole comparisons with these failures get GO about 80% of the time.
    failures = Failures(power["candidate_error_share"], power["left_out_share"], power["loss_share"])
    truth = truth_with_failures(stated, row["baseline_accuracy"], failures)
    paired = round(n * (1 - failures.left_out))
    assert go_power(truth, paired, RULE.min_improvement * row["baseline_accuracy"], 0.0125) >= 0.8
    # and the failure-free figure falls short with them
    short = truth_with_failures(failure_free, row["baseline_accuracy"], failures)
    assert go_power(short, paired, RULE.min_improvement * row["baseline_accuracy"], 0.0125) < 0.75
    assert "candidate errors" in power_line(row) and '(the chosen rule)' in power_line(row)
    # Through the decision itself: whole comparisons drawn at the stated improvement, with these
    # failures, get GO about 80% of the time.
    hits, draws = 0, 200
    for _ in range(draws):
        c_status = ["error" if rng.random() < failures.candidate_errors else "ok" for _ in range(n)]
        b_status = ["error" if rng.random() < failures.left_out else "ok" for _ in range(n)]
        gross = (stated + failures.candidate_errors * accuracy) / (1 - failures.candidate_errors)
        cand, base = _at(gross, n, rng, accuracy, loss=failures.loss_share)
        hits += compare("x", "ft", "base", jobs(cand, c_status), jobs(base, b_status), RULE, alpha_each=0.0125,
                        plan=False)["decision"] == GO
    assert hits / draws >= 0.72


def clustered_jobs(scores, clusters, statuses=None) -> dict:
    rows = jobs(scores, statuses)
    for job, cluster in zip(rows.values(), clusters):
        job.cluster = cluster
    return rows


def test_without_families_every_task_is_its_own_cluster_as_before():
    candidate, baseline = [1.0] * 30 + [0.0] * 10 + [1.0] * 40 + [0.0] * 20, [0.0] * 30 + [1.0] * 10 + [1.0] * 40 + [0.0] * 20
    plain = compare("qa", "ft", "base", jobs(candidate), jobs(baseline), RULE)
    named = compare("qa", "ft", "base", clustered_jobs(candidate, [None] * 100), clustered_jobs(baseline, [None] * 100), RULE)
    assert plain["ci95_abs"] == named["ci95_abs"] and named["clusters"] == 100 and not named["clustered"]
    assert " clusters" not in named["headline"]


def test_families_widen_the_interval_and_the_power_figure_and_are_counted():
    """Ten families of ten tasks, each family's tasks alike: ten units of evidence, not 100."""
    rng = random.Random(3)
    candidate, baseline, clusters = [], [], []
    for family in range(10):
        gain = rng.random() < 0.55
        for _ in range(10):
            base = float(rng.random() < 0.5)
            candidate.append(1.0 if gain else base)
            baseline.append(base)
            clusters.append(f"doc-{family}")
    plain = compare("qa", "ft", "base", jobs(candidate), jobs(baseline), RULE, alpha_each=0.0125)
    grouped = compare("qa", "ft", "base", clustered_jobs(candidate, clusters), clustered_jobs(baseline, clusters), RULE,
                      alpha_each=0.0125)
    assert grouped["clustered"] and grouped["clusters"] == 10 and grouped["design_effect"] > 2
    assert grouped["ci95_abs"][0] < plain["ci95_abs"][0] and grouped["ci95_abs"][1] > plain["ci95_abs"][1]
    assert "n=100 in 10 clusters" in grouped["headline"]
    assert grouped["power"]["smallest_confirmable_by_go"]["better"] is None or (
        grouped["power"]["smallest_confirmable_by_go"]["better"] > plain["power"]["smallest_confirmable_by_go"]["better"])


def test_families_keep_go_under_no_gain_within_the_error_rate():
    """No gain on average, but each family's tasks move together (a family's candidate is better
    or worse on all of its tasks): the independent-task interval says GO far too often; the
    cluster-robust one keeps it at or below its 2.5% (two standard errors of the simulation)."""
    rng = random.Random(11)
    rule = DecisionConfig(min_improvement=0.0)
    runs, naive, robust = 300, 0, 0
    for _ in range(runs):
        candidate, baseline, clusters = [], [], []
        for family in range(20):
            shift = rng.choice((-1, 0, 1))
            for _ in range(8):
                base = float(rng.random() < 0.5)
                candidate.append(min(1.0, max(0.0, base + shift)) if rng.random() < 0.6 else base)
                baseline.append(base)
                clusters.append(f"f{family}")
        naive += compare("x", "ft", "base", jobs(candidate), jobs(baseline), rule, alpha_each=0.025,
                         plan=False)["decision"] == GO
        robust += compare("x", "ft", "base", clustered_jobs(candidate, clusters), clustered_jobs(baseline, clusters), rule,
                          alpha_each=0.025, plan=False)["decision"] == GO
    limit = 0.025 + 2 * (0.025 * 0.975 / runs) ** 0.5
    assert naive / runs > limit  # the case is a real one: ignoring the families breaks the promise
    assert robust / runs <= limit
