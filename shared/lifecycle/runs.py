"""Every Run state transition (settle, halt, cancel, reopen) and the run queries the sweep and
the producer use. Conditional UPDATEs, so a concurrent cancel always wins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import col, select

from shared.db import session_scope
from shared.lifecycle.rules import IN_FLIGHT_RUNS, UNFINISHED_JOBS, stale_running
from shared.models import FINAL_RUN_STATUSES, Job, JobStatus, Run, RunStatus, utcnow


def runs_in_flight() -> list[str]:
    with session_scope() as session:
        return list(session.exec(select(Run.id).where(col(Run.status).in_(IN_FLIGHT_RUNS))).all())


def runs_with_queued_jobs(run_ids: set[str]) -> set[str]:
    """Of `run_ids`, the runs that hold at least one queued job (one query for them all)."""
    if not run_ids:
        return set()
    with session_scope() as session:
        return set(session.exec(select(Job.run_id).distinct().where(
            col(Job.run_id).in_(run_ids), Job.status == JobStatus.queued)).all())


def runs_without_unfinished_jobs() -> list[str]:
    """Runs in flight whose every job is final: only their report (the completion step) is left."""
    with session_scope() as session:
        unfinished = select(Job.run_id).where(col(Job.status).in_(UNFINISHED_JOBS))
        return list(session.exec(
            select(Run.id).where(col(Run.status).in_(IN_FLIGHT_RUNS), col(Run.id).not_in(unfinished))
        ).all())


def job_counts(run_id: str) -> dict[str, int]:
    with session_scope() as session:
        rows = session.exec(
            select(Job.status, func.count()).where(Job.run_id == run_id).group_by(Job.status)
        ).all()
    return {status: n for status, n in rows}


def settle_run_status(run_id: str) -> str:
    """completed when every job is final and none waits for its look; halted when the budget
    guard skipped some; a cancelled run stays cancelled. Conditional UPDATEs, so a concurrent cancel always wins."""
    counts = job_counts(run_id)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise KeyError(f"unknown run {run_id!r}")
        not_cancelled = (Run.id == run_id) & (Run.status != RunStatus.cancelled)
        if counts.get(JobStatus.halted):
            session.execute(update(Run).where(not_cancelled).values(status=RunStatus.halted))
        elif not any(counts.get(s) for s in (*UNFINISHED_JOBS, JobStatus.waiting)):  # waiting: a look to come
            session.execute(
                update(Run)
                .where(not_cancelled, Run.status != RunStatus.completed)
                # report_path cleared until the final report is written (`--wait` watches it)
                .values(status=RunStatus.completed, finished_at=utcnow(), report_path=None)
            )
        session.refresh(run)
        return run.status


def mark_runs_halted(database_url: str | None = None) -> None:
    """Every run in flight waits on the halted queues, not only the one that hit the cap."""
    with session_scope(database_url) as session:
        session.execute(update(Run).where(col(Run.status).in_(IN_FLIGHT_RUNS)).values(status=RunStatus.halted))


class UnknownRun(KeyError):
    pass


class RunAlreadyFinal(ValueError):
    pass


def cancel_run(run_id: str) -> None:
    """Queued jobs stay queued (workers skip them); a finished run cannot be cancelled."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise UnknownRun(run_id)
        changed = session.execute(
            update(Run)
            .where(Run.id == run_id, col(Run.status).not_in(FINAL_RUN_STATUSES))
            .values(status=RunStatus.cancelled, finished_at=utcnow())
        ).rowcount
        if not changed:
            session.refresh(run)
            raise RunAlreadyFinal(run.status)


def reopen_run(run_id: str, now: datetime, lease_s: float) -> list[tuple[int, str, str]]:
    """`producer resume`: every job without a final result (halted, error, or running past its
    lease) goes back to `queued`; returns the jobs to enqueue. A job that is `ok` is never touched,
    nor a sequential run's `waiting` jobs (their look is released by the look step). A cancelled
    run is final (RunAlreadyFinal): its jobs would be queued for workers that skip them."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise UnknownRun(run_id)
        if run.status == RunStatus.cancelled:
            raise RunAlreadyFinal(run.status)
        session.execute(
            update(Job)
            .where(Job.run_id == run_id)
            .where(col(Job.status).in_([JobStatus.halted, JobStatus.error]) | stale_running(now, lease_s))
            .values(status=JobStatus.queued, attempts=0, error_type=None, error_message=None, finished_at=None)
        )
        pending = session.exec(
            select(Job.id, Job.provider, Job.backend)
            .where(Job.run_id == run_id, col(Job.status).in_(UNFINISHED_JOBS))
            .order_by(Job.id)
        ).all()
        waiting = session.exec(select(func.count()).where(Job.run_id == run_id, Job.status == JobStatus.waiting)).one()
        if pending or waiting:  # a sequential run's later looks wait: its look step goes on (worker/looks.py)
            session.execute(update(Run).where(Run.id == run_id, Run.status != RunStatus.cancelled)  # a cancel meanwhile wins
                            .values(status=RunStatus.queued, finished_at=None))
        return [tuple(row) for row in pending]
