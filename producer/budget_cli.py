"""`producer budget`: status, the cost dashboard, manual ledger entries and lifting a halt.

Bad input (a zero limit, a negative cost, thresholds out of order in the config) is one line on
stderr and exit code 2, like every producer command.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table
from sqlalchemy import ColumnElement
from sqlmodel import Session, col, func, select

from producer.output import (ExportFormat, JsonOpt, bad_input, console, emit_json, err_console, shown, write_rows,
                             write_rows_to)
from shared.config import ConfigError, get_settings
from shared.db import migrate, session_scope
from shared.files import replacing, writable_folder
from shared.models import BudgetEvent, CostEntry
from shared.numbers import LIMIT_USD, MAX_USD, USD, number

if TYPE_CHECKING:
    from shared.budget import BudgetGuard

budget_app = typer.Typer(
    help="Spend, limit and level of the budget; the cost ledger; lifting a halt.",
    invoke_without_command=True,
)
STATUS_KEYS = ("limit_usd", "spent_usd", "reserved_usd", "level", "halted")
DETAIL_KEYS = ("emergency_usd", "remaining_usd", "halt_reason", "waits", "overruns", "overrun_usd")
LEVEL_STYLE = {"ok": "green", "warning": "yellow", "critical": "red", "emergency": "bold red"}


@contextmanager
def _bad_input_exits() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        raise bad_input(str(exc)) from None


def _guard() -> BudgetGuard:
    from shared.budget import BudgetGuard  # the guard's Redis and pricing code, when a command runs

    settings = get_settings()
    migrate(settings.database_url)
    return BudgetGuard.from_settings(settings)


@budget_app.callback()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Spend, limit, % used, level (ok / warning / critical / emergency), halted or not."""
    if ctx.invoked_subcommand is not None:
        return
    with _bad_input_exits():
        state = _guard().status()
    if as_json:
        emit_json({key: state[key] for key in (*STATUS_KEYS, *DETAIL_KEYS)})
        return
    table = Table(title="budget")
    for column in ("limit", "spent", "used", "reserved", "left before halt", "level", "halted"):
        table.add_column(column)
    style = LEVEL_STYLE[state["level"]]
    table.add_row(
        f"${state['limit_usd']:.2f}", f"${state['spent_usd']:.4f}", f"{_used(state):.1%}",
        f"${state['reserved_usd']:.4f}", f"${state['remaining_usd']:.4f}",
        f"[{style}]{state['level']}[/{style}]", "[bold red]HALTED[/bold red]" if state["halted"] else "no",
    )
    console.print(table)
    if state["halted"]:
        console.print(f"halted: {shown(state['halt_reason'])}", highlight=False, soft_wrap=True)
    if state["overruns"]:
        console.print(f"{state['overruns']} call(s) cost ${state['overrun_usd']:.4f} more than they reserved "
                      "(settled at their real cost)", highlight=False)


@budget_app.command()
def report(as_json: JsonOpt = False) -> None:
    """Write reports/cost_dashboard.md: spend by agent, backend, operation and day, and the events."""
    with _bad_input_exits():
        guard = _guard()
        path = Path(guard.settings.reports_dir) / "cost_dashboard.md"
        writable_folder(path.parent)
        with replacing(path) as out:
            out.write(render_dashboard(guard))
    if as_json:
        emit_json({"path": str(path)})
    else:
        console.print(str(path))


