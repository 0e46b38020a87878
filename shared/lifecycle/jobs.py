"""Every Job state transition: short, conditional UPDATEs, so that any number of workers,
redeliveries, sweeps and producers agree on who runs a job, record it once, and never overwrite
a final outcome (a cancel always wins, an `ok` is never undone).

Leases are judged on one clock: callers pass `now` read from Redis (`shared.fleet.redis_now`),
never a host's own clock. No transaction here is held open across a provider call (design §8).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import bindparam, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from shared.db import get_engine, session_scope
from shared.lifecycle.rules import UNFINISHED_JOBS, in_flight_run_ids, running_claimed_before, stale_running
from shared.models import CostEntry, Job, JobStatus, Run, RunStatus, utcnow
from shared.payments import Ledgered, PaidResult, cost_row, write_cost_row

_JOBS, _RUNS = Job.__table__, Run.__table__

# The clock of every timestamp written here. Workers set it to the Redis clock (use_clock), the
# one leases are judged on, so a job's started_at and finished_at are on one timeline.
_clock: Callable[[], datetime] = utcnow


def use_clock(clock: Callable[[], datetime]) -> None:
    global _clock
    _clock = clock


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
    # The process incarnation that claimed it (shared.fleet.incarnation): with `attempts`, what
    # every later transition of this claim checks (`_HELD`). "" (a journal entry written before
    # this field existed) holds nothing.
    holder: str = ""


class Claim:
    """Outcome of trying to take a job."""

    TAKEN = "taken"
    BUSY = "busy"  # another delivery is running it now
    DONE = "done"  # already final, halted, or its run was cancelled


# Statements built once: building and hashing a statement costs more CPU than SQLite takes to
# run it (~0.4 ms against ~0.05 ms here); the values are bound per call.
_TAKE = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"))
    .where(or_(_JOBS.c.status == JobStatus.queued, running_claimed_before(bindparam("stale_before"))))
    .where(_JOBS.c.run_id.in_(select(_RUNS.c.id).where(_RUNS.c.status != RunStatus.cancelled)))
    .values(status=JobStatus.running, started_at=bindparam("now"), worker=bindparam("worker"),
            holder=bindparam("holder"), attempts=_JOBS.c.attempts + 1,
            provider_batch_id=None,  # a resumed job's old batch no longer holds it
            paid_call=None, paid_call_usd=None)  # this claim has made no call yet
    .returning(_JOBS.c.id, _JOBS.c.run_id, _JOBS.c.agent, _JOBS.c.task_id, _JOBS.c.backend, _JOBS.c.provider,
               _JOBS.c.model, _JOBS.c.attempts,
               select(_RUNS.c.suite).where(_RUNS.c.id == _JOBS.c.run_id).scalar_subquery().label("suite"),
               _JOBS.c.holder)
)
# conditional, so a concurrent cancel still wins
_RUN_STARTS = (update(_RUNS).where(_RUNS.c.id == bindparam("run_id"), _RUNS.c.status == RunStatus.queued)
               .values(status=RunStatus.running))


def claim(job_id: int, worker: str, now: datetime, lease_s: float,
          holder: str | None = None) -> tuple[str, ClaimedJob | Job | None]:
    """Take a queued job (or one whose runner died: running past its lease, by `stale_running`'s
    rule), counting the attempt; a delivery that then makes no call gives it back with
    `requeue(uncount=True)`. `worker` is the node name (for people), `holder` the process
    incarnation that holds the lease (default: the node name). The usual case (taken) is one
    transaction of two statements."""
    with get_engine().begin() as conn:
        taken = conn.execute(_TAKE, {"job_id": job_id, "stale_before": now - timedelta(seconds=lease_s),
                                     "now": now, "worker": worker, "holder": holder or worker}).one_or_none()
        if taken is not None:
            conn.execute(_RUN_STARTS, {"run_id": taken.run_id})
            return Claim.TAKEN, ClaimedJob(**taken._asdict())
    with session_scope() as session:  # not taken: say why (a duplicate delivery, or nothing to do)
        job = session.get(Job, job_id)
        if job is None:
            return Claim.DONE, None
        run = session.get(Run, job.run_id)
        busy = job.status == JobStatus.running and run.status != RunStatus.cancelled
        return (Claim.BUSY if busy else Claim.DONE), job


# The one holder check (design §12), the claim bound per call (`_holder`): the claim that took
# the job still holds it, i.e. it is running under the same runner and attempt. A transition
# from a claim that no longer holds it (the sweep handed the job back, another delivery took it)
# matches no row: it changes nothing.
_HELD = ((_JOBS.c.id == bindparam("held_id")) & (_JOBS.c.status == JobStatus.running)
         & (_JOBS.c.holder == bindparam("held_holder")) & (_JOBS.c.attempts == bindparam("held_attempts")))
_RECORD_HELD = update(_JOBS).where(_HELD)
_RECORD_UNFINISHED = update(_JOBS).where(_JOBS.c.id == bindparam("held_id"), _JOBS.c.status.in_(UNFINISHED_JOBS))


def _holder(job: ClaimedJob) -> dict:
    return {"held_id": job.id, "held_holder": job.holder, "held_attempts": job.attempts}


def _update_held(job: ClaimedJob, **values) -> bool:
    """Change a job this claim holds; False (nothing changed) when it no longer holds it."""
    with get_engine().begin() as conn:
        return conn.execute(update(_JOBS).where(_HELD).values(**values), _holder(job)).rowcount == 1


def renew_lease(job: ClaimedJob, now: datetime, paid_call: str | None = None,
                paid_call_usd: float | None = None) -> bool:
    """Before each paid call of a job: its lease starts again (a job of two calls is never taken
    from a live runner) and the call it reserves next is recorded (`<call key>#<call id>`, its
    worst case), for a budget rebuilt after Redis loss. False when this claim no longer holds the
    job (another delivery took it past its lease, or it is final): make no call."""
    return _update_held(job, started_at=now, paid_call=paid_call, paid_call_usd=paid_call_usd)


def requeue(job: ClaimedJob, *, error_type: str | None = None, error_message: str | None = None,
            uncount: bool = False) -> bool:
    """Hand the job back (a retry is scheduled), keeping the last error for `status`."""
    values: dict = {"status": JobStatus.queued, "error_type": error_type, "error_message": error_message}
    if uncount:
        values["attempts"] = _JOBS.c.attempts - 1
    return _update_held(job, **values)


def finish_error(job: ClaimedJob, error_type: str, error_message: str) -> bool:
    """Only a running job can fail, and only at its holder's hand: an `ok` result, or another
    delivery's run of the job, is never overwritten."""
    return _update_held(job, status=JobStatus.error, error_type=error_type, error_message=error_message,
                        finished_at=_clock())


