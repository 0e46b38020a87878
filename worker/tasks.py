"""The two tasks: `run_job` (its paid call, through worker/paid_call.py, scored and recorded;
then its judge's, worker/judge.py) and `build_report` (sent by the run's last job,
worker/completion.py). Both take IDs only; everything else is loaded from SQL and config."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from celery.exceptions import Retry

from shared import fleet, journal
from shared import lifecycle as jobs
from shared.budget import task_worst_case
from shared.calls import job_request
from shared.config import get_settings
from shared.payments import PaidResult, Payment
from shared.providers import ChatResponse, scrub_secrets
from shared.tokens import estimate_prompt_tokens
from worker import judge, reuse
from shared.messaging import BUILD_REPORT, RUN_JOB
from worker.base import GenesisTask, genesis_task, score_answer, suite_task_of
from worker.paid_call import DATABASE_AWAY, PaidCall, Recording, pay, services

log = logging.getLogger("genesis.worker")

BUSY_RECHECK_S = 5.0

@dataclass
class Delivery:
    """What this delivery of a job message holds, so a failure touches only its own state:
    another delivery of the same job may own the row. (Its paid call's holds are the paid
    call's own: worker/paid_call.py gives them back on every way out.)"""

    job_id: int
    job: jobs.ClaimedJob | None = None  # set once claimed: this delivery may write the outcome

    def fail(self, exc: Exception) -> str:
        """Record an unexpected failure. Never raises: the run must complete (design §1)."""
        if self.job is None:
            return "skipped"
        try:
            jobs.finish_error(self.job, type(exc).__name__, scrub_secrets(str(exc))[:500])
        except Exception:  # noqa: BLE001 - best effort; the job stays resumable from SQL
            log.exception("job %s: recording the failure failed", self.job_id)
        return "error"


@genesis_task(RUN_JOB)
def run_job(self: GenesisTask, job_id: int, db_retries: int = 0) -> dict:
    """Never raises for a terminal outcome, so the run always completes (design §1).
    `db_retries` counts only deliveries the database turned away (rate-limit waits and
    provider retries are counted elsewhere), for the backoff; there is no cap: the message
    stays alive until the database answers."""
    delivery = Delivery(job_id)
    try:
        status = _run_job(self, delivery)
    except Retry:
        raise
    except DATABASE_AWAY as exc:  # a paid answer is journaled before this (worker/paid_call.py)
        delay = min(2.0 ** db_retries, get_settings().recovery.claim_retry_max_s)
        log.warning("job %s: database not answering (%s); trying again in %.0fs", job_id,
                    type(getattr(exc, "orig", None) or exc).__name__, delay)
        raise self.retry(countdown=delay, kwargs={"db_retries": db_retries + 1})
    except Exception as exc:  # noqa: BLE001 - a bug: recorded, not raised
        log.exception("job %s failed unexpectedly", job_id)
        status = delivery.fail(exc)
    return {"job_id": job_id, "status": status}


def _run_job(task: GenesisTask, delivery: Delivery) -> str:
    settings = get_settings()
    svc = services()
    node = task.request.hostname or "local"
    outcome, job = jobs.claim(delivery.job_id, node, fleet.redis_now(svc.redis), jobs.lease_seconds(settings),
                              holder=fleet.incarnation(node))  # this process holds it: design §12
    if outcome == jobs.Claim.BUSY:  # a duplicate delivery: wait for the runner to finish it
        if getattr(job, "provider_batch_id", None) is not None:
            return "batched"  # its provider batch answers for it (worker/batches.py)
        raise task.retry(countdown=BUSY_RECHECK_S)
    if outcome == jobs.Claim.DONE:
        return job.status if job else "missing"
    delivery.job = job

    suite_task = suite_task_of(job)
    if job.id in journal.pending_job_ids(svc.redis):  # paid for already, the database was away: never again
        if not journal.replay(svc.redis, svc.budget.settle, job_id=job.id).needs_judge:
            return "ok"
    if not suite_task.scorer.local and (answer := jobs.recorded_answer(job.id)) is not None:
        return judge.grade(task, job, suite_task, answer)  # paid for already: only the judge again
    request = job_request(settings, job.backend, job.model, suite_task)
    if (reused := reuse.take_earlier_answer(task, job, suite_task, request)) is not None:
        return reused
    if settings.is_batch(job.backend):  # recorded into a provider batch; no call here
        from worker.batches import enrol

        return enrol(job)

    paid = pay(task, PaidCall(
        job=job, operation="inference", provider=job.provider, model=job.model, request=request,
        limits=settings.limit_scope(job.backend, job.provider),  # a backend's own endpoint has its own
        pools=settings.key_pools(job.backend),
        worst_case_usd=task_worst_case(settings, suite_task, job.backend, job.model),
        tokens=estimate_prompt_tokens(suite_task.prompt, suite_task.system) + request.max_tokens,
        result=lambda response, payment: _answer(suite_task, response, payment),
    ))
    if paid.status == "ok" and not suite_task.scorer.local:
        return judge.grade(task, job, suite_task, paid.response.text)
    return paid.status


def _answer(suite_task, response: ChatResponse, payment: Payment) -> Recording:
    """The job's answer, scored here (a local scorer) or left for its judge (`final` False)."""
    scored = score_answer(suite_task, response.text)  # a cut-off answer is scored as it stands
    detail = f"{scored.detail} (cut off by its output allowance)" if response.truncated else scored.detail
    result = PaidResult(output=response.text, score=scored.score, detail=detail,
                        latency_ms=response.latency_ms, input_tokens=payment.input_tokens,
                        output_tokens=payment.output_tokens, cost_usd=payment.cost_usd, source=payment.source,
                        simulated=response.simulated, reasoning_tokens=payment.reasoning_tokens,
                        truncated=response.truncated, key_env=payment.key_env)
    return Recording("answer", {"result": asdict(result), "final": suite_task.scorer.local})


@genesis_task(BUILD_REPORT, autoretry_for=(Exception,), retry_backoff=2,
              retry_backoff_max=60, max_retries=8)
def build_report(self: GenesisTask, results: list | None = None, run_id: str = "") -> str:
    """The run's completion step: reads SQL only (`results` is kept for messages sent by older
    producers as a chord body). The report code (numpy and all, ~20 MB) is imported here, so a
    worker that does not consume `reports` never loads it; one that does loads it at start
    (worker/app.py)."""
    from shared.runs import publish_report

    return str(publish_report(run_id).paths["md"])
