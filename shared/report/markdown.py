"""The document as markdown (charts are in report.html only)."""

from __future__ import annotations

from shared.report.document import document, drilldown_table


def md(text: str) -> str:
    """Keeps table cells in one cell and stops raw HTML (e.g. `<script>`) reaching a renderer."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


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
            case ("p", text):
                lines += [md(text), ""]
            case ("banner", text):
                lines += [f"> **{md(text)}**", ""]
            case ("decision", overall, headlines):
                lines += [f"**Overall: {overall}**", ""] + [f"- {md(h)}" for h in headlines] + [""]
                lines += [f"- {md(agent)}: **{verdict}**" for agent, verdict in data["decision"]["by_agent"].items()]
                lines.append("")
            case ("list", items):
                lines += [f"- {md(item)}" for item in items] + [""]
            case ("table", headers, rows, align):
                lines += _table(headers, rows, align)
            case ("drilldown", rows):
                if rows:
                    lines += _table(*drilldown_table(rows)[1:])
            case ("chart", _):
                pass
    return "\n".join(lines)
