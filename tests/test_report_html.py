"""report.html as a reader gets it: a real run's page opened in real headless Chromium, with
no console errors, charts of non-zero size, no table wider than the page, the verdicts' chart
before the rule's text, and a screenshot that is not blank."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.browser import chromium, open_in_chromium, png_varied_rows
from shared.report import render_html
from tests.support.runs import producer
from tests.support.sequential_runs import HOSTILE_AGENT, go_at_look_2, no_go_at_look_1, sequential_run, to_the_end

pytestmark = [
    pytest.mark.browser,
    pytest.mark.processes,
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (Debian: apt-get install chromium)"),
]
CHARTS = {"forest", "accuracy", "latency", "cost", "cost-per-point"}


def test_the_checks_can_fail(tmp_path):
    """A page that logs an error and draws nothing must be caught by the same checks."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("broken chart")</script></body></html>')
    seen = open_in_chromium(bad, tmp_path / "bad")
    assert any("broken chart" in line for line in seen["errors"])
    assert seen["probe"]["charts"] == []
    assert png_varied_rows(seen["screenshot"])[2] == 0.0  # blank

    # A table that runs off the page, and the rule's text before the first chart.
    wide = tmp_path / "wide.html"
    wide.write_text('<!DOCTYPE html><html><body><p>Rule: GO when ...</p><table><tr>'
                    + "<td>cell</td>" * 400 + '</tr></table><svg class="chart" data-chart="late"></svg></body></html>')
    layout = open_in_chromium(wide, tmp_path / "wide")["probe"]["layout"]
    assert layout["scrollWidth"] > layout["viewport"] and layout["chartBeforeRule"] is False


def test_a_real_runs_report_renders_in_chromium(fast_limits, simulator, start_worker, tmp_path):
    start_worker("w1", concurrency=16)
    result = producer("submit", "--all-agents", "--limit", "5", "--backend", "mistral-ft", "--backend", "mistral-base",
                      "--backend", "openai", "--wait", "--json")
    assert result.exit_code == 0, result.output
    page = Path(json.loads(result.stdout.strip().splitlines()[-1])["report"]).with_name("report.html")
    text = page.read_text()
    assert not re.search(r'\b(?:src|href)\s*=\s*"(?!#)', text)  # nothing to fetch: no network when opened

    seen = open_in_chromium(page, tmp_path / "chromium")
    assert seen["errors"] == [], seen["errors"]
    charts = {c["name"]: c for c in seen["probe"]["charts"]}
    assert set(charts) == CHARTS
    for chart in charts.values():
        assert chart["width"] > 100 and chart["height"] > 50 and chart["marks"] > 0, chart
    assert_laid_out(seen)
    width, height, varied = png_varied_rows(seen["screenshot"])
    assert (width, height) == (1280, 1800)
    assert varied > 0.2  # text, bars and lines on a fifth of the rows at least

    # The same run drawn as a sequential one (issue #28): a chart per verdict, hostile names
    # kept as text, the same layout (a name of 300 letters wraps instead of widening the page).
    data = json.loads(page.with_name("report.json").read_text())
    data["sequential"] = sequential_run(go_at_look_2(), no_go_at_look_1(HOSTILE_AGENT), to_the_end(),
                                        go_at_look_2("x" * 300))
    sequential = tmp_path / "sequential.html"
    sequential.write_text(render_html(data), encoding="utf-8")
    seen = open_in_chromium(sequential, tmp_path / "chromium-sequential")
    assert seen["errors"] == [], seen["errors"]
    drawn = [c for c in seen["probe"]["charts"] if c["name"] == "sequential"]
    assert len(drawn) == 4 and all(c["width"] > 100 and c["height"] > 100 and c["marks"] > 10 for c in drawn), drawn
    assert seen["probe"]["scripts"] == 1  # the probe's own: the hostile agent name stayed text
    assert_laid_out(seen)


def assert_laid_out(seen: dict) -> None:
    """No table widens the page (they scroll in their own box), and the verdicts' chart comes
    before the rule's text."""
    layout = seen["probe"]["layout"]
    assert layout["scrollWidth"] <= layout["viewport"], layout
    assert layout["chartBeforeRule"], layout
