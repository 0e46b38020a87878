"""A run's completion step: `build_report` is sent when the last job of the run becomes final.

This replaces a Celery chord. A chord stores every header task's result in Redis and counts
them (about 1 ms of worker CPU per job here, and ~24 s for a chord of 10,000), and its state
lives only in Redis. Instead, after every `run_job` delivery that did not schedule a retry,
one indexed SQL statement asks whether any job of that run is still queued or running; the
delivery that sees none claims the run's report with a Redis SET NX and sends `build_report`.
SQL stays the truth, so duplicate deliveries, `producer resume` and a Redis that lost
everything all end the same way: the report is built when the last job finishes.

A sequential run (design §13) whose jobs of the current look are all final but that still has
jobs `waiting` for a later look gets its look step instead (worker/looks.py, on the `reports`
queue): it judges every verdict at that look and releases the next one, or stops the run; the
report is requested once nothing waits. Reference backends kept to the end ([decision]
references = "full") hold up no look: a look is done when its comparison jobs are final, the
run when every job is.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, exists, select

from shared.db import get_engine
from shared.lifecycle.looks import has_waiting, look_done
from shared.messaging import RUN_JOB, request_look, request_report
from shared.models import Job, JobStatus

log = logging.getLogger("genesis.worker")

ACTIVE = (JobStatus.queued, JobStatus.running)


_JOBS = Job.__table__
_OTHERS = _JOBS.alias("other")
# Built once (building a statement costs ~10x what SQLite takes to run this one).
_FINISHED_RUN = select(
    _JOBS.c.run_id, _JOBS.c.look,
    ~exists().where(_OTHERS.c.run_id == _JOBS.c.run_id, _OTHERS.c.status.in_(ACTIVE)),
).where(_JOBS.c.id == bindparam("job_id"))


def finished_run(job_id: int) -> str | None:
    """The job's run id when no job of that run is queued or running any more, else None."""
    run_id, _, finished = _finished(job_id)
    return run_id if finished else None


def _finished(job_id: int) -> tuple[str | None, int | None, bool]:
    """(the job's run, its look, whether no job of the run is queued or running), one statement."""
    with get_engine().connect() as conn:
        row = conn.execute(_FINISHED_RUN, {"job_id": job_id}).one_or_none()
    return (row[0], row[1], bool(row[2])) if row is not None else (None, None, False)


def after_run_job(sender=None, args=None, state=None, **_kwargs) -> None:
    """task_postrun handler (connected by worker/app.py): after a run_job delivery that did not
    schedule a retry, the run's report is requested if no job of it is left queued or running."""
    if sender is None or sender.name != RUN_JOB or state == "RETRY" or not args:
        return
    try:
        complete_run_of(int(args[0]))
    except Exception:  # noqa: BLE001 - `producer report` / `resume` can still finish the run
        log.exception("job %s: completion check failed", args[0])


def complete_run_of(job_id: int, how: str = "") -> None:
    """The completion step after a job became final (a run_job delivery, or a batch's results):
    the run's report is requested once no job of it is left queued or running."""
    run_id, look, finished = _finished(job_id)
    if run_id is None:
        return
    if not finished:
        if look is not None and look_done(run_id):  # only references kept to the end still run
            request_look(run_id)
            log.info("run %s: look final%s (references still running), look step requested", run_id, how)
        return
    if has_waiting(run_id):  # a sequential run's look is done: its look step decides what comes next
        request_look(run_id)
        log.info("run %s: look final%s, look step requested", run_id, how)
    elif request_report(run_id):
        log.info("run %s: last job final%s, report requested", run_id, how)
