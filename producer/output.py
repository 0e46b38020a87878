"""What every producer command prints with: the two consoles, `--json`, bad input as one line
on stderr with exit code 2, and rows streamed as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from shared.terminal import without_controls

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    """The CSV of `write_rows`, as one string."""
    buffer = io.StringIO()
    write_rows(rows, columns, ExportFormat.csv, buffer)
    return buffer.getvalue()


def _inert_cell(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def shown(text: object) -> str:
    """Text that may quote a model or a provider, for a console line: its control characters
    made visible (shared.terminal) and its brackets read as text, never as Rich markup."""
    return escape(without_controls(str(text)))


def bad_input(message: str) -> typer.Exit:
    """The message is printed as it is (`shown`: `[postgres]` is text, not Rich markup)."""
    return _error_line(message, 2)


def failure(message: str) -> typer.Exit:
    """A failed call or check (exit 1), its message printed as `bad_input`'s."""
    return _error_line(message, 1)


def _error_line(message: str, code: int) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {shown(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def decision_line(decision: dict | None) -> str:
    if not decision:
        return "decision: not available"
    agents = ", ".join(f"{agent} {verdict}" for agent, verdict in decision.get("by_agent", {}).items())
    return f"decision: overall {decision.get('overall')} ({agents})"


class ExportFormat(str, Enum):
    """What `--format` takes; Typer lists the choices in --help and refuses others (exit 2)."""

    csv = "csv"
    jsonl = "jsonl"


def write_rows(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], fmt: ExportFormat, out: IO[str]) -> int:
    """Write rows one at a time (never all in memory); CSV with a header row. Returns the count.
    CSV is for people who open it in a spreadsheet: a text cell that starts like a formula gets a
    leading ' (shown as text, never run: `=HYPERLINK(...)` from a model id or an error stays
    inert); numbers stay numbers. JSONL is data and keeps every value as it is."""
    count = 0
    if fmt is ExportFormat.csv:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for count, row in enumerate(rows, 1):
            writer.writerow({key: _inert_cell(value) for key, value in row.items()})
    else:
        for count, row in enumerate(rows, 1):
            out.write(json.dumps(row, default=str) + "\n")
    return count


def write_rows_to(path: Path, rows: Iterable[dict[str, Any]], columns: tuple[str, ...], fmt: ExportFormat) -> int:
    """`write_rows` into a file that appears whole or not at all."""
    from shared.files import replacing

    with replacing(path, newline="") as out:
        return write_rows(rows, columns, fmt, out)