@budget_app.command("log")
def log_entry(
    operation: Annotated[str, typer.Option(help="inference, judge, fine_tuning, manual, ... (one word).")],
    cost: Annotated[float, typer.Option(parser=number(float, **USD), help=f"Cost in USD (0 to {MAX_USD:,}).")],
    agent: Annotated[Optional[str], typer.Option(help="The agent it was spent for.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="The backend it was spent on.")] = None,
    note: Annotated[str, typer.Option(help="Why (kept in the log line).")] = "",
    source: Annotated[Optional[str], typer.Option(
        help="With --operation fine_tuning (required there): the fine-tuning job's id. A job is ledgered once.")] = None,
    model: Annotated[Optional[str], typer.Option(help="With --operation fine_tuning: the model the job made.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a manual ledger entry (spend made outside the workers, e.g. a fine-tuning job)."""
    with _bad_input_exits():
        if len(operation.split()) != 1:
            raise ConfigError(f"--operation must be one word (got {operation!r})")
        entry = _fine_tuning_entry(operation.strip(), source, model, agent, cost)
        guard = _guard()
        if entry is None:
            entry = guard.log_manual(agent=agent, operation=operation, cost_usd=cost, backend=backend, note=note)
            added = True
        else:
            recorded = guard.record_entry(entry)
            added, entry = recorded is entry, recorded
        state = after_ledger_write(guard, f"manual entry {entry.id}")
    if as_json:
        emit_json({"id": entry.id, "cost_usd": entry.cost_usd, "added": added,
                   **{key: state[key] for key in STATUS_KEYS}})
    else:
        what = f"ledger entry {entry.id}" if added else f"already in the ledger as entry {entry.id}, nothing added"
        console.print(f"{what}: ${entry.cost_usd:.4f} {entry.operation}; "
                      f"spent ${state['spent_usd']:.4f} of ${state['limit_usd']:.2f} ({state['level']})", highlight=False)


def _fine_tuning_entry(operation: str, source: str | None, model: str | None, agent: str | None,
                       cost: float) -> CostEntry | None:
    """The entry of `budget log --operation fine_tuning --source JOB_ID`; None for other operations."""
    from shared.finetune import fine_tuning_entry
    from shared.models import FINE_TUNING

    if operation != FINE_TUNING:
        if source is not None or model is not None:
            raise ConfigError(f"--source and --model go with --operation {FINE_TUNING} (a fine-tuning job)")
        return None
    if source is None:
        raise ConfigError(f"--operation {FINE_TUNING} needs --source JOB_ID (the fine-tuning job's id)")
    if agent is not None and agent not in get_settings().agents.names:
        raise ConfigError(f"--agent {agent!r} is not an agent (known: {', '.join(get_settings().agents.names)})")
    return fine_tuning_entry(source, cost, agent=agent, model=model)


def after_ledger_write(guard: BudgetGuard, what: str) -> dict[str, Any]:
    """The budget after a producer command wrote to the ledger: past the emergency threshold,
    the halt is recorded and the provider queues stop, as when a worker's call passes it."""
    state = guard.status()
    if state["halted"] and guard.halt(run_id=None, reason=f"{what} passed the emergency threshold"):
        _stop_provider_consumers()
    return state


@budget_app.command("export")
def export_ledger(
    format: Annotated[ExportFormat, typer.Option("--format", help="File format.")] = ExportFormat.csv,
    output: Annotated[Optional[Path], typer.Option("--output", help="File to write (default: stdout).")] = None,
) -> None:
    """Every ledger entry (at, run, job, agent, backend, model, operation, tokens, cost, source), in the order written."""
    from shared.budget.ledger import LEDGER_COLUMNS, ledger_rows

    with _bad_input_exits():
        settings = get_settings()
        if output is not None and not output.parent.is_dir():
            raise ConfigError(f"--output: folder {str(output.parent)!r} does not exist")
        migrate(settings.database_url)
    rows = ledger_rows(settings.database_url)
    if output is None:
        write_rows(rows, LEDGER_COLUMNS, format, sys.stdout)
        return
    count = write_rows_to(output, rows, LEDGER_COLUMNS, format)
    err_console.print(f"{count} ledger entries written to {output}", highlight=False)


@budget_app.command()
def resume(
    limit: Annotated[
        Optional[float], typer.Option("--limit", parser=number(float, **LIMIT_USD),
                                       help=f"A new budget limit in USD (> 0, at most {MAX_USD:,}).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift the halt (optionally raising the limit) and let the workers consume the provider queues again."""
    with _bad_input_exits():
        guard = _guard()
        guard.resume(limit_usd=limit)
        state = guard.status()
    _restore_provider_consumers()
    if as_json:
        emit_json({key: state[key] for key in STATUS_KEYS})
    else:
        console.print(f"budget resumed: limit ${state['limit_usd']:.2f}, spent ${state['spent_usd']:.4f} "
                      f"({state['level']}); provider queues restored. Finish a run with: producer resume RUN_ID")


def _stop_provider_consumers() -> None:
    from shared.messaging import stop_provider_consumers  # lazily: not every command needs the Celery app

    stop_provider_consumers()


def _restore_provider_consumers() -> None:
    from shared.messaging import restore_provider_consumers

    restore_provider_consumers()


# --- the dashboard ----------------------------------------------------------------------


def render_dashboard(guard: BudgetGuard) -> str:
    """Markdown; every text from the ledger (agent, backend, operation: typed by whoever logged
    the entry) and every event message goes through the report's one markdown escaping."""
    from shared.report.markdown import md

    state = guard.status()
    with session_scope(guard.database_url) as session:
        sections = [
            ("agent", _spend_by(session, col(CostEntry.agent))),
            ("backend", _spend_by(session, col(CostEntry.backend))),
            ("operation", _spend_by(session, col(CostEntry.operation))),
            ("day", _spend_by(session, func.date(CostEntry.at), chronological=True)),
        ]
        events = session.exec(
            select(BudgetEvent).where(BudgetEvent.kind != "ledger").order_by(col(BudgetEvent.id))
        ).all()
    lines = [
        "# Cost dashboard",
        "",
        f"_Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from the SQL ledger._",
        "",
        "## Budget",
        "",
        "| limit USD | spent USD | used | reserved USD | emergency at USD | level | halted |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| {state['limit_usd']:.2f} | {state['spent_usd']:.4f} | {_used(state):.1%} | {state['reserved_usd']:.4f} "
        f"| {state['emergency_usd']:.2f} | **{state['level']}** | {'yes' if state['halted'] else 'no'} |",
    ]
    for name, rows in sections:
        lines += ["", f"## Spend by {name}", "", f"| {name} | entries | input tokens | output tokens | cost USD |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {md(key)} | {n} | {tin} | {tout} | {cost:.4f} |" for key, n, tin, tout, cost in rows]
        if not rows:
            lines.append("| (no spend yet) | 0 | 0 | 0 | 0.0000 |")
    lines += ["", "## Budget events", ""]
    if events:
        lines += ["| at (UTC) | kind | level | spent USD | limit USD | run | message |", "|---|---|---|---:|---:|---|---|"]
        lines += [
            f"| {e.at.isoformat(timespec='seconds')} | {md(e.kind)} | {md(e.level)} | {e.spent_usd:.4f} | {e.limit_usd:.2f} "
            f"| {md(e.run_id or '')} | {md(e.message)} |"
            for e in events
        ]
    else:
        lines.append("No threshold crossed, no halt.")
    return "\n".join(lines) + "\n"


def _spend_by(
    session: Session, key: ColumnElement, *, chronological: bool = False
) -> list[tuple[str, int, int, int, float]]:
    """Biggest spenders first; days in calendar order."""
    total = func.sum(CostEntry.cost_usd)
    rows = session.exec(
        select(key, func.count(), func.sum(CostEntry.input_tokens), func.sum(CostEntry.output_tokens), total)
        .group_by(key)
        .order_by(key if chronological else total.desc())
    ).all()
    return [(str(k) if k is not None else "(none)", n, tin or 0, tout or 0, cost or 0.0) for k, n, tin, tout, cost in rows]


def _used(state: dict[str, Any]) -> float:
    return state["spent_usd"] / state["limit_usd"]
