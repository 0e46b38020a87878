"""`producer`: submit runs, watch them, (re)build reports, resume and cancel; budget and
simulator sub-commands. Exit codes: 0 ok, 1 a failed run or check, 2 bad input."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func
from sqlmodel import select

from producer import submit as submitting
from producer.analysis_cli import decision_line
from producer.errors import OneLineErrors, outage_line
from producer.stall import STALLED, StallWatch
from shared import fleet, lifecycle
from shared.budget import BudgetGuard
from shared.config import ConfigError, get_settings, redacted_url
from shared.db import migrate, session_scope
from shared.models import CostEntry, Job, JobStatus, Run, RunStatus
from shared.report import fetch_report

app = typer.Typer(help="genesis-bench producer: benchmark LLM agents across providers.", no_args_is_help=True,
                  cls=OneLineErrors)
console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FINAL_RUN_STATUSES = {RunStatus.completed, RunStatus.cancelled}


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


def _bad_input(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


# --- submit -----------------------------------------------------------------------------------


@app.command()
def submit(
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent in the config.")] = False,
    agent: Annotated[Optional[list[str]], typer.Option("--agent", help="An agent (repeatable).")] = None,
    backend: Annotated[Optional[list[str]], typer.Option("--backend", help="A backend (repeatable); default: all enabled.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Suite name or folder (default from config).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="First N tasks per agent (smoke runs).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and estimate cost; enqueue nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the report exists.")] = False,
    reuse: Annotated[bool, typer.Option("--reuse", help="Take identical earlier ok answers instead of paying again.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue one job per (agent, task, backend) and print the run id."""
    try:
        settings = get_settings()
        if reuse:
            settings = submitting.with_reuse(settings)
        selection = submitting.select_work(
            settings, agents=agent or [], all_agents=all_agents, backends=backend or [], suite=suite, limit=limit,
            check_keys=not dry_run,
        )
        if dry_run:
            _dry_run(settings, selection, as_json)
            return
        _refuse_while_halted(settings)
        run_id, jobs = submitting.record_run(settings, selection)
    except ConfigError as exc:
        raise _bad_input(str(exc)) from None
    try:
        submitting.enqueue(run_id, jobs)
    except Exception as exc:  # noqa: BLE001 - broker down: the run is recorded and resumable
        err_console.print(f"[red]error:[/red] could not enqueue run {run_id} ({exc}); "
                          f"once the broker answers: producer resume {run_id}")
        raise typer.Exit(1) from None
    if as_json and not wait:
        _emit_json({"run_id": run_id, "jobs": len(jobs)})
        return
    if not as_json:
        console.print(f"run [bold]{run_id}[/bold]: {len(jobs)} jobs enqueued "
                      f"({len(selection.agents)} agents × {len(selection.backends)} backends)")
    if wait:
        final = _wait_for_report(run_id, quiet=as_json)
        if as_json:
            _emit_json({"run_id": run_id, "jobs": len(jobs), **final})
        raise typer.Exit(0 if final["status"] == RunStatus.completed else 1)


def _refuse_while_halted(settings) -> None:
    """No new paid work while the budget guard is halted (a failed check: exit 1)."""
    migrate(settings.database_url)
    try:
        halted = BudgetGuard.from_settings(settings).is_halted()
    except redis.RedisError as exc:
        err_console.print(f"[red]error:[/red] Redis is not answering at {redacted_url(settings.redis_url)} ({exc}); "
                          "nothing was done", soft_wrap=True)
        raise typer.Exit(1) from None
    if halted:
        err_console.print("[red]error:[/red] the budget guard is halted: nothing was done; `producer budget` shows "
                          "why, `producer budget resume [--limit USD]` lifts it")
        raise typer.Exit(1)


