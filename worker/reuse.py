"""Taking an earlier answer when a job is claimed (`submit --reuse`): the decision is made in
the worker, after the claim, from SQL alone, so it is safe under concurrent runs and after Redis
loss (a job's message may be redelivered or rebuilt by `resume`; the claim still decides once)."""

from __future__ import annotations

import logging
import random
from functools import lru_cache
from typing import Any

from shared.calls import request_key
from shared.config import get_settings
from shared.db import session_scope
from shared.models import Job, Run
from shared.providers import ChatRequest
from shared.reuse import backend_simulated, find_earlier_answer, older_twin, reuse_settings
from shared.scoring import score
from shared import fleet
from shared import lifecycle as jobs
from worker import judge
from worker.paid_call import services

log = logging.getLogger("genesis.reuse")

TWIN_WAIT_S = 2.0
MAX_TWIN_WAITS = 60  # then pay rather than wait on a twin that makes no progress (~2 minutes)


@lru_cache(maxsize=256)
def _run_reuse(run_id: str) -> tuple[bool, float]:
    """(enabled, max_age_days) of a run: fixed at submit (its config snapshot), so read once per
    process rather than once per job."""
    with session_scope() as session:
        return reuse_settings(session.get(Run, run_id))


_simulated: dict[tuple[str, str], bool] = {}  # (run, backend) -> learnt once answered, read once


def _backend_simulated(session: Any, run_id: str, backend: str) -> bool | None:
    """Whether this backend's answers are the simulator's, from its newest answer in SQL."""
    if (run_id, backend) not in _simulated:
        found = backend_simulated(session, backend)
        if found is None:
            return None
        _simulated[(run_id, backend)] = found
    return _simulated[(run_id, backend)]


def take_earlier_answer(task: Any, job: jobs.ClaimedJob, suite_task: Any, request: ChatRequest) -> str | None:
    """The job's status when it took an earlier answer (no call, $0), else None: make the call.
    While an older identical request of a live run is queued or being paid for, wait for it."""
    enabled, max_age_days = _run_reuse(job.run_id)
    if not enabled:
        return None
    with session_scope() as session:
        recorded = session.get(Job, job.id)
        key = request_key(job.provider, request, recorded.epoch)
        if key != recorded.request_key:  # the config changed since submit: call
            log.info("job %s: request differs from the one recorded at submit; not reused", job.id)
            return None

        def earlier_answer():
            # Which kind of answer this backend gives (simulated or not) is known once it answered.
            simulated = _backend_simulated(session, job.run_id, job.backend)
            if simulated is None:
                return None
            return find_earlier_answer(session, key, max_age_days=max_age_days, simulated=simulated,
                                       exclude_job_id=job.id)

        earlier = earlier_answer()
        if earlier is None:
            lease_s = jobs.lease_seconds(get_settings())
            now = fleet.redis_now(services().redis)  # the clock the twin's started_at was written on
            if task.request.retries < MAX_TWIN_WAITS and older_twin(session, key, job.id, lease_s, now) is not None:
                wait = True
            else:  # the twin may have finished between the two reads (READ COMMITTED): look once more
                wait, earlier = False, earlier_answer()
    if earlier is None:
        if wait:
            raise task.hand_back(job, TWIN_WAIT_S + random.uniform(0, 0.5), uncount=True)  # no call: not an attempt
        return None
    log.info("job %s: reusing the answer of job %s (run %s)", job.id, earlier.job_id, earlier.run_id)
    if suite_task.scorer.local:
        result = score(suite_task, earlier.output)  # scored again by the current scorer
        jobs.finish_reused(job, earlier, score=result.score, detail=result.detail, final=True)
        return "ok"
    jobs.finish_reused(job, earlier, score=None, detail="awaiting the judge", final=False)
    return judge.grade(task, job, suite_task, earlier.output)
