"""A sequential run's look transitions (issue #28, design §13): release the next look of the
agents whose verdict is open, mark the unreleased jobs of settled agents `not_needed`. The
claim is a conditional UPDATE of the run's current look (k -> k + 1, or k -> k when the run
stops), in the same transaction as the job changes, so duplicate look steps, `resume` and the
recovery sweep all end the same way: each look is released once."""

from __future__ import annotations

from sqlalchemy import exists, select, update

from shared.db import get_engine
from shared.lifecycle.rules import IN_FLIGHT_RUNS, UNFINISHED_JOBS
from shared.looks import full_references
from shared.models import Job, JobStatus, Run

_JOBS, _RUNS = Job.__table__, Run.__table__


def has_waiting(run_id: str) -> bool:
    """Whether the run holds jobs not yet released (one indexed EXISTS)."""
    with get_engine().connect() as conn:
        return bool(conn.execute(select(exists().where(_JOBS.c.run_id == run_id,
                                                       _JOBS.c.status == JobStatus.waiting))).scalar())


def unfinished(run_id: str) -> bool:
    """Whether any job of the run is queued or running (its report waits for the last)."""
    with get_engine().connect() as conn:
        return bool(conn.execute(select(exists().where(_JOBS.c.run_id == run_id,
                                                       _JOBS.c.status.in_(UNFINISHED_JOBS)))).scalar())


def look_done(run_id: str) -> bool:
    """A sequential run whose current look's comparison jobs are all final while jobs still wait
    and only kept references run: its look step is due (worker/completion.py)."""
    look, status, busy, _ = look_state(run_id)
    return look is not None and status in IN_FLIGHT_RUNS and not busy and has_waiting(run_id)


def look_state(run_id: str) -> tuple[int | None, str | None, bool, bool]:
    """(the run's current look, its status, any released job of a comparison backend unfinished,
    any halted): what the look step reads before judging. Reference backends kept to the end
    ([decision] references = "full") hold up no look, only the run's end (`unfinished`)."""
    with get_engine().connect() as conn:
        row = conn.execute(select(_RUNS.c.look, _RUNS.c.status, _RUNS.c.config).where(_RUNS.c.id == run_id)).one_or_none()
        if row is None:
            return None, None, False, False
        kept = full_references(row.config or {})
        busy = conn.execute(select(exists().where(_JOBS.c.run_id == run_id, _JOBS.c.status.in_(UNFINISHED_JOBS),
                                                  _JOBS.c.backend.not_in(kept)))).scalar()
        halted = conn.execute(select(exists().where(_JOBS.c.run_id == run_id,
                                                    _JOBS.c.status == JobStatus.halted))).scalar()
        return row.look, row.status, bool(busy), bool(halted)


def advance_look(run_id: str, look: int, release: list[str], settled: list[str]) -> bool:
    """From look `look`: the waiting jobs of `settled` agents become not_needed, those of the
    `release` agents at look + 1 become queued, and the run moves to look + 1; or, with nothing
    to release, the run stays at `look` and every waiting job becomes not_needed (the run
    stops). One transaction; the conditional UPDATE of run.look is the claim: False when
    another caller advanced it first, the run is not in flight (halted, cancelled), or it
    moved on. Publishing the released jobs is the caller's (record first, then enqueue)."""
    stop = not release
    with get_engine().begin() as conn:
        claimed = conn.execute(
            update(_RUNS).where(_RUNS.c.id == run_id, _RUNS.c.look == look, _RUNS.c.status.in_(IN_FLIGHT_RUNS))
            .values(look=look if stop else look + 1)
        ).rowcount
        if not claimed:
            return False
        waiting = (_JOBS.c.run_id == run_id) & (_JOBS.c.status == JobStatus.waiting)
        if stop:
            conn.execute(update(_JOBS).where(waiting).values(status=JobStatus.not_needed))
            return True
        if settled:
            conn.execute(update(_JOBS).where(waiting, _JOBS.c.agent.in_(settled)).values(status=JobStatus.not_needed))
        conn.execute(update(_JOBS).where(waiting, _JOBS.c.agent.in_(release), _JOBS.c.look == look + 1)
                     .values(status=JobStatus.queued))
        return True
