"""A run's lifecycle beyond its jobs: its final status and its published report. Used by the
chord callback and by the producer (`report`, `cancel`), so both say the same thing."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import select

from shared.config import get_settings
from shared.db import session_scope
from shared.models import Job, JobStatus, Run, RunStatus, utcnow
from shared.report import PublishedReport, generate_report


def job_counts(run_id: str) -> dict[str, int]:
    with session_scope() as session:
        rows = session.exec(
            select(Job.status, func.count()).where(Job.run_id == run_id).group_by(Job.status)
        ).all()
    return {status: n for status, n in rows}


def settle_run_status(run_id: str) -> str:
    """completed when every job is final; halted when the budget guard skipped some; a
    cancelled run stays cancelled. Conditional UPDATEs, so a concurrent cancel always wins."""
    counts = job_counts(run_id)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise KeyError(f"unknown run {run_id!r}")
        not_cancelled = (Run.id == run_id) & (Run.status != RunStatus.cancelled)
        if counts.get(JobStatus.halted):
            session.execute(update(Run).where(not_cancelled).values(status=RunStatus.halted))
        elif not any(counts.get(s) for s in (JobStatus.queued, JobStatus.running)):
            session.execute(
                update(Run)
                .where(not_cancelled, Run.status != RunStatus.completed)
                # report_path cleared until the final report is written (`--wait` watches it)
                .values(status=RunStatus.completed, finished_at=utcnow(), report_path=None)
            )
        session.refresh(run)
        return run.status


def publish_report(run_id: str, *, partial: bool = False) -> PublishedReport:
    """(Re)build the report from SQL, store its content in SQL, write this host's files and
    record where they are. Returns the data, so callers never re-read report.json."""
    status = settle_run_status(run_id)
    # An earlier chord of a resumed run can finish while the newer one still works: partial.
    partial = partial or status in (RunStatus.queued, RunStatus.running)
    published = generate_report(run_id, reports_dir=get_settings().reports_dir, partial=partial)
    with session_scope() as session:
        run = session.get(Run, run_id)
        run.report_path = str(published.paths["md"])
    return published
