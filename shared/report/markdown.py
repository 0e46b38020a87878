"""The document as markdown (charts are in report.html only; a sequential verdict's looks are a table)."""

from __future__ import annotations

import re

from shared.terminal import without_controls
from shared.report.document import COMBINED_VERDICTS, document, drilldown_table
from shared.report.sequential_section import look_table, path_title


# Every character with a meaning in CommonMark or GitHub's markdown: links and images ([ ] !),
# raw HTML and <autolinks> (< >), entities (&), code spans (`), emphasis (* _ ~), headings (#),
# table cells (|), escapes themselves (\\).
_SPECIAL = re.compile(r"[\\`*_\[\]<>!|#&~]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# GitHub links bare URLs (https://..., www....): the escaped ":" or "." keeps them plain text.
_BARE_LINK = re.compile(r"(?<=[A-Za-z0-9]):(?=//)|(?<=\bwww)\.", re.IGNORECASE)
# A list item, quote or rule when the text starts a line: "- x", "+ x", "1. x", "1) x", "---", "===".
_LINE_START = re.compile(r"(\s*\d*)(?:[-+=](?=\s|\Z|[-=])|(?<=\d)[.)](?=\s|\Z))")


def md(text: object) -> str:
    """Text as markdown that shows exactly these characters and does nothing else: the one
    escaping of the markdown report (report.md, finetuning_quality_report.md), the cost
    dashboard and `compare`'s table. Model answers, errors and anything else model-derived
    are hostile text: no link, image, HTML, entity, code span, heading or table cell of theirs
    survives, no control character reaches a terminal (shared.terminal), and a line break
    becomes a space (one cell, one line). The cheap tests first: a 10,000-job report has tens
    of thousands of cells."""
    escaped = without_controls(str(text))  # first: its backslash is then escaped like any other
    if _SPECIAL.search(escaped) is not None:
        escaped = _SPECIAL.sub(r"\\\g<0>", escaped)
    if "\n" in escaped or "\r" in escaped:
        escaped = _LINE_BREAK.sub(" ", escaped)
    if "//" in escaped or "w." in escaped or "W." in escaped:
        escaped = _BARE_LINK.sub(lambda found: "\\" + found[0], escaped)
    if escaped[:1] in _LINE_START_CHARS and (start := _LINE_START.match(escaped)) is not None:
        escaped = f"{start[1]}\\{escaped[start.end(1):]}"
    return escaped


_LINE_START_CHARS = "-+=0123456789 \t"


def _table(headers: list[str], rows: list[list[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in headers) + " |",
             "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(data: dict) -> str:
    # The first line lets write_report tell which run the latest copy belongs to.
    lines = [f"<!-- genesis-bench run_id={data['run_id']} created_at={data['created_at']} -->"]
    for block in document(data):
        match block:
            case ("title", text):
                lines += [f"# {md(text)}", ""]
            case ("h2", text):
                lines += [f"## {md(text)}", ""]
            case ("h3", text):
                lines += [f"### {md(text)}", ""]
            case ("p", text):
                lines += [md(text), ""]
            case ("banner", text):
                lines += [f"> **{md(text)}**", ""]
            case ("decision", overall, headlines, combined):
                lines += [f"**Overall: {overall}**", ""] + [f"- {md(h)}" for h in headlines] + [""]
                if combined:
                    lines += [COMBINED_VERDICTS, ""]
                    lines += [f"- {md(agent)}: **{verdict}**" for agent, verdict in combined.items()] + [""]
            case ("list", items):
                lines += [f"- {md(item)}" for item in items] + [""]
            case ("table", headers, rows, align):
                lines += _table(headers, rows, align)
            case ("drilldown", rows):
                if rows:
                    lines += _table(*drilldown_table(rows)[1:])
            case ("looks", path):
                lines += [f"**{md(path_title(path))}**", ""] + _table(*look_table(path)[1:])
            case ("chart", _):
                pass
    return "\n".join(lines)
