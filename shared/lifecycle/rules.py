"""The shared rules of both levels: which run and job statuses are unfinished, how long a lease
holds, and when a running job counts as stale. The job and run transitions (jobs.py, runs.py)
both judge by these; kept apart so neither imports the other."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, select

from shared.models import Job, JobStatus, Run, RunStatus

IN_FLIGHT_RUNS = (RunStatus.queued, RunStatus.running)
UNFINISHED_JOBS = (JobStatus.queued, JobStatus.running)
LEASE_MARGIN_S = 30.0  # claim, budget, limiter and the SQL write around a call's deadline


def lease_seconds(settings) -> float:
    """How long a claim holds a job: a call's total duration is bounded by call_timeout_s, so a
    job running longer than this has a dead or stuck runner."""
    if settings.recovery.lease_s is not None:
        return settings.recovery.lease_s
    return settings.retry.call_timeout_s + LEASE_MARGIN_S


_JOBS = Job.__table__


def running_claimed_before(moment):
    """The one "running but stale" rule: claimed before `moment` (a value or a bound parameter).
    A job waiting in a provider batch is not stale however long it waits: its batch answers for
    it (shared.batches), and the recovery sweep resumes the batch's polling instead."""
    return ((_JOBS.c.status == JobStatus.running) & (_JOBS.c.started_at < moment)
            & _JOBS.c.provider_batch_id.is_(None))


def stale_running(now: datetime, lease_s: float):
    """Claimed longer ago than the lease."""
    return running_claimed_before(now - timedelta(seconds=lease_s))


def in_flight_run_ids():
    """The ids of the runs in flight, as a subquery."""
    return select(Run.id).where(col(Run.status).in_(IN_FLIGHT_RUNS))
