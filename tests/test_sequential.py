"""The sequential design's statistics (shared/sequential.py) against published tables and
against simulated Brownian motion at unplanned information fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.sequential import (NO_GO_GAMMA, Levels, boundaries, interval_levels, levels, look_alpha,
                               look_alpha_each, planned_fractions, repeated_interval, spent)
from shared.stats import paired_score_test


def test_lan_demets_obrien_fleming_boundaries_match_the_published_table():
    # K = 5 equally spaced, one-sided alpha 0.025 (Jennison & Turnbull 2000, Table 7.6; gsDesign sfLDOF).
    assert boundaries(planned_fractions(5), 0.025) == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-3)
    # K = 2 (gsDesign: 2.963, 1.969) and K = 1, the fixed design's z.
    assert boundaries(planned_fractions(2), 0.025) == pytest.approx([2.963, 1.969], abs=1e-3)
    assert boundaries([1.0], 0.025) == pytest.approx([1.95996], abs=1e-4)


# gsDesign's published examples (keaven.github.io/gsDesign, reference/sfLDOF: "2-sided, symmetric
# 6-analysis trial", alpha 0.025 each side; a symmetric design's upper bounds equal the one-sided
# ones to the table's precision at these levels): Hwang-Shih-DeCani (1990) gamma 1 (the standard
# approximation of Pocock), gamma -4 (of O'Brien-Fleming), and Lan-DeMets (1983) O'Brien-Fleming-like.
GSDESIGN_K6 = {
    1.0: [2.507958, 2.471981, 2.443139, 2.426686, 2.420302, 2.421749],
    -4.0: [3.325024, 3.103223, 2.860383, 2.603454, 2.330046, 2.034988],
    None: [5.366558, 3.710340, 2.969736, 2.538677, 2.252190, 2.044790],
}


@pytest.mark.parametrize("gamma", list(GSDESIGN_K6))
def test_hwang_shih_decani_and_lan_demets_boundaries_match_gsdesigns_published_bounds(gamma):
    assert boundaries(planned_fractions(6), 0.025, gamma) == pytest.approx(GSDESIGN_K6[gamma], abs=2e-4)


def test_hwang_shih_decani_spending():
    # alpha (1 - e^{-gamma t}) / (1 - e^{-gamma}); gamma 0 is linear; all of alpha at t = 1
    assert spent(0.5, 0.025, 1.0) == pytest.approx(0.025 * (1 - math.exp(-0.5)) / (1 - math.exp(-1.0)))
    assert spent(0.3, 0.025, 0.0) == pytest.approx(0.0075)
    assert spent(1.0, 0.025, 1.0) == 0.025 and spent(0.0, 0.025, -4.0) == 0.0
    # the NO-GO side spends more early than the GO side (so a clear loss stops sooner)
    assert spent(0.2, 0.025, NO_GO_GAMMA) > 100 * spent(0.2, 0.025)


def test_look_alpha_each_gives_each_side_its_own_level():
    level = look_alpha_each(planned_fractions(5), 0.005)
    assert level.go == pytest.approx(look_alpha(planned_fractions(5), 0.005))
    assert level.no_go == pytest.approx(look_alpha(planned_fractions(5), 0.005, NO_GO_GAMMA))
    assert 0 < level.no_go < level.go < 0.005  # the NO-GO side pays for its early looks at the last
    first = look_alpha_each([0.2], 0.005)
    assert first.go < 1e-5 < first.no_go  # at the first look only NO-GO can realistically stop
    assert levels(0.01) == Levels(0.01, 0.01) and interval_levels(Levels(0.01, 0.01)) == 0.01
    assert interval_levels((0.01, 0.02)) == (0.01, 0.02)


def test_spending_is_obrien_fleming_like_and_the_last_look_spends_what_is_left():
    assert spent(0.0, 0.025) == 0.0 and spent(1.0, 0.025) == 0.025 and spent(1.7, 0.025) == 0.025
    assert spent(0.2, 0.025) == pytest.approx(2 * (1 - 0.5 * math.erfc(-2.2414 / math.sqrt(0.2) / math.sqrt(2))), abs=1e-6)
    assert spent(0.2, 0.025) < 1e-5 < spent(0.6, 0.025) < spent(0.8, 0.025) < 0.025


@pytest.mark.parametrize("fractions", [[0.3, 0.55, 1.0], [0.13, 0.5, 0.61, 0.9, 1.0], [0.45, 0.8]])
def test_boundaries_at_unplanned_fractions_keep_the_error_spent(fractions):
    """Brownian motion observed at these fractions crosses the boundaries with probability
    alpha(t_K): the recursive integration checked against 400,000 simulated paths."""
    alpha = 0.025
    bounds = np.array(boundaries(fractions, alpha))
    rng = np.random.default_rng(7)
    steps = np.diff([0.0, *fractions])
    paths = np.cumsum(rng.normal(size=(400_000, len(fractions))) * np.sqrt(steps), axis=1)
    z = paths / np.sqrt(fractions)
    crossed = (z >= bounds).any(axis=1).mean()
    expected = spent(fractions[-1], alpha)
    assert crossed == pytest.approx(expected, abs=4 * math.sqrt(expected / 400_000))
    # and each look spends its own share
    first = (z[:, 0] >= bounds[0]).mean()
    assert first == pytest.approx(spent(fractions[0], alpha), abs=4 * math.sqrt(max(spent(fractions[0], alpha), 1e-6) / 400_000) + 1e-5)


def test_bad_fractions_and_alpha_are_refused():
    for fractions in ([], [0.5, 0.5], [0.6, 0.4], [0.0, 1.0], [1.2]):
        with pytest.raises(ValueError):
            boundaries(fractions, 0.025)
    with pytest.raises(ValueError):
        boundaries([1.0], 0.6)
    with pytest.raises(ValueError):
        planned_fractions(0)


def test_repeated_interval_is_the_score_interval_at_the_looks_level():
    candidate = [1.0] * 30 + [0.0] * 10 + [1.0] * 40 + [0.0] * 20
    baseline = [0.0] * 30 + [1.0] * 10 + [1.0] * 40 + [0.0] * 20
    first = repeated_interval(candidate, baseline, [0.2], 0.025)
    last = repeated_interval(candidate, baseline, planned_fractions(5), 0.025)
    fixed = paired_score_test(candidate, baseline, alpha_each=0.025)
    # the first look's interval is the widest, the last is a little wider than the fixed design's
    assert first.ci[0] < last.ci[0] < fixed.ci[0] and fixed.ci[1] < last.ci[1] < first.ci[1]
    # each end at its side's level: the lower at the GO side's, the upper at the NO-GO side's
    level = look_alpha_each(planned_fractions(5), 0.025)
    assert last.ci[0] == pytest.approx(paired_score_test(candidate, baseline, alpha_each=level.go).ci[0])
    assert last.ci[1] == pytest.approx(paired_score_test(candidate, baseline, alpha_each=level.no_go).ci[1])
    assert look_alpha(planned_fractions(5), 0.025) == pytest.approx(0.5 * math.erfc(2.031 / math.sqrt(2)), rel=1e-3)


def _runs(scenario: str, runs: int, go: str = "better", tasks: int = 60, seed: int = 3):
    from bench.sequential import simulate
    from shared.config.tables import DecisionConfig

    rule = DecisionConfig(go=go)
    return rule, simulate(np.random.default_rng(seed), scenario, runs, 3, tasks, rule, (0.45, 0.65))


@pytest.mark.parametrize("kind", ["binary", "quarter steps in families"])
def test_the_benchs_vectorised_verdicts_are_the_reports(kind):
    """bench/sequential_sim.py judges thousands of runs at once; on the same jobs, its verdicts
    are those of shared.report.decision.compare (the report's), for both GO rules, with a look's
    two levels (GO side, NO-GO side), for 0/1 scores and for quarter steps in task families."""
    from types import SimpleNamespace

    from bench.sequential_sim import GO_CODE, NO_GO_CODE, verdicts
    from shared.report.decision import GO, INCONCLUSIVE, NO_GO, compare
    from tests.support.sequential_grid import grid_runs

    names = {GO_CODE: GO, NO_GO_CODE: NO_GO, 0: INCONCLUSIVE}
    level = Levels(0.01, 0.03)
    for go in ("better", "bar"):
        if kind == "binary":
            rule, runs = _runs("bar+5", 40, go, tasks=80)
            labels, step = None, 1.0
        else:
            from shared.config.tables import DecisionConfig
            rule = DecisionConfig(go=go)
            runs = grid_runs(np.random.default_rng(5), 40, [0.5], 80, gain=0.4, ties=0.5, errors=0.05,
                             step=0.25, family=4)
            labels, step = runs.clusters, 0.25
        released = np.full(40, 50)
        upto = np.arange(80)[None, :] < 50
        codes = verdicts(runs.candidate[:, 0], runs.baseline[:, 0], runs.paired[:, 0] & upto, released,
                         level.go, level.no_go, rule, labels, step)
        seen = set()
        for r in range(40):
            def jobs(scores, counted):
                return {t: SimpleNamespace(task_id=t, status="ok" if counted[t] else "error",
                                           score=float(scores[t]) if counted[t] else None, model="m",
                                           cluster=None if labels is None else str(labels[t]))
                        for t in range(50)}
            # a left-out task: the baseline failed; a counted candidate error scores 0 either way
            row = compare("a", "ft", "base", jobs(runs.candidate[r, 0], np.ones(80, bool)),
                          jobs(runs.baseline[r, 0], runs.paired[r, 0]), rule, alpha_each=level, plan=False)
            assert row["decision"] == names[int(codes[r])], (go, r, row["headline"])
            assert row["alpha_each"] == level.go and row["alpha_no_go"] == level.no_go
            seen.add(row["decision"])
        assert len(seen) >= 2  # the check saw more than one verdict


def test_go_chance_is_the_conditional_power_under_the_trend():
    from shared.sequential import FUTILITY, FUTILITY_FROM, go_chance, go_within_reach, needed_z

    # W = (0.02 - 0.04) / (0.3 / sqrt(225)) = -1 at t = 0.6: Phi((-1 / sqrt(0.6)) / sqrt(0.4))
    expected = 0.5 * math.erfc((1 / math.sqrt(0.6)) / math.sqrt(0.4) / math.sqrt(2))
    assert go_chance(0.02, 0.04, 0.3, 225, 0.6) == pytest.approx(expected, rel=1e-5)
    assert go_chance(0.0, 0.04, 0.3, 225, 1.0) == 1.0  # the last look: nothing left to stop
    assert go_chance(0.0, 0.04, 0.3, 225, FUTILITY_FROM / 2) == 1.0  # too early to judge a trend
    assert go_chance(0.08, 0.04, 0.3, 225, 0.8) > 0.99
    many = go_chance(np.array([0.0, 0.08]), 0.04, 0.3, 225, 0.8)
    assert many[0] < FUTILITY < many[1]
    # "bar" asks the final statistic to clear the last look's GO boundary, "better" only 0
    assert needed_z("better", 0.005) == 0.0 and needed_z("bar", 0.005) == pytest.approx(
        boundaries(planned_fractions(5), 0.005)[-1])
    row = {"n": 225, "improvement_abs": 0.0, "threshold_abs": 0.04, "sd_difference": 0.3}
    assert not go_within_reach(row, 0.8, "better", 0.005)
    assert go_within_reach(dict(row, improvement_abs=0.12), 0.8, "bar", 0.005)
    assert not go_within_reach(dict(row, improvement_abs=0.05), 0.8, "bar", 0.005)  # clears 0, not the bar
    assert go_within_reach({"n": 0, "improvement_abs": None}, 0.8, "better", 0.005)


def test_expected_stop_pays_less_the_further_the_truth_is_from_the_bar():
    from shared.sequential_plan import difference_sd, expected_stop

    def stop(difference, go="better"):
        return expected_stop(400, 0.55, difference, min_improvement=0.08, go=go, alpha=0.005)

    bar = 0.08 * 0.55
    none, at_bar, above, loss = stop(0.0), stop(bar), stop(bar + 0.12), stop(bar - 0.12)
    assert stop(0.0) == none  # seeded: the same figure every time
    assert all(0.2 <= s["share"] <= 1.0 for s in (none, at_bar, above, loss))
    assert loss["share"] == pytest.approx(0.2) and loss["no_go"] == 1.0  # a clear loss stops at the first look
    assert above["share"] < at_bar["share"] and none["share"] < at_bar["share"]
    assert above["go"] > 0.99 and none["go"] < 0.01 and at_bar["no_go"] < 0.01
    assert stop(bar, "bar")["go"] < 0.01  # "bar": GO at the bar is the error it keeps within alpha
    assert difference_sd(0.5, 0.0, 0.1) == pytest.approx(math.sqrt(0.1))
    assert expected_stop(0, 0.5, 0.0, min_improvement=0.08, go="better", alpha=0.005)["share"] == 0.0


@pytest.mark.sockets  # the dry run asks a refused Redis port for the budget left
def test_dry_run_shows_the_sequential_designs_expected_cost_beside_the_fixed_one(tmp_path, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    from producer.cli import app
    from shared.config import get_settings

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("GENESIS_CONFIG", str(repo / "config" / "genesis.toml"))
    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/g.db")
    monkeypatch.setenv("GENESIS_REDIS_URL", "redis://127.0.0.1:1/0")
    args = ["submit", "--all-agents", "--backend", "mistral-ft", "--backend", "mistral-base", "--dry-run"]
    get_settings.cache_clear()
    try:
        import json

        fixed = json.loads(CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False).stdout)
        assert "sequential" not in fixed["decision_power"]  # the fixed design: nothing to expect
        monkeypatch.setenv("GENESIS_DECISION__DESIGN", "sequential")
        get_settings.cache_clear()
        result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
        sequential = json.loads(result.stdout)["decision_power"]["sequential"]
        assert sequential["fixed"]["calls"] == fixed["jobs"] == 200
        assert sequential["fixed"]["usd"] == pytest.approx(fixed["estimated_cost_usd"], abs=1e-6)
        names = [s["name"] for s in sequential["scenarios"]]
        assert names == ["no gain", "at the bar", "at the design alternative"]
        for s in sequential["scenarios"]:
            assert 0 < s["calls"] <= 200 and 0 < s["usd"] <= sequential["fixed"]["usd"]
        text = CliRunner().invoke(app, args, catch_exceptions=False).stdout
        assert "sequential design (5 looks)" in text and "no gain:" in " ".join(text.split())
    finally:
        get_settings.cache_clear()


def test_futility_keeps_an_agent_whose_no_go_is_likely():
    from shared.sequential import futile, go_within_reach, no_go_chance

    row = {"n": 225, "improvement_abs": -0.08, "threshold_abs": 0.04, "sd_difference": 0.3}
    assert no_go_chance(-0.08, 0.04, 0.3, 225, 0.8, 0.005) > 0.99
    assert go_within_reach(row, 0.8, "better", 0.005)  # GO is out of reach, but NO-GO is near: keep paying
    assert list(futile([0.01, 0.01, 0.2], [0.1, 0.9, 0.1])) == [True, False, False]
