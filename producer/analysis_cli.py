"""`producer report` (with `--gate` for CI), `producer export` and `producer compare`: what
people and scripts do with finished runs. Registered on the main app by producer.cli; the report
and statistics code (numpy) is imported when one of them runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from sqlmodel import select

from producer.output import (
    ExportFormat, JsonOpt, bad_input, console, decision_line, emit_json, err_console, shown, write_rows, write_rows_to,
)
from shared.config import ConfigError, get_settings
from shared.db import migrate, session_scope
from shared.models import Job

EXPORT_COLUMNS = ("run_id", "agent", "task_id", "epoch", "difficulty", "backend", "provider", "model", "status",
                  "score", "latency_ms", "input_tokens", "output_tokens", "reasoning_tokens", "truncated", "cost_usd",
                  "attempts", "error_type", "worker")


def report(
    run_id: str,
    partial: Annotated[bool, typer.Option("--partial", help="For a run still in flight.")] = False,
    gate: Annotated[bool, typer.Option("--gate", help="Exit 0 only when the overall decision is GO, else 1.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)build a run's report from SQL into this host's reports folder."""
    from shared.progress import run_snapshot
    from shared.report import GO
    from shared.runs import publish_report

    try:
        migrate()
        if run_snapshot(run_id)["active"] and not partial:
            raise ConfigError(f"run {run_id} is still in flight: use --partial for a report of what has finished")
        published = publish_report(run_id, partial=partial)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    data = published.data
    if as_json:
        emit_json({**{k: str(v) for k, v in published.paths.items()}, "decision": data["decision"],
                    "headlines": data["headlines"]})
    else:
        console.print(f"report: {published.paths['md']}")
        console.print(decision_line(data["decision"]), highlight=False)
        for line in data["headlines"]:
            console.print(f"  {shown(line)}", highlight=False, soft_wrap=True)
    if gate:
        raise typer.Exit(0 if data["decision"]["overall"] == GO else 1)


def _export_rows(run_id: str) -> list[dict]:
    from shared.report.data import get_run

    with session_scope() as session:
        get_run(session, run_id)
        jobs = session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)).all()
        return [{column: getattr(job, column) for column in EXPORT_COLUMNS} for job in jobs]


def export(
    run_id: str,
    format: Annotated[ExportFormat, typer.Option("--format", help="Rows as CSV or as JSON lines.")] = ExportFormat.csv,
    output: Annotated[Optional[Path], typer.Option("--output", help="File to write (default: stdout).")] = None,
) -> None:
    """One row per job: agent, task, backend, model, status, score, latency, tokens, cost."""
    if output is not None and not output.parent.is_dir():
        raise bad_input(f"--output: folder {str(output.parent)!r} does not exist")
    try:
        migrate()
        rows = _export_rows(run_id)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    if output is None:
        write_rows(rows, EXPORT_COLUMNS, format, sys.stdout)
    else:
        count = write_rows_to(output, rows, EXPORT_COLUMNS, format)
        err_console.print(f"{count} rows written to {output}", highlight=False)


def compare_runs(run_a: str, run_b: str) -> list[dict]:
    """Every (agent, backend) both runs have, paired over the tasks both answered ok in both
    runs; difference = B - A (e.g. the v4 fine-tune's run against v3's). The interval and the
    two-sided p-value come from the decision's score test (shared.stats), at `confidence`."""
    from shared.report.data import answered, get_run, load_jobs
    from shared.epochs import task_means
    from shared.report.decision import pairing
    from shared.stats import two_sided

    rule = get_settings().decision
    with session_scope() as session:
        get_run(session, run_a)
        get_run(session, run_b)
        jobs_a, jobs_b = load_jobs(session, run_a), load_jobs(session, run_b)

    def index(jobs) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (agent, backend), each task's mean over its ok epochs (shared.epochs)."""
        grouped: dict[tuple[str, str], list[Any]] = {}
        for job in jobs:
            grouped.setdefault((job.agent, job.backend), []).append(job)
        return {key: task_means(rows, errors_count_as_zero=False) for key, rows in grouped.items()}

    a, b = index(jobs_a), index(jobs_b)
    rows = []
    for key in [k for k in a if k in b]:
        tasks = pairing(b[key], a[key])["answered"]
        scores_a = [a[key][t].score for t in tasks]
        scores_b = [b[key][t].score for t in tasks]
        test = two_sided(scores_b, scores_a, rule.confidence)
        rows.append({
            "agent": key[0], "backend": key[1], "n": len(tasks),
            "a_accuracy": sum(scores_a) / len(tasks) if tasks else None,
            "b_accuracy": sum(scores_b) / len(tasks) if tasks else None,
            "difference_abs": test.mean_difference if tasks else None,
            "ci95_abs": list(test.ci) if test.ci else None,
            "p_value": test.p_two_sided,
            "method": test.method,
            "unpaired_a": sum(answered(j) for j in a[key].values()) - len(tasks),
            "unpaired_b": sum(answered(j) for j in b[key].values()) - len(tasks),
        })
    return rows


def _compare_table(run_a: str, run_b: str, rows: list[dict]) -> str:
    from shared.report.markdown import md

    def pct(value: float | None, signed: bool = False) -> str:
        return "n/a" if value is None else (f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}")

    lines = [f"| agent | backend | n | A {md(run_a)} % | B {md(run_b)} % | B - A (pp) | 95% CI (pp) | p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = "n/a" if r["ci95_abs"] is None else f"[{pct(r['ci95_abs'][0], True)}, {pct(r['ci95_abs'][1], True)}]"
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3f}"
        lines.append(f"| {md(r['agent'])} | {md(r['backend'])} | {r['n']} | {pct(r['a_accuracy'])} | "
                     f"{pct(r['b_accuracy'])} | {pct(r['difference_abs'], True)} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def compare(run_a: str, run_b: str, as_json: JsonOpt = False) -> None:
    """Every (agent, backend) of both runs, paired over their common tasks (B - A)."""
    try:
        migrate()
        rows = compare_runs(run_a, run_b)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    if as_json:
        emit_json({"run_a": run_a, "run_b": run_b, "rows": rows})
    elif not rows:
        sys.stdout.write(f"runs {run_a} and {run_b} share no (agent, backend)\n")
    else:
        sys.stdout.write(_compare_table(run_a, run_b, rows))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("export")(export)
    app.command("compare")(compare)
