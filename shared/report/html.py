"""The document as one self-contained HTML page: inline CSS and SVG, no script, no external
asset, every piece of data escaped. The decision comes first, in plain words."""

from __future__ import annotations

from html import escape
from string import Template

from shared.report.charts import chart
from shared.report.document import COMBINED_VERDICTS, document, drilldown_table
from shared.report.sequential_chart import look_chart
from shared.report.sequential_section import look_table

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; color: #1f2328; max-width: 96rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; white-space: nowrap; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.banner { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.6rem 1rem; font-weight: 600; }
.overall { font-size: 1.6rem; font-weight: 700; margin: 0.4rem 0; }
.headlines li { margin: 0.2rem 0; }
.go { color: #1a7f37; } .no-go { color: #cf222e; } .inconclusive { color: #9a6700; }
svg.chart { display: block; margin: 0.5rem 0 1.5rem; max-width: 100%; height: auto; }
svg .chart-title { font-weight: 600; font-size: 13px; }
svg text { font-size: 12px; fill: #1f2328; }
svg .tick { fill: #57606a; font-size: 11px; }
svg .axis { stroke: #8c959f; } svg .zero { stroke: #57606a; stroke-width: 1.5; }
svg .threshold { stroke: #bc4c00; stroke-width: 2; stroke-dasharray: 3 2; }
.drilldown td { max-width: 28rem; white-space: normal; }
svg .boundary { stroke-dasharray: 6 3; }
p, li { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
details { margin: -1rem 0 1.5rem; } summary { color: #57606a; cursor: pointer; }
</style>
</head>
<body>
$body
</body>
</html>
""")


def _css_class(verdict: str) -> str:
    return escape(verdict.lower())


def _table(headers: list[str], rows: list[list[str]], align: str, css: str = "") -> str:
    def cls(i: int) -> str:
        return ' class="num"' if align[i] == "r" else ""

    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{escape(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
                   for row in rows)
    css_attr = f' class="{css}"' if css else ""
    return f'<div class="scroll"><table{css_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(data: dict) -> str:
    parts = []
    for block in document(data):
        match block:
            case ("title", text):
                parts.append(f"<h1>{escape(text)}</h1>")
            case ("h2", text):
                parts.append(f"<h2>{escape(text)}</h2>")
            case ("h3", text):
                parts.append(f"<h3>{escape(text)}</h3>")
            case ("p", text):
                parts.append(f"<p>{escape(text)}</p>")
            case ("banner", text):
                parts.append(f'<p class="banner">{escape(text)}</p>')
            case ("decision", overall, headlines, combined):
                parts.append(f'<p class="overall">Overall: <strong class="{_css_class(overall)}">{escape(overall)}</strong></p>')
                parts.append('<ul class="headlines">' + "".join(f"<li>{escape(h)}</li>" for h in headlines) + "</ul>")
                if combined:
                    parts.append(f"<p>{escape(COMBINED_VERDICTS)}</p><ul>" + "".join(
                        f'<li>{escape(agent)}: <strong class="{_css_class(verdict)}">{escape(verdict)}</strong></li>'
                        for agent, verdict in combined.items()) + "</ul>")
            case ("list", items):
                parts.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>")
            case ("table", headers, rows, align):
                parts.append(_table(headers, rows, align))
            case ("drilldown", rows):
                if rows:
                    parts.append(_table(*drilldown_table(rows)[1:], css="drilldown"))
            case ("chart", name):
                parts.extend(chart(name, data))
            case ("looks", path):
                parts.append(look_chart(path) + "<details><summary>The values at each look</summary>"
                             + _table(*look_table(path)[1:]) + "</details>")
    title = f"Fine-tuning quality report: run {data['run_id']}"
    return _PAGE.substitute(title=escape(title), body="\n".join(parts))
