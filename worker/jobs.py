"""A job's life in SQL: short, conditional UPDATEs so that any number of workers (and any
number of redeliveries of the same message) agree on who runs a job and record it once.

No transaction here is held open across a provider call (design §8)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from shared.db import get_engine, session_scope
from shared.models import CostEntry, Job, JobStatus, Run, RunStatus, utcnow


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    run_id: str
    agent: str
    task_id: str
    backend: str
    provider: str
    model: str
    attempts: int
    suite: str


class Claim:
    """Outcome of trying to take a job."""

    TAKEN = "taken"
    BUSY = "busy"  # another delivery is running it now
    DONE = "done"  # already final, halted, or its run was cancelled


def claim(job_id: int, worker: str, lease_s: float) -> tuple[str, ClaimedJob | Job | None]:
    """Take a queued job (or one whose runner died: running past its lease), counting the
    attempt; a delivery that then makes no call gives it back with `requeue(uncount=True)`.

    The usual case (taken) is one transaction of three Core statements: the conditional
    UPDATE returns the job's fields, the run's suite is read, the run marked running."""
    now = utcnow()
    jobs, runs = Job.__table__, Run.__table__
    with get_engine().begin() as conn:
        taken = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .where(
                or_(
                    jobs.c.status == JobStatus.queued,
                    (jobs.c.status == JobStatus.running) & (jobs.c.started_at < now - timedelta(seconds=lease_s)),
                )
            )
            .where(jobs.c.run_id.in_(select(runs.c.id).where(runs.c.status != RunStatus.cancelled)))
            .values(status=JobStatus.running, started_at=now, worker=worker, attempts=jobs.c.attempts + 1)
            .returning(jobs.c.id, jobs.c.run_id, jobs.c.agent, jobs.c.task_id, jobs.c.backend, jobs.c.provider,
                       jobs.c.model, jobs.c.attempts)
        ).one_or_none()
        if taken is not None:
            suite = conn.execute(select(runs.c.suite).where(runs.c.id == taken.run_id)).scalar_one()
            # conditional, so a concurrent cancel still wins
            conn.execute(update(runs).where(runs.c.id == taken.run_id, runs.c.status == RunStatus.queued)
                         .values(status=RunStatus.running))
            return Claim.TAKEN, ClaimedJob(**taken._asdict(), suite=suite)
    with session_scope() as session:  # not taken: say why (a duplicate delivery, or nothing to do)
        job = session.get(Job, job_id)
        if job is None:
            return Claim.DONE, None
        run = session.get(Run, job.run_id)
        busy = job.status == JobStatus.running and run.status != RunStatus.cancelled
        return (Claim.BUSY if busy else Claim.DONE), job


def _update_running(job_id: int, **values) -> None:
    """Change a job this delivery is running; a job no longer running (finished by another
    delivery, or `ok`) is left as it is."""
    jobs = Job.__table__
    with get_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.running).values(**values))


def requeue(job_id: int, *, error_type: str | None = None, error_message: str | None = None,
            uncount: bool = False) -> None:
    """Hand the job back (a retry is scheduled), keeping the last error for `status`."""
    values: dict = {"status": JobStatus.queued, "error_type": error_type, "error_message": error_message}
    if uncount:
        values["attempts"] = Job.__table__.c.attempts - 1
    _update_running(job_id, **values)


def finish_error(job_id: int, error_type: str, error_message: str) -> None:
    """Only a running job can fail: an `ok` result is never overwritten."""
    _update_running(job_id, status=JobStatus.error, error_type=error_type, error_message=error_message,
                    finished_at=utcnow())


def finish_halted(job_id: int, reason: str) -> None:
    """Skipped by the budget guard after this delivery claimed it (no call: not an attempt)."""
    _update_running(job_id, status=JobStatus.halted, error_type="BudgetHalt", error_message=reason,
                    attempts=Job.__table__.c.attempts - 1, finished_at=utcnow())


def finish_ok(job: ClaimedJob, *, output: str, score: float, detail: str, latency_ms: float,
              input_tokens: int, output_tokens: int, cost_usd: float) -> bool:
    """Store the result and its ledger entry in one transaction. Returns False when the
    ledger already had this job (a redelivery): nothing is written twice."""
    now = utcnow()
    try:
        with get_engine().begin() as conn:
            conn.execute(insert(CostEntry.__table__).values(
                at=now, run_id=job.run_id, job_id=job.id, agent=job.agent, backend=job.backend, model=job.model,
                operation="inference", input_tokens=input_tokens, output_tokens=output_tokens,
                cost_usd=cost_usd, source="api",
            ))
            jobs = Job.__table__
            conn.execute(
                update(jobs).where(jobs.c.id == job.id).values(
                    status=JobStatus.ok, output=output, score=score, scorer_detail=detail,
                    latency_ms=latency_ms, input_tokens=input_tokens, output_tokens=output_tokens,
                    cost_usd=cost_usd, error_type=None, error_message=None, finished_at=now,
                )
            )
        return True
    except IntegrityError:
        return False
