"""What every producer command prints with: the two consoles, `--json`, and bad input as one
line on stderr with exit code 2."""

from __future__ import annotations

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


def bad_input(message: str) -> typer.Exit:
    """The message is printed as it is (escaped: `[postgres]` is text, not Rich markup)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def decision_line(decision: dict | None) -> str:
    if not decision:
        return "decision: not available"
    agents = ", ".join(f"{agent} {verdict}" for agent, verdict in decision.get("by_agent", {}).items())
    return f"decision: overall {decision.get('overall')} ({agents})"
