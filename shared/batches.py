"""Provider batches in SQL (design §11): every state change of a `provider_batch` row and of the
jobs it holds, as short conditional UPDATEs, so enrolling workers, the one submitter, pollers
and the recovery sweep agree without locks.

A job in a batch stays `running` with `job.provider_batch_id` set: the batch, not a worker's
lease, answers for it (shared.lifecycle leaves such jobs out of its stale rules) until its
result is written, it goes back to `queued`, or it ends `error` / `halted`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from shared.db import get_engine, session_scope
from shared.lifecycle import ClaimedJob
from shared.models import OPEN_BATCH_STATES, BatchState, Deployment, Job, JobStatus, ProviderBatch, Run, utcnow

_BATCHES, _JOBS, _DEPLOYMENT = ProviderBatch.__table__, Job.__table__, Deployment.__table__
_deployment_ids: dict[str, str] = {}  # database URL -> its deployment id (it never changes)


def deployment_id() -> str:
    """This database's deployment id: made by the first caller (12 hex digits, random), then
    read. What our batches are named by at their providers (shared.providers.batch_names)."""
    engine = get_engine()
    url = engine.url.render_as_string(hide_password=False)
    if url not in _deployment_ids:
        try:
            with engine.begin() as conn:
                conn.execute(insert(_DEPLOYMENT).values(id=1, deployment_id=uuid.uuid4().hex[:12], created_at=utcnow()))
        except IntegrityError:  # made already (by now or long ago)
            pass
        with engine.connect() as conn:
            _deployment_ids[url] = conn.execute(
                select(_DEPLOYMENT.c.deployment_id).where(_DEPLOYMENT.c.id == 1)).scalar_one()
    return _deployment_ids[url]


@dataclass(frozen=True)
class Enrolled:
    batch_id: int
    new: bool  # this job opened the batch: its flush must be scheduled
    full: bool  # the batch reached its max jobs: submit it now


def enrol(job_id: int, provider: str, backend: str, model: str, now: datetime, max_jobs: int,
          max_wait_s: float, *, may_open: bool = True) -> Enrolled | None:
    """Put a running job into the open batch of its (backend, model), or open one (None when
    there is none and `may_open` is False). One transaction: the batch's count and the job's
    link change together, and only while the batch is open, so a batch being submitted never
    takes a job it will not send."""
    with get_engine().begin() as conn:
        for batch_id in conn.execute(
            select(_BATCHES.c.id).where(_BATCHES.c.state == BatchState.open, _BATCHES.c.backend == backend,
                                        _BATCHES.c.model == model).order_by(_BATCHES.c.id)
        ).scalars().all():
            count = conn.execute(
                update(_BATCHES).where(_BATCHES.c.id == batch_id, _BATCHES.c.state == BatchState.open,
                                       _BATCHES.c.job_count < max_jobs)
                .values(job_count=_BATCHES.c.job_count + 1).returning(_BATCHES.c.job_count)
            ).scalar()
            if count is not None:
                _link(conn, job_id, batch_id)
                return Enrolled(batch_id, new=False, full=count >= max_jobs)
        if not may_open:
            return None
        batch_id = conn.execute(insert(_BATCHES).values(
            provider=provider, backend=backend, model=model, state=BatchState.open, job_count=1, succeeded=0,
            errored=0, created_at=now, due_at=now + timedelta(seconds=max_wait_s), polls=0, reserved_usd=0.0,
            attempts=0, cancel_requested=False,
        ).returning(_BATCHES.c.id)).scalar_one()
        _link(conn, job_id, batch_id)
        return Enrolled(batch_id, new=True, full=max_jobs <= 1)


def _link(conn, job_id: int, batch_id: int) -> None:
    conn.execute(update(_JOBS).where(_JOBS.c.id == job_id, _JOBS.c.status == JobStatus.running)
                 .values(provider_batch_id=batch_id, error_type=None, error_message=None))


def get(batch_id: int) -> ProviderBatch | None:
    with session_scope() as session:
        return session.get(ProviderBatch, batch_id)


def _move(batch_id: int, from_states: tuple[str, ...], **values) -> bool:
    """Change a batch only while it is in one of `from_states`; True when this caller did."""
    with get_engine().begin() as conn:
        return conn.execute(update(_BATCHES).where(_BATCHES.c.id == batch_id, _BATCHES.c.state.in_(from_states))
                            .values(**values)).rowcount == 1


def take_for_submit(batch_id: int, now: datetime) -> bool:
    """The one flusher that moves an open batch to `submitting` sends it."""
    return _move(batch_id, (BatchState.open,), state=BatchState.submitting, attempts=_BATCHES.c.attempts + 1,
                 last_polled_at=now)


def reopen(batch_id: int, due_at: datetime, error: str | None = None) -> bool:
    """Not sent this time (the budget asked to wait, the provider failed): open again until due_at."""
    return _move(batch_id, (BatchState.submitting,), state=BatchState.open, due_at=due_at, error=error)


def note_unanswered(batch_id: int, error: str) -> bool:
    """Its create's outcome is unknown: it stays `submitting` (reservations held) until a lookup
    at its provider adopts it or finds none (the recovery sweep's)."""
    return _move(batch_id, (BatchState.submitting,), error=error)


def count_unreadable_read(batch_id: int) -> int:
    """One more read of its results found unreadable lines: how many such reads there were."""
    with get_engine().begin() as conn:
        return conn.execute(update(_BATCHES).where(_BATCHES.c.id == batch_id)
                            .values(result_reads=_BATCHES.c.result_reads + 1)
                            .returning(_BATCHES.c.result_reads)).scalar_one()


def mark_submitted(batch_id: int, provider_batch_id: str, reserved_usd: float, sent: int, now: datetime) -> str:
    """`sent` jobs are at the provider (those the budget left out went back first). Returns the
    poll chain's token."""
    token = uuid.uuid4().hex
    _move(batch_id, (BatchState.submitting,), state=BatchState.submitted, provider_batch_id=provider_batch_id,
          reserved_usd=reserved_usd, job_count=sent, submitted_at=now, last_polled_at=now, poll_token=token,
          error=None)
    return token


def polled(batch_id: int, token: str, now: datetime, provider_status: str) -> bool:
    """Record a poll by the live chain; False when another chain took over (this one stops)."""
    with get_engine().begin() as conn:
        return conn.execute(update(_BATCHES).where(
            _BATCHES.c.id == batch_id, _BATCHES.c.poll_token == token, _BATCHES.c.state == BatchState.submitted,
        ).values(last_polled_at=now, polls=_BATCHES.c.polls + 1, provider_status=provider_status)).rowcount == 1


def request_cancel(batch_id: int) -> bool:
    return _move(batch_id, (BatchState.submitted,), cancel_requested=True)


def finish(batch_id: int, state: str, now: datetime, *, succeeded: int = 0, errored: int = 0,
           error: str | None = None) -> bool:
    return _move(batch_id, OPEN_BATCH_STATES, state=state, finished_at=now, succeeded=succeeded, errored=errored,
                 error=error, poll_token=None)


def jobs_of(batch_id: int) -> list[ClaimedJob]:
    """The batch's jobs still waiting for it (running and linked), as a delivery would hold them."""
    with session_scope() as session:
        rows = session.exec(
            select(Job.id, Job.run_id, Job.agent, Job.task_id, Job.backend, Job.provider, Job.model, Job.attempts,
                   Run.suite, Job.holder)
            .join(Run, col(Run.id) == col(Job.run_id))
            .where(Job.provider_batch_id == batch_id, Job.status == JobStatus.running).order_by(Job.id)
        ).all()
    return [ClaimedJob(*row) for row in rows]


def runs_of(batch_id: int) -> dict[str, int]:
    """One job of each run the batch holds jobs of: {run id: job id}, for the completion check."""
    with session_scope() as session:
        rows = session.exec(select(Job.run_id, Job.id).where(Job.provider_batch_id == batch_id)).all()
    return {run_id: job_id for run_id, job_id in rows}


def leave(job_ids: list[int], batch_id: int, *, error_type: str | None = None,
          error_message: str | None = None) -> list[tuple[str, int, str]]:
    """Jobs of the batch go back to `queued`, unlinked, for another delivery (another batch, or
    the judge of an answer already recorded). Returns (run id, job id, provider, backend) of each moved."""
    if not job_ids:
        return []
    with get_engine().begin() as conn:
        return [tuple(row) for row in conn.execute(
            update(_JOBS).where(col(_JOBS.c.id).in_(job_ids), _JOBS.c.provider_batch_id == batch_id,
                                _JOBS.c.status == JobStatus.running)
            .values(status=JobStatus.queued, provider_batch_id=None, error_type=error_type,
                    error_message=error_message)
            .returning(_JOBS.c.run_id, _JOBS.c.id, _JOBS.c.provider, _JOBS.c.backend)
        ).all()]


def in_states(states: tuple[str, ...]) -> list[ProviderBatch]:
    with session_scope() as session:
        return list(session.exec(select(ProviderBatch).where(col(ProviderBatch.state).in_(states))
                                 .order_by(col(ProviderBatch.id))).all())


def provider_ids_since(provider: str, since: datetime) -> frozenset[str]:
    """The provider's batch ids our batches submitted since `since` hold: never taken for a lost one."""
    with session_scope() as session:
        return frozenset(session.exec(select(ProviderBatch.provider_batch_id).where(
            ProviderBatch.provider == provider, col(ProviderBatch.provider_batch_id).is_not(None),
            col(ProviderBatch.submitted_at) >= since)).all())


def take_over_polling(batch_id: int, stale_before: datetime) -> str | None:
    """A submitted batch nobody polled since `stale_before` (its poll message was lost with a
    worker or with Redis) gets a new chain; the old one, should it come back, finds its token
    replaced and stops. Returns the new token, or None when the batch was polled meanwhile."""
    token = uuid.uuid4().hex
    with get_engine().begin() as conn:
        changed = conn.execute(update(_BATCHES).where(
            _BATCHES.c.id == batch_id, _BATCHES.c.state == BatchState.submitted,
            (_BATCHES.c.last_polled_at < stale_before) | (_BATCHES.c.last_polled_at.is_(None)),
        ).values(poll_token=token, last_polled_at=stale_before)).rowcount
    return token if changed else None


def run_batches(session: Session, run_id: str) -> list[dict]:
    """The batches that hold or held a run's jobs: what `status` shows (enrolled in an open
    batch, submitted, done) with the provider's batch id and when it was last polled (in the
    caller's session: one read)."""
    columns = (ProviderBatch.id, ProviderBatch.backend, ProviderBatch.state, ProviderBatch.provider_batch_id,
               ProviderBatch.provider_status, ProviderBatch.last_polled_at)
    rows = session.exec(
        select(*columns, Job.status, func.count())
        .join(Job, col(Job.provider_batch_id) == col(ProviderBatch.id))
        .where(Job.run_id == run_id)
        .group_by(*columns, Job.status)
        .order_by(col(ProviderBatch.id))
    ).all()
    found: dict[int, dict] = {}
    for batch_id, backend, state, provider_id, provider_status, polled_at, job_status, n in rows:
        entry = found.setdefault(batch_id, {"batch": batch_id, "backend": backend, "state": state,
                                            "provider_batch_id": provider_id, "provider_status": provider_status,
                                            "polled_at": polled_at, "jobs": {}})
        entry["jobs"][job_status] = n
    return list(found.values())


def polled_lately(batches: list[dict], now: datetime, within_s: float) -> int:
    """Jobs waiting in submitted batches that a poll chain asked about within `within_s`: a run
    whose jobs wait at their provider like this is waiting, not stalled."""
    return sum(batch["jobs"].get(JobStatus.running, 0) for batch in batches
               if batch["state"] == BatchState.submitted and batch["polled_at"] is not None
               and (now - batch["polled_at"]).total_seconds() <= within_s)


def batched_by_backend(batches: list[dict]) -> dict[str, dict[str, int]]:
    """backend → its batched jobs: `enrolled` (in a batch not yet sent), `submitted` (at the
    provider), `done` (final, answered or not)."""
    found: dict[str, dict[str, int]] = {}
    for batch in batches:
        row = found.setdefault(batch["backend"], {"enrolled": 0, "submitted": 0, "done": 0})
        waiting = batch["jobs"].get(JobStatus.running, 0)
        row["submitted" if batch["state"] == BatchState.submitted else "enrolled"] += waiting
        row["done"] += sum(n for status, n in batch["jobs"].items() if status != JobStatus.running)
    return found


def open_batch_counts(database_url: str | None = None) -> dict[tuple[str, str], int]:
    """(provider, state) → batches not yet ended, for the metrics."""
    with session_scope(database_url) as session:
        rows = session.exec(select(ProviderBatch.provider, ProviderBatch.state, func.count())
                            .where(col(ProviderBatch.state).in_(OPEN_BATCH_STATES))
                            .group_by(ProviderBatch.provider, ProviderBatch.state)).all()
    return {(provider, state): n for provider, state, n in rows}
