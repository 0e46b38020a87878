"""`producer status`, `runs`, `resume`, `cancel` and `metrics`: a run after it was submitted.
`status` (without `--watch`) and `runs` read SQL and import nothing else: no submit, report,
budget, Redis or Celery code."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import select

from producer.output import JsonOpt, bad_input, console, emit_json, shown
from shared.config import ConfigError, get_settings
from shared.db import migrate, read_migrating, session_scope
from shared.models import JobStatus, Run
from shared.numbers import PORT, number
from shared.progress import looks_line, run_snapshot


def status(
    run_id: str,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the run is final.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Jobs by status and backend, spend, rate, ETA."""
    gave_up = False
    try:
        snapshot = read_migrating(lambda: run_snapshot(run_id))  # a fresh database: "unknown run"
        if watch and not as_json:
            from producer.stall import STALLED
            from producer.watch import wait_for_report

            migrate()  # the watch ends in the report tables, which an older schema may lack
            snapshot = {**snapshot, **wait_for_report(run_id, quiet=False)}
            gave_up = snapshot["status"] == STALLED
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    if as_json:
        emit_json({k: v for k, v in snapshot.items() if k not in ("active", "report_ready")})
        return
    epochs = f" ({snapshot['epochs']} epochs per task)" if snapshot.get("epochs", 1) > 1 else ""
    table = Table(title=f"run {run_id}: {snapshot['status']}{epochs}")
    statuses = [s.value for s in JobStatus if s.value in snapshot["by_status"]]  # a fixed run: no look statuses
    table.add_column("backend")
    for s in statuses:
        table.add_column(s, justify="right")
    for name, row in sorted(snapshot["by_backend"].items()):
        table.add_row(name, *(str(row.get(s, 0)) for s in statuses))
    table.add_row("[bold]total[/bold]", *(str(snapshot["by_status"].get(s, 0)) for s in statuses))
    console.print(table)
    if line := looks_line(snapshot.get("looks")):
        console.print(line, highlight=False, soft_wrap=True)
    for batch in snapshot["batches"]:
        jobs = ", ".join(f"{n} {status}" for status, n in sorted(batch["jobs"].items()))
        provider_id = shown(batch["provider_batch_id"] or "not sent yet")  # the provider's text
        state = {"open": "enrolled", "submitting": "enrolled"}.get(batch["state"], batch["state"])
        console.print(f"batch {batch['batch']} ({batch['backend']}, {provider_id}): {state}; jobs {jobs}",
                      highlight=False, soft_wrap=True)
    eta = f", ETA {snapshot['eta_s']} s" if snapshot["eta_s"] else ""
    console.print(f"spent ${snapshot['spent_usd']:.4f}; {snapshot['jobs_per_s']} jobs/s{eta}; "
                  f"report: {snapshot['report'] or 'not yet'}")
    if gave_up:  # --watch stopped waiting: nothing moved for recovery.give_up_after_s
        raise typer.Exit(1)


def runs(
    limit: Annotated[int, typer.Option(parser=number(int, ge=1), help="How many recent runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent runs, one line each."""
    listing = read_migrating(lambda: _recent_runs(limit))
    if as_json:
        emit_json(listing)
        return
    if not listing:
        console.print("no runs yet: producer submit --all-agents")
    for r in listing:
        sim = " (simulated)" if r["simulated"] else ""
        console.print(f"{r['run_id']}  {r['created_at']}  {r['status']:<9} {r['jobs']:>5} jobs  {r['suite']}{sim}",
                      highlight=False, soft_wrap=True)


def _recent_runs(limit: int) -> list[dict]:
    with session_scope() as session:
        rows = session.exec(select(Run).order_by(Run.created_at.desc()).limit(limit)).all()
        return [
            {"run_id": r.id, "created_at": r.created_at.isoformat(timespec="seconds"), "status": r.status,
             "suite": r.suite, "jobs": r.total_jobs, "simulated": r.simulated, "report": r.report_path}
            for r in rows
        ]


def resume(run_id: str, as_json: JsonOpt = False) -> None:
    """Re-enqueue every job without a final result; `ok` jobs are never re-run."""
    import redis

    from producer import submit as submitting
    from producer.submit_cli import refuse_while_halted
    from shared import fleet, lifecycle

    settings = get_settings()
    refuse_while_halted(settings)
    now = fleet.redis_now(redis.Redis.from_url(settings.redis_url))
    try:
        pending = lifecycle.reopen_run(run_id, now, lifecycle.lease_seconds(settings))
    except lifecycle.UnknownRun:
        raise bad_input(f"unknown run {run_id!r}") from None
    except lifecycle.RunAlreadyFinal as final:
        raise bad_input(f"run {run_id} is {final}: a cancelled run is not resumed (submit again; --reuse takes "
                        "the answers it has)") from None
    if pending:
        submitting.enqueue(run_id, pending)
    elif lifecycle.has_waiting(run_id):  # between two looks: the look step releases the next one (or stops)
        from shared.messaging import rearm_report, request_look

        rearm_report(run_id)  # a halt's report was sent: the stop's must be sent again, as a publish re-arms it
        request_look(run_id)
        console.print(f"run {run_id}: look step requested (later looks wait)")
    if as_json:
        emit_json({"run_id": run_id, "jobs": len(pending)})
    else:
        console.print(f"run {run_id}: {len(pending)} jobs re-enqueued" if pending else f"run {run_id}: nothing to resume")


def cancel(run_id: str, as_json: JsonOpt = False) -> None:
    """Stop a run; its report is built from what finished."""
    from shared import lifecycle
    from shared.runs import publish_report

    migrate()
    try:
        lifecycle.cancel_run(run_id)
    except lifecycle.UnknownRun:
        raise bad_input(f"unknown run {run_id!r}") from None
    except lifecycle.RunAlreadyFinal as final:
        raise bad_input(f"run {run_id} is already {final}") from None
    paths = publish_report(run_id).paths
    if as_json:
        emit_json({"run_id": run_id, "status": "cancelled", "report": str(paths["md"])})
    else:
        console.print(f"run {run_id} cancelled; report: {paths['md']}")


def metrics(
    port: Annotated[int, typer.Option(parser=number(int, **PORT), help="Port of the /metrics endpoint.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 inside a container).")] = "127.0.0.1",
) -> None:
    """Serve the project's Prometheus metrics (spend, budget, limiter, errors, jobs) until stopped."""
    try:
        from shared.metrics import serve
    except ImportError:
        raise bad_input("metrics need the monitor extra: pip install 'genesis-bench[monitor]'") from None
    try:
        server, _thread = serve(get_settings(), host, port)
    except OSError as exc:
        raise bad_input(f"--host {host} --port {port}: cannot listen ({exc.strerror or exc})") from None
    console.print(f"metrics on http://{host}:{server.server_port}/metrics", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def register(app: typer.Typer) -> None:
    for command in (status, runs, resume, cancel, metrics):
        app.command(command.__name__)(command)
