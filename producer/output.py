"""What every producer command prints with: the two consoles, `--json`, and bad input as one
line on stderr with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    """CSV for people who open it in a spreadsheet: a text cell that starts like a formula gets a
    leading ' (shown as text, never run: `=HYPERLINK(...)` from a model id or an error stays
    inert); numbers stay numbers. JSONL exports are data and keep every value as it is."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
                      for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def bad_input(message: str) -> typer.Exit:
    """The message is printed as it is (escaped: `[postgres]` is text, not Rich markup)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def decision_line(decision: dict | None) -> str:
    if not decision:
        return "decision: not available"
    agents = ", ".join(f"{agent} {verdict}" for agent, verdict in decision.get("by_agent", {}).items())
    return f"decision: overall {decision.get('overall')} ({agents})"