def _dry_run(settings, selection, as_json: bool) -> None:
    from shared.budget import estimate_run_cost
    from shared.calls import judge_worst_case

    estimate = estimate_run_cost(settings, selection.suite, selection.agents, selection.backends, selection.limit)
    if settings.reuse.enabled:
        migrate(settings.database_url)
        _apply_reuse(estimate, submitting.reuse_savings(settings, selection))
    judged = judge_worst_case(settings, selection)
    if judged["calls"]:  # grades are paid too, whether the answer is reused or not
        estimate["judge"] = judged
        estimate["estimated_cost_usd"] = round(estimate["estimated_cost_usd"] + judged["cost_usd"], 6)
        estimate["within_budget"] = estimate["estimated_cost_usd"] <= estimate["remaining_usd"]
    try:
        remaining = BudgetGuard.from_settings(settings).status()["remaining_usd"]
        estimate["remaining_usd"] = remaining
        estimate["within_budget"] = estimate["estimated_cost_usd"] <= remaining
    except Exception:  # noqa: BLE001 - Redis not running: estimate against the configured limit
        pass
    if as_json:
        _emit_json(estimate)
        return
    table = Table(title=f"dry run: {estimate['jobs']} jobs (worst case: every answer uses max_tokens)")
    reusing = "reuse" in estimate
    for column in ("backend", "jobs", *(("reused",) if reusing else ()), "input tokens", "output tokens", "cost USD"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    for name, row in estimate["by_backend"].items():
        reused = (str(row["reused"]),) if reusing else ()
        table.add_row(name, str(row["jobs"]), *reused, str(row["input_tokens"]), str(row["output_tokens"]),
                      f"{row['cost_usd']:.4f}")
    console.print(table)
    if "reuse" in estimate:
        saved = estimate["reuse"]
        console.print(f"reuse: {saved['calls_saved']} of {estimate['jobs']} calls take an earlier answer, saving "
                      f"≤ ${saved['saved_usd']:.4f} (those answers cost ${saved['paid_before_usd']:.4f} when paid)")
    if "judge" in estimate:
        console.print(f"judge: {estimate['judge']['calls']} grading calls, ≤ ${estimate['judge']['cost_usd']:.4f}")
    fits = "fits" if estimate["within_budget"] else "does NOT fit"
    console.print(f"estimated ≤ ${estimate['estimated_cost_usd']:.4f}; {fits} the remaining budget "
                  f"(${estimate['remaining_usd']:.2f}). Nothing was enqueued.")


def _apply_reuse(estimate: dict, savings: dict) -> None:
    """The estimate without the calls reuse saves (the table then shows what will be paid)."""
    estimate["reuse"] = savings
    for name, row in estimate["by_backend"].items():
        row["reused"] = savings["by_backend"][name]["reused"]
        row["cost_usd"] = round(max(0.0, row["cost_usd"] - savings["by_backend"][name]["saved_usd"]), 6)
    estimate["estimated_cost_usd"] = round(sum(row["cost_usd"] for row in estimate["by_backend"].values()), 6)
    estimate["within_budget"] = estimate["estimated_cost_usd"] <= estimate["remaining_usd"]


def _wait_for_report(run_id: str, *, quiet: bool) -> dict[str, Any]:
    """Progress bars from SQL until the run is final and its report is written (or it halts)."""
    progress = Progress(
        TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console, disable=quiet,
    )
    bars: dict[str, int] = {}
    watch = StallWatch(run_id, get_settings())
    with progress:
        while True:
            try:
                snapshot = run_snapshot(run_id)
            except Exception as exc:  # noqa: BLE001 - an outage while waiting: say so, keep waiting
                if outage_line(exc) is None:
                    raise
                snapshot = None
            if (said := watch.observe(snapshot["by_status"] if snapshot else None)) and not quiet:
                progress.console.print(f"[yellow]{said}[/yellow]", highlight=False, soft_wrap=True)
            if watch.given_up():
                return _stop_waiting(run_id, watch, quiet)
            if snapshot is None:
                time.sleep(0.5)
                continue
            for name, row in snapshot["by_backend"].items():
                done = row.get("ok", 0) + row.get("error", 0) + row.get("halted", 0)
                detail = f"ok {row.get('ok', 0)} err {row.get('error', 0)} halted {row.get('halted', 0)}"
                if name not in bars:
                    bars[name] = progress.add_task(name, total=sum(row.values()), detail=detail)
                progress.update(bars[name], completed=done, detail=detail)
            if snapshot["status"] in FINAL_RUN_STATUSES and snapshot["report_ready"]:
                # Built on whichever host ran build_report: this host's copy comes from SQL.
                published = fetch_report(run_id)
                break
            if snapshot["status"] == RunStatus.halted and not snapshot["by_status"]["running"]:
                # The halted queues hold the rest, so the run cannot finish: report what did.
                from shared.runs import publish_report

                published = publish_report(run_id, partial=True)
                break
            time.sleep(0.5)
    report = str(published.paths["md"]) if published else None
    decision = published.decision if published else None
    if not quiet:
        if snapshot["status"] == RunStatus.halted:
            console.print(f"[yellow]run {run_id} halted by the budget guard[/yellow]: "
                          f"`producer budget resume [--limit USD]`, then `producer resume {run_id}`")
        _print_common_errors(run_id)
        console.print(f"report: {report}")
        console.print(decision_line(decision), highlight=False)
    return {"status": snapshot["status"], "report": report, "decision": decision}


def _print_common_errors(run_id: str, top: int = 3) -> None:
    """The few error messages behind most failed jobs (a worker that cannot read the suite,
    a bad key...), so the user sees the cause without opening the report."""
    with session_scope() as session:
        rows = session.exec(
            select(Job.error_type, Job.error_message, func.count()).where(Job.run_id == run_id, Job.status == JobStatus.error)
            .group_by(Job.error_type, Job.error_message).order_by(func.count().desc()).limit(top)
        ).all()
    for error_type, message, n in rows:
        err_console.print(f"[red]{n} job(s) failed:[/red] {error_type}: {message}", highlight=False, soft_wrap=True)


def _stop_waiting(run_id: str, watch: StallWatch, quiet: bool) -> dict[str, Any]:
    """No progress for give_up_after_s: stop waiting (exit 1); the run itself goes on."""
    if not quiet:
        err_console.print(f"[red]gave up waiting:[/red] run {run_id} made no progress for "
                          f"{watch.settings.recovery.give_up_after_s:.0f}s ({watch.describe()}); it goes on without "
                          f"this command: producer status {run_id}", highlight=False, soft_wrap=True)
    return {"status": STALLED, "report": None, "decision": None, "stalled": watch.describe()}


# --- status, runs, report ----------------------------------------------------------------------


def run_snapshot(run_id: str) -> dict[str, Any]:
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise ConfigError(f"unknown run {run_id!r}")
        # One grouped query, answered from the index ix_job_run_progress alone (10,000 jobs: ~2 ms).
        rows = session.exec(
            select(Job.backend, Job.status, func.count(), func.min(Job.started_at), func.max(Job.finished_at))
            .where(Job.run_id == run_id).group_by(Job.backend, Job.status)
        ).all()
        spent = session.exec(select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0)).where(CostEntry.run_id == run_id)).one()
        starts = [first for *_, first, _ in rows if first is not None]
        finishes = [last for *_, last in rows if last is not None]
        first_start, last_finish = min(starts, default=None), max(finishes, default=None)
        run_status, created, total = run.status, run.created_at, run.total_jobs
        report = run.report_path if run.report_path and Path(run.report_path).exists() else None
        report_ready = run.report_path is not None  # possibly on another host: SQL holds it
    by_status = {s.value: 0 for s in JobStatus}
    by_backend: dict[str, dict[str, int]] = {}
    for backend, status, n, _, _ in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_backend.setdefault(backend, {})[status] = n
    finished = by_status["ok"] + by_status["error"]
    elapsed = ((last_finish or created) - (first_start or created)).total_seconds() if first_start else 0.0
    rate = finished / elapsed if elapsed > 0 else 0.0
    remaining = by_status["queued"] + by_status["running"]
    return {
        "run_id": run_id, "status": run_status, "total": total, "by_status": by_status, "by_backend": by_backend,
        "spent_usd": round(float(spent), 6), "report": report, "report_ready": report_ready, "jobs_per_s": round(rate, 2),
        "eta_s": round(remaining / rate, 1) if rate and remaining else None, "active": remaining > 0,
    }


