"""A sequential run's report (issue #28), rendered from hand-made SequentialRun values: a chart
per verdict (the repeated interval at each look against the boundaries and the bar, the stop
marked), a table per verdict in markdown, what was paid and saved, each verdict's stop, the
run as a dict in report.json; hostile names escaped; fixed runs as before."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict

from shared.report import render_html, render_markdown
from shared.report.document import document
from shared.report.files import render
from shared.report.sequential_chart import look_chart
from shared.report.sequential_section import as_sequential_run, sequential_section
from shared.report.sequential_types import LookPoint, VerdictPath
from tests.support.sequential_runs import HOSTILE_AGENT, go_at_look_2, no_go_at_look_1, sequential_run, to_the_end
from tests.test_report import build, db_url, mixed_run  # noqa: F401  (db_url, mixed_run: fixtures)

SVG = "{http://www.w3.org/2000/svg}"


def drawn(svg: str) -> ET.Element:
    """The chart parsed as XML: it must be well-formed (an unescaped name would break it)."""
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def intervals(root: ET.Element) -> list[ET.Element]:
    return [line for line in root.iter(f"{SVG}line") if line.get("class") == "interval"]


def boundary_y(root: ET.Element, colour: str, x: float) -> float:
    """The y of a boundary polyline (by its colour) at the vertex drawn at x."""
    line = next(p for p in root.iter(f"{SVG}polyline") if p.get("stroke") == colour)
    vertices = [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
    return next(y for vx, y in vertices if abs(vx - x) < 0.1)


def test_a_go_at_look_2_draws_both_looks_and_the_stop_above_the_go_line():
    root = drawn(look_chart(go_at_look_2()))
    bars = intervals(root)
    assert len(bars) == 2 and len(list(root.iter(f"{SVG}circle"))) == 2  # an interval and its estimate per look
    assert [b.get("stroke") for b in bars] == ["#9a6700", "#1a7f37"]  # INCONCLUSIVE, then GO
    assert {"look 1", "look 2 · stop: GO"} <= set(texts(root))
    stop = next(line for line in root.iter(f"{SVG}line") if line.get("class") == "stop")
    assert stop.get("x1") == bars[1].get("x1")  # the stop is drawn at look 2
    x = float(bars[1].get("x1"))
    low_y = max(float(bars[1].get("y1")), float(bars[1].get("y2")))  # y grows downwards
    assert low_y < boundary_y(root, "#1a7f37", x)  # the lower end clears the GO line
    first_low = max(float(bars[0].get("y1")), float(bars[0].get("y2")))
    assert first_low > boundary_y(root, "#1a7f37", float(bars[0].get("x1")))  # look 1 did not
    assert float(bars[0].get("x1")) < x  # x follows the information reached


def test_a_no_go_at_look_1_ends_below_the_no_go_line():
    root = drawn(look_chart(no_go_at_look_1()))
    (bar,) = intervals(root)
    assert bar.get("stroke") == "#cf222e" and "look 1 · stop: NO-GO" in texts(root)
    high_y = min(float(bar.get("y1")), float(bar.get("y2")))
    no_go = next(p for p in root.iter(f"{SVG}polyline") if p.get("stroke") == "#cf222e")
    assert high_y > float(no_go.get("points").split()[0].split(",")[1])  # the upper end is below the NO-GO line


def test_a_verdict_that_ran_to_the_end_has_no_stop():
    root = drawn(look_chart(to_the_end()))
    assert len(intervals(root)) == 5
    assert not [line for line in root.iter(f"{SVG}line") if line.get("class") == "stop"]
    assert "look 5 · not settled" in texts(root) and not any("stop" in t for t in texts(root))
    assert texts(root)[0].startswith("all agents pooled · mistral-ft vs mistral-base")


def test_a_hostile_agent_name_stays_text_in_the_chart():
    svg = look_chart(no_go_at_look_1(HOSTILE_AGENT))
    root = drawn(svg)  # well-formed: nothing the name holds opened or closed an element
    assert "<script" not in svg and not list(root.iter(f"{SVG}script"))
    assert texts(root)[0].startswith(HOSTILE_AGENT + " · ")  # shown as the very characters


def with_sequential(data: dict, run) -> dict:
    return {**data, "sequential": run}


def test_the_html_report_of_a_sequential_run(mixed_run):
    data = build(mixed_run)
    page = render_html(with_sequential(data, sequential_run(go_at_look_2(), no_go_at_look_1(HOSTILE_AGENT),
                                                            to_the_end())))
    assert page.count('data-chart="sequential"') == 3
    assert "paid 1,120 of 2,000 planned calls (saved $0.880000 against the fixed design)" in page
    assert "qa: stopped at look 2: GO at look 2 (lower end +4.0 pp above 0)" in page
    assert "all agents pooled: not settled at look 5: tasks ran out at look 5" in page
    assert "alert(" in page and "<script" not in page  # the name is there, escaped
    assert "&lt;script&gt;alert(&quot;qa&quot;)&lt;/script&gt;&amp;amp;&quot;legal&#x27;" in page
    # The verdicts' charts, then the rule's text.
    assert page.index('data-chart="forest"') < page.rindex('data-chart="sequential"') < page.index("<p>Rule: ")
    assert page.index('class="headlines"') < page.index('data-chart="forest"')


def test_the_markdown_report_has_a_table_per_verdict(mixed_run):
    text = render_markdown(with_sequential(build(mixed_run), sequential_run(
        go_at_look_2(), no_go_at_look_1(HOSTILE_AGENT), to_the_end())))
    section = text[text.index("### Looks"):text.index("Rule: ")]
    tables = re.findall(r"\| Look \| Pairs \| Fraction \|.*?\n\n", section, re.S)
    assert [t.count("\n| ") for t in tables] == [2, 1, 5]  # one row per look judged
    assert "| 2 | 160 | 40% | +19.0 pp | \\[+4.0, +34.0\\] pp | +0.0 pp | +6.0 pp | GO (stop) |" in tables[0]
    assert "NO-GO (stop)" in tables[1] and "(stop)" not in tables[2]
    assert "This run paid 1,120 of 2,000 planned calls (saved $0.880000 against the fixed design)" in section
    assert "- qa: stopped at look 2: GO at look 2 (lower end +4.0 pp above 0)" in section
    assert "<script>" not in text and "\\<script\\>alert" in section


def test_report_json_holds_the_run_as_a_dict_and_renders_the_same_from_it(mixed_run):
    run = sequential_run()
    rendered = render(with_sequential(build(mixed_run), run))
    stored = json.loads(rendered.json_text)
    assert stored["sequential"] == json.loads(json.dumps(asdict(run)))
    assert as_sequential_run(stored["sequential"]) == run  # tuples and nested dataclasses come back
    again = render(stored)  # a report rebuilt from its JSON copy says the same
    assert (again.markdown, again.html) == (rendered.markdown, rendered.html)


def test_a_fixed_run_gets_no_section_and_the_same_blocks_otherwise(mixed_run):
    fixed = build(mixed_run)
    assert "sequential" not in json.loads(render(fixed).json_text)
    blocks = document(fixed)
    assert document({**fixed, "sequential": None}) == blocks
    assert not any(b[0] in ("h3", "looks") for b in blocks)
    page = render_html(fixed)
    assert 'data-chart="sequential"' not in page and "Looks: where" not in page
    assert page.index('data-chart="forest"') < page.index("<p>Rule: ")
    run = sequential_run()
    forest = blocks.index(("chart", "forest"))
    assert document(with_sequential(fixed, run)) == blocks[:forest + 1] + sequential_section(run) + blocks[forest + 1:]


def test_a_look_with_nothing_paired_says_so():
    empty = LookPoint(look=1, fraction=0.0, pairs=0, estimate=None, low=None, high=None, go_line=0.0,
                      no_go_line=0.06, verdict="INCONCLUSIVE")
    path = to_the_end()
    root = drawn(look_chart(VerdictPath(path.comparison, path.candidate, path.baseline, path.bar,
                                        (empty, *path.points[1:]), None, path.reason)))
    assert "no pairs" in texts(root) and len(intervals(root)) == 4
