"""What every genesis task shares, in one place that imports no task module: the task base
class and decorator (the conventions), a job's suite task, and local scoring that never loses a
paid answer. worker/tasks.py, worker/batches.py and worker/batch_results.py build on it."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry

from shared import lifecycle as jobs
from shared.messaging import app
from shared.scoring import ScoreResult, score
from shared.suite import load_task, run_suite_folder

log = logging.getLogger("genesis.worker")

# A suite's files are looked at again (for changes) at most this often per worker process.
SUITE_RECHECK_S = 1.0


class GenesisTask(Task):
    """Conventions for every genesis task: retried only through explicit `self.retry` (attempts
    are counted in SQL, not here). Late acknowledgement is the app's (shared.messaging)."""

    max_retries = None
    typing = True

    def hand_back(self, job: jobs.ClaimedJob, countdown: float, **requeue_values) -> Retry:
        """Give a claimed job back for a later delivery; the caller raises what this returns.
        The retry is published before the job is handed back in SQL: if publishing fails, the
        job is still this delivery's (it ends `error`), never `queued` without a message."""
        retry = self.retry(countdown=countdown, throw=False)
        if not jobs.requeue(job, **requeue_values):  # that message will find the job busy or done
            log.info("job %s: no longer held by this delivery; not handed back", job.id)
        return retry


def genesis_task(name: str, **options):
    return app.task(name=name, base=GenesisTask, bind=True, **options)


def suite_task_of(job: Any) -> Any:
    """The suite task a job answers (one line read, cached; design §1: the worker loads it)."""
    return load_task(run_suite_folder(job.suite), job.agent, job.task_id, max_age_s=SUITE_RECHECK_S)


def score_answer(suite_task: Any, text: str) -> ScoreResult:
    """A local scorer's grade; a `judge` task's waits for its judge (worker/judge.py)."""
    if not suite_task.scorer.local:
        return ScoreResult(None, "awaiting the judge")  # type: ignore[arg-type]
    try:
        return score(suite_task, text)
    except Exception as exc:  # noqa: BLE001 - a scorer bug must not lose a paid answer
        log.exception("scoring failed")
        return ScoreResult(0.0, f"scorer failed: {type(exc).__name__}: {exc}")