def finish_halted(job: ClaimedJob, reason: str) -> bool:
    """Skipped by the budget guard after this delivery claimed it (no call: not an attempt)."""
    return _update_held(job, status=JobStatus.halted, error_type="BudgetHalt", error_message=reason,
                        attempts=_JOBS.c.attempts - 1, finished_at=_clock())


def finish_ok(job: ClaimedJob, result: PaidResult, *, final: bool = True, call_id: str | None = None) -> Ledgered:
    """Store the result and its ledger entry in one transaction; false (nothing written) when the
    ledger already has this job's answer (a redelivery) or the job is final. `final=False` keeps
    the job running: its answer waits for its judge (finish_judged). An answer that outlived its
    claim (its node judged dead while alive) is still kept by a job not yet final (`ok`, or the
    answer alone for a judged task), so the job is not paid for again; a delivery running it
    meanwhile finds the answer recorded. Its call's `outcome unknown` row becomes this one."""
    now = _clock()
    answer = {"output": result.output, "score": result.score, "scorer_detail": result.detail,
              "latency_ms": result.latency_ms, "input_tokens": result.input_tokens,
              "output_tokens": result.output_tokens, "cost_usd": result.cost_usd, "error_type": None,
              "error_message": None, "finished_at": now, "simulated": result.simulated,
              "reasoning_tokens": result.reasoning_tokens, "truncated": result.truncated, "key_env": result.key_env}
    status = {"status": JobStatus.ok if final else JobStatus.running}
    return _record_paid(job, answer, status, final, {
        "at": now, "run_id": job.run_id, "job_id": job.id, "agent": job.agent, "backend": job.backend,
        "model": job.model, "operation": "inference", "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens, "reasoning_tokens": result.reasoning_tokens,
        "cost_usd": result.cost_usd, "source": result.source, "call_id": call_id, "key_env": result.key_env,
    })


def _record_paid(job: ClaimedJob, values: dict, status: dict, final: bool, cost: dict) -> Ledgered:
    """A paid result and its ledger row, in one transaction: by the claim that holds the job,
    else (the claim outlived) into a job not yet final, where `final` results move it to `ok`
    and others change no status."""
    try:
        with get_engine().begin() as conn:
            taken = conn.execute(_RECORD_HELD, {**_holder(job), **values, **status}).rowcount
            if not taken:
                kept = {**values, **(status if final else {})}
                taken = conn.execute(_RECORD_UNFINISHED, {"held_id": job.id, **kept}).rowcount
            if not taken:
                raise _NotTaken
            return Ledgered(True, write_cost_row(conn, cost)[1])
    except (IntegrityError, _NotTaken):
        return Ledgered(False)