@app.command()
def status(
    run_id: str,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the run is final.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Jobs by status and backend, spend, rate, ETA."""
    migrate()  # a fresh database: "unknown run", not a missing table
    try:
        snapshot = run_snapshot(run_id)
        if watch and not as_json:
            snapshot = {**snapshot, **_wait_for_report(run_id, quiet=False)}
    except ConfigError as exc:
        raise _bad_input(str(exc)) from None
    if as_json:
        _emit_json({k: v for k, v in snapshot.items() if k not in ("active", "report_ready")})
        return
    table = Table(title=f"run {run_id}: {snapshot['status']}")
    statuses = [s.value for s in JobStatus]
    table.add_column("backend")
    for s in statuses:
        table.add_column(s, justify="right")
    for name, row in sorted(snapshot["by_backend"].items()):
        table.add_row(name, *(str(row.get(s, 0)) for s in statuses))
    table.add_row("[bold]total[/bold]", *(str(snapshot["by_status"].get(s, 0)) for s in statuses))
    console.print(table)
    eta = f", ETA {snapshot['eta_s']} s" if snapshot["eta_s"] else ""
    console.print(f"spent ${snapshot['spent_usd']:.4f}; {snapshot['jobs_per_s']} jobs/s{eta}; "
                  f"report: {snapshot['report'] or 'not yet'}")
    if snapshot["status"] == STALLED:  # --watch gave up waiting
        raise typer.Exit(1)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent runs, one line each."""
    migrate()
    with session_scope() as session:
        rows = session.exec(select(Run).order_by(Run.created_at.desc()).limit(limit)).all()
        listing = [
            {"run_id": r.id, "created_at": r.created_at.isoformat(timespec="seconds"), "status": r.status,
             "suite": r.suite, "jobs": r.total_jobs, "simulated": r.simulated, "report": r.report_path}
            for r in rows
        ]
    if as_json:
        _emit_json(listing)
        return
    if not listing:
        console.print("no runs yet: producer submit --all-agents")
    for r in listing:
        sim = " (simulated)" if r["simulated"] else ""
        console.print(f"{r['run_id']}  {r['created_at']}  {r['status']:<9} {r['jobs']:>5} jobs  {r['suite']}{sim}",
                      highlight=False, soft_wrap=True)


@app.command()
def resume(run_id: str, as_json: JsonOpt = False) -> None:
    """Re-enqueue every job without a final result; `ok` jobs are never re-run."""
    settings = get_settings()
    _refuse_while_halted(settings)
    now = fleet.redis_now(redis.Redis.from_url(settings.redis_url))
    try:
        pending = lifecycle.reopen_run(run_id, now, lifecycle.lease_seconds(settings))
    except lifecycle.UnknownRun:
        raise _bad_input(f"unknown run {run_id!r}") from None
    if pending:
        submitting.enqueue(run_id, pending)
    if as_json:
        _emit_json({"run_id": run_id, "jobs": len(pending)})
    else:
        console.print(f"run {run_id}: {len(pending)} jobs re-enqueued" if pending else f"run {run_id}: nothing to resume")


@app.command()
def cancel(run_id: str, as_json: JsonOpt = False) -> None:
    """Stop a run; its report is built from what finished."""
    from shared.runs import publish_report

    migrate()
    try:
        lifecycle.cancel_run(run_id)
    except lifecycle.UnknownRun:
        raise _bad_input(f"unknown run {run_id!r}") from None
    except lifecycle.RunAlreadyFinal as final:
        raise _bad_input(f"run {run_id} is already {final}") from None
    paths = publish_report(run_id).paths
    if as_json:
        _emit_json({"run_id": run_id, "status": "cancelled", "report": str(paths["md"])})
    else:
        console.print(f"run {run_id} cancelled; report: {paths['md']}")


@app.command()
def metrics(
    port: Annotated[int, typer.Option(help="Port of the /metrics endpoint.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 inside a container).")] = "127.0.0.1",
) -> None:
    """Serve the project's Prometheus metrics (spend, budget, limiter, errors, jobs) until stopped."""
    try:
        from shared.metrics import serve
    except ImportError:
        raise _bad_input("metrics need the monitor extra: pip install 'genesis-bench[monitor]'") from None
    try:
        server, _thread = serve(get_settings(), host, port)
    except OSError as exc:
        raise _bad_input(f"--host {host} --port {port}: cannot listen ({exc.strerror or exc})") from None
    console.print(f"metrics on http://{host}:{server.server_port}/metrics", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def _register_subcommands() -> None:
    from producer import analysis_cli
    from producer.budget_cli import budget_app
    from simulator.cli import simulator_command

    app.add_typer(budget_app, name="budget", help="Spend, limits, ledger and the halt.")
    analysis_cli.register(app)  # report [--gate], export, compare
    app.command("simulator", help="Run the provider simulator (OpenAI, Anthropic, Mistral wire formats).")(simulator_command)


_register_subcommands()


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # from a sub-command that did not catch it itself
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
