"""Watching a run until it is final and reported (`submit --wait`, `status --watch`): progress
bars from SQL, a note when it stalls, and giving up when nothing moves for too long."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func
from sqlmodel import select

from producer.errors import outage_line
from producer.output import console, decision_line, err_console, shown
from producer.stall import STALLED, StallWatch
from shared.config import get_settings
from shared.db import session_scope
from shared.models import DONE_JOBS, FINAL_RUN_STATUSES, Job, JobStatus, RunStatus
from shared.batches import batched_by_backend
from shared.progress import looks_line, run_snapshot
from shared.report import fetch_report


def wait_for_report(run_id: str, *, quiet: bool) -> dict[str, Any]:
    """Progress bars from SQL until the run is final and its report is written (or it halts).
    The bars and notes go to stderr: stdout is for data (`--json`, pipes)."""
    progress = Progress(
        TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err_console, disable=quiet,
    )
    bars: dict[str, int] = {}
    said_looks = None
    watch = StallWatch(run_id, get_settings())
    with progress:
        while True:
            try:
                snapshot = run_snapshot(run_id)
            except Exception as exc:  # noqa: BLE001 - an outage while waiting: say so, keep waiting
                if outage_line(exc) is None:
                    raise
                snapshot = None
            by_status, batches = (snapshot["by_status"], snapshot["batches"]) if snapshot else (None, None)
            if (said := watch.observe(by_status, batches)) and not quiet:
                progress.console.print(f"[yellow]{said}[/yellow]", highlight=False, soft_wrap=True)
            if watch.given_up():
                return _stop_waiting(run_id, watch, quiet)
            if snapshot is None:
                time.sleep(0.5)
                continue
            if (line := looks_line(snapshot.get("looks"))) and line != said_looks and not quiet:
                progress.console.print(line, highlight=False, soft_wrap=True)  # a look released, an agent stopped
                said_looks = line
            batched = batched_by_backend(snapshot["batches"])
            for name, row in snapshot["by_backend"].items():
                done = sum(row.get(s, 0) for s in DONE_JOBS)
                detail = f"ok {row.get('ok', 0)} err {row.get('error', 0)} halted {row.get('halted', 0)}"
                if row.get("not_needed") or row.get("waiting"):
                    detail += f" not needed {row.get('not_needed', 0)} waiting {row.get('waiting', 0)}"
                if name in batched:  # a batch backend: where its jobs are
                    detail += " | batch: enrolled {enrolled} submitted {submitted} done {done}".format(**batched[name])
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
        # the message may quote the provider or the model: printed as text, never as Rich markup
        err_console.print(f"[red]{n} job(s) failed:[/red] {shown(f'{error_type}: {message}')}", highlight=False,
                          soft_wrap=True)


def _stop_waiting(run_id: str, watch: StallWatch, quiet: bool) -> dict[str, Any]:
    """No progress for give_up_after_s: stop waiting (exit 1); the run itself goes on."""
    if not quiet:
        err_console.print(f"[red]gave up waiting:[/red] run {run_id} made no progress for "
                          f"{watch.settings.recovery.give_up_after_s:.0f}s ({watch.describe()}); it goes on without "
                          f"this command: producer status {run_id}", highlight=False, soft_wrap=True)
    return {"status": STALLED, "report": None, "decision": None, "stalled": watch.describe()}