class _NotTaken(Exception):
    """The job is final: the paid result is not its (the transaction rolls back)."""


RUN_CANCELLED = "RunCancelled"


def end_unjudged_in_cancelled_run(job_id: int) -> bool:
    """A paid answer replayed from the journal into a run cancelled meanwhile, still waiting
    for its judge: no judge is paid (a cancel stops spending) and the job is not handed back (no
    delivery takes a job of a cancelled run: it would sit `queued` for ever). It ends `error`,
    saying so, with its answer and cost kept, so `producer resume` only pays for its judge.
    False when the run is not cancelled: the job waits for its judge as usual."""
    cancelled = select(_RUNS.c.id).where(_RUNS.c.status == RunStatus.cancelled)
    with get_engine().begin() as conn:
        return conn.execute(
            update(_JOBS).where(_JOBS.c.id == job_id, _JOBS.c.status == JobStatus.running,
                                _JOBS.c.run_id.in_(cancelled))
            .values(status=JobStatus.error, error_type=RUN_CANCELLED, finished_at=_clock(),
                    error_message="the run was cancelled before its judge graded this answer (answer and cost kept)")
        ).rowcount == 1


def recorded_answer(job_id: int) -> str | None:
    """The answer an earlier delivery recorded for a job still waiting for its judge."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job.output if job is not None and job.status == JobStatus.running else None


def finish_reused(job: ClaimedJob, source: Any, *, score: float | None, detail: str, final: bool) -> None:
    """Take an earlier job's answer (shared.reuse): no call, no ledger entry, $0, and the
    source named; `final=False` leaves it running for its judge, like finish_ok."""
    _update_held(
        job, status=JobStatus.ok if final else JobStatus.running, output=source.output, score=score,
        scorer_detail=detail, latency_ms=source.latency_ms, input_tokens=source.input_tokens,
        output_tokens=source.output_tokens, cost_usd=0.0, reused_from_job_id=source.job_id,
        reused_from_run_id=source.run_id, simulated=source.simulated, error_type=None, error_message=None,
        finished_at=_clock() if final else None,
    )


def finish_judged(job: ClaimedJob, entry: CostEntry, *, score: float, detail: str) -> Ledgered:
    """The judge's grade and its ledger entry (operation `judge`) in one transaction; False
    when this job's judge call is already ledgered (a redelivery) or the job is final: nothing
    is written twice. Kept like `finish_ok`'s answer when it outlived its claim."""
    grade = {"score": score, "scorer_detail": detail, "error_type": None, "error_message": None,
             "finished_at": _clock()}
    return _record_paid(job, grade, {"status": JobStatus.ok}, True, cost_row(entry))


def running_holders() -> set[str]:
    """The incarnations that SQL says are running a job of a run in flight (what the sweep checks)."""
    with session_scope() as session:
        rows = session.exec(
            select(Job.holder).distinct()
            .where(Job.status == JobStatus.running, Job.run_id.in_(in_flight_run_ids()))
        ).all()
    return {w for w in rows if w}


def requeue_lost(now: datetime, lease_s: float, dead_holders: set[str],
                 keep: set[int]) -> list[tuple[str, int, str, str]]:
    """Running jobs whose holder is gone (its incarnation's heartbeat stopped) or whose lease passed go
    back to `queued`; `keep` (jobs whose paid answer waits in the journal) stay. Returns
    (run_id, job_id, provider, backend) of every job handed back."""
    lost = stale_running(now, lease_s)
    if dead_holders:
        lost = lost | ((Job.status == JobStatus.running) & col(Job.holder).in_(sorted(dead_holders))
                       & col(Job.provider_batch_id).is_(None))
    with session_scope() as session:
        rows = session.exec(
            select(Job.run_id, Job.id, Job.provider, Job.backend).where(lost, Job.run_id.in_(in_flight_run_ids()))
        ).all()
        handed_back = []
        for run_id, job_id, provider, backend in rows:
            if job_id in keep:
                continue
            changed = session.execute(
                update(Job).where(Job.id == job_id).where(lost).values(status=JobStatus.queued)
            ).rowcount
            if changed:
                handed_back.append((run_id, job_id, provider, backend))
        return handed_back


def queued_jobs(run_id: str) -> list[tuple[int, str, str]]:
    """(job_id, provider, backend) of the run's queued jobs: what shared.messaging.publish_jobs takes."""
    with session_scope() as session:
        rows = session.exec(
            select(Job.id, Job.provider, Job.backend)
            .where(Job.run_id == run_id, Job.status == JobStatus.queued).order_by(Job.id)
        ).all()
    return [tuple(row) for row in rows]
