"""The two tasks: `run_job` (one paid call, scored and recorded) and `build_report` (sent by
the run's last job, worker/completion.py). Both take IDs only; everything else is loaded from
SQL and config."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, replace
from functools import lru_cache

import redis
from celery import Task
from celery.exceptions import Retry
from sqlalchemy import exc as sql_errors

from shared import counters, fleet, journal
from shared import lifecycle as jobs
from shared.budget import (
    USAGE_ESTIMATED,
    BudgetGuard,
    BudgetRefused,
    BudgetWait,
    call_cost,
    estimated_usage,
    max_output_tokens,
    task_worst_case,
)
from shared.calls import job_request
from shared.config import get_settings
from shared.limiter import Permit, RateLimiter
from shared.models import CostEntry
from shared.providers import ChatResponse, ProviderError, complete, scrub_secrets
from shared.retry import backoff_delay, retry_after_from_headers
from shared.scoring import ScoreResult, score
from shared.lifecycle import PaidResult
from shared.suite import load_task, run_suite_folder
from shared.tokens import estimate_prompt_tokens
from worker import judge, reuse
from worker.app import app
from worker.halt import halt_on_refusal

log = logging.getLogger("genesis.worker")

# A job that must wait this long or less for rate-limit capacity waits in its slot;
# longer waits go back to the broker with a countdown so other providers' jobs keep flowing.
MAX_INLINE_WAIT_S = 2.0
BUSY_RECHECK_S = 5.0
# A job whose reservation must wait for calls in flight to settle comes back after this long
# plus as much again at random: the jitter spreads the pollers, so none is always last.
BUDGET_WAIT_S = 0.5
# A suite's files are looked at again (for changes) at most this often per worker process.
SUITE_RECHECK_S = 1.0


class GenesisTask(Task):
    """Conventions for every genesis task: acknowledged late, redelivered if the worker dies,
    retried only through explicit `self.retry` (attempts are counted in SQL, not here)."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None
    typing = True

    def hand_back(self, job_id: int, countdown: float, **requeue_values) -> Retry:
        """Give a claimed job back for a later delivery; the caller raises what this returns.
        The retry is published before the job is handed back in SQL: if publishing fails, the
        job is still this delivery's (it ends `error`), never `queued` without a message."""
        retry = self.retry(countdown=countdown, throw=False)
        jobs.requeue(job_id, **requeue_values)
        return retry


def genesis_task(name: str, **options):
    return app.task(name=name, base=GenesisTask, bind=True, **options)


@dataclass(frozen=True)
class Services:
    redis: redis.Redis
    limiter: RateLimiter
    budget: BudgetGuard


@lru_cache(maxsize=None)
def _services(pid: int) -> Services:  # keyed by pid: a forked child builds its own connections
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    return Services(redis=client, limiter=RateLimiter(client, settings), budget=BudgetGuard(client, settings))


def services() -> Services:
    return _services(os.getpid())


@dataclass
class Delivery:
    """What this delivery of a job message holds, so a failure cleans up only its own state:
    another delivery of the same job may own the row and the reservation."""

    job_id: int
    job: jobs.ClaimedJob | None = None  # set once claimed: this delivery may write the outcome
    reserved: bool = False  # holds the job's budget reservation
    permit: Permit | None = None  # holds a rate-limiter slot
    paid: ChatResponse | None = None  # the provider answered (and billed) this
    paid_usd: float = 0.0

    def release_holds(self) -> None:
        """Give back the limiter slot and the budget reservation (no paid answer is pending)."""
        svc = services()
        steps = []
        if self.permit is not None:
            steps.append(lambda: svc.limiter.release(self.permit))
        if self.reserved:
            steps.append(lambda: svc.budget.release(self.job_id))
        _each_best_effort(self.job_id, steps)
        self.permit, self.reserved = None, False

    def fail(self, exc: Exception) -> str:
        """Record an unexpected failure. Never raises: the run must complete (design §1)."""
        if self.job is None:
            return "skipped"
        if self.paid is not None:  # billed but its result not stored: still in the ledger, once
            _each_best_effort(self.job_id, [
                lambda: record_unattached_payment(self.job, self.paid, self.paid_usd, "result not stored")])
        self.release_holds()
        _each_best_effort(self.job_id, [
            lambda: jobs.finish_error(self.job_id, type(exc).__name__, scrub_secrets(str(exc))[:500])])
        return "error"


def _each_best_effort(job_id: int, steps) -> None:
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - best effort; the job stays resumable from SQL
            log.exception("job %s: cleanup after failure failed", job_id)


def record_unattached_payment(job: jobs.ClaimedJob, response: ChatResponse, cost: float, why: str) -> None:
    """A paid call that is not (or no longer) the job's recorded result still costs money."""
    log.warning("job %s: $%.6f paid but %s; ledgered without a job link", job.id, cost, why)
    services().budget.record_entry(CostEntry(
        run_id=job.run_id, agent=job.agent, backend=job.backend, model=job.model, operation="inference",
        input_tokens=response.input_tokens, output_tokens=response.output_tokens, cost_usd=cost,
        source=f"api ({why})",
    ))


# What a database that is down, locked or out of connections raises through SQLAlchemy.
DATABASE_AWAY = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError,
                 sql_errors.DisconnectionError)


@genesis_task("genesis.run_job")
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
    except DATABASE_AWAY as exc:
        if delivery.paid is not None:  # cannot happen past _record (it journals); kept as a guard
            return {"job_id": job_id, "status": delivery.fail(exc)}
        delivery.release_holds()
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
    outcome, job = jobs.claim(delivery.job_id, task.request.hostname or "local", fleet.redis_now(svc.redis),
                              jobs.lease_seconds(settings))
    if outcome == jobs.Claim.BUSY:  # a duplicate delivery: wait for the runner to finish it
        if getattr(job, "provider_batch_id", None) is not None:
            return "batched"  # its provider batch answers for it (worker/batches.py)
        raise task.retry(countdown=BUSY_RECHECK_S)
    if outcome == jobs.Claim.DONE:
        return job.status if job else "missing"
    delivery.job = job

    suite_task = load_task(run_suite_folder(job.suite), job.agent, job.task_id, max_age_s=SUITE_RECHECK_S)
    max_tokens = max_output_tokens(settings, job.backend, suite_task.max_tokens)
    est_input = estimate_prompt_tokens(suite_task.prompt, suite_task.system)
    if not suite_task.scorer.local and (answer := jobs.recorded_answer(job.id)) is not None:
        return judge.grade(task, job, suite_task, answer, svc)  # paid for already: only the judge again
    request = job_request(settings, job.backend, job.model, suite_task)
    if (reused := reuse.take_earlier_answer(task, job, suite_task, request, svc)) is not None:
        return reused
    if settings.is_batch(job.backend):  # recorded into a provider batch; no call here
        from worker.batches import enrol

        return enrol(job)

    try:
        svc.budget.reserve(job.id, task_worst_case(settings, suite_task, job.backend, job.model), run_id=job.run_id)
    except BudgetWait:  # room held by calls in flight: no call, not an attempt, no halt
        retry = task.hand_back(job.id, BUDGET_WAIT_S + random.uniform(0, BUDGET_WAIT_S), uncount=True)
        _best_effort(svc.budget.maybe_reconcile)  # a dead worker's reservation must not hold it forever
        raise retry
    except BudgetRefused as refused:
        return halt_on_refusal(app, svc.budget, job, refused)
    delivery.reserved = True

    permit = _acquire(svc.limiter, job.provider, job.model, est_input + max_tokens)
    delivery.permit = permit if isinstance(permit, Permit) else None
    if not isinstance(permit, Permit):
        svc.budget.release(job.id)
        raise task.hand_back(job.id, permit + random.uniform(0, 0.25), uncount=True)  # no call: not an attempt

    try:
        response = complete(job.provider, request, on_late=lambda late: _ledger_late_answer(job, late))
    except ProviderError as err:
        delivery.permit = None
        _best_effort(svc.limiter.release, permit)
        svc.budget.release(job.id)
        delivery.reserved = False
        return _handle_failure(task, job, err, job.attempts)

    # Paid from here on: record it before anything else can fail.
    delivery.permit = None
    response, source = _with_usage(suite_task, response)
    _best_effort(svc.limiter.release, permit, response.input_tokens + response.output_tokens)
    cost = call_cost(settings, job.model, response.input_tokens, response.output_tokens)
    delivery.paid, delivery.paid_usd = response, cost
    status = _record(delivery, response, _score(suite_task, response.text), cost, source,
                     final=suite_task.scorer.local)
    _best_effort(svc.limiter.observe, job.provider, job.model, response.headers)
    if status == "ok" and not suite_task.scorer.local:
        return judge.grade(task, job, suite_task, response.text, svc)
    return status


def _record(delivery: Delivery, response: ChatResponse, scored: ScoreResult, cost: float, source: str, *,
            final: bool) -> str:
    """A paid answer reaches the ledger exactly once: in SQL now, or through the journal once the
    database is back (the job then stays `running` and the sweep leaves it alone). `final=False`:
    the answer waits for its judge (worker/judge.py)."""
    svc, job = services(), delivery.job
    result = PaidResult(output=response.text, score=scored.score, detail=scored.detail,
                        latency_ms=response.latency_ms, input_tokens=response.input_tokens,
                        output_tokens=response.output_tokens, cost_usd=cost, source=source)
    try:
        recorded = jobs.finish_ok(job, result, final=final)
    except DATABASE_AWAY as exc:
        journal.write(svc.redis, job, result)
        delivery.paid = None
        log.warning("job %s: database not answering (%s): $%.6f answer journaled for replay", job.id,
                    type(exc).__name__, cost)
        svc.budget.settle(job.id, cost)
        delivery.reserved = False
        return "journaled"
    delivery.paid = None
    if recorded:
        svc.budget.settle(job.id, cost)
    else:  # another delivery's result is the job's: this second call is still a real cost
        svc.budget.release(job.id)
        record_unattached_payment(job, response, cost, "duplicate call for an already recorded job")
    delivery.reserved = False
    return "ok" if recorded else "duplicate"


def _ledger_late_answer(job: jobs.ClaimedJob, response: ChatResponse) -> None:
    """An answer that arrived after the call's deadline (the job was already retried or failed)
    was still billed."""
    cost = call_cost(get_settings(), job.model, response.input_tokens, response.output_tokens)
    _each_best_effort(job.id, [lambda: record_unattached_payment(job, response, cost, "answered after its deadline")])


def _with_usage(suite_task, response: ChatResponse) -> tuple[ChatResponse, str]:
    """A response without usage is still billed: its tokens estimated from its text, flagged."""
    if response.usage_reported:
        return response, "api"
    input_tokens, output_tokens = estimated_usage(suite_task, response.text)
    return replace(response, input_tokens=input_tokens, output_tokens=output_tokens), USAGE_ESTIMATED


def _score(suite_task, text: str) -> ScoreResult:
    if not suite_task.scorer.local:
        return ScoreResult(None, "awaiting the judge")  # type: ignore[arg-type]  # graded by worker.judge
    try:
        return score(suite_task, text)
    except Exception as exc:  # noqa: BLE001 - a scorer bug must not lose a paid answer
        log.exception("scoring failed")
        return ScoreResult(0.0, f"scorer failed: {type(exc).__name__}: {exc}")


def _best_effort(call, *args) -> None:
    """Bookkeeping (limiter pacing, budget reconciliation): losing it never costs a job."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        log.warning("%s failed", getattr(call, "__name__", "bookkeeping"), exc_info=True)


def _acquire(limiter: RateLimiter, provider: str, model: str, tokens: int) -> Permit | float:
    """Wait briefly in the slot for capacity; return the remaining wait if it is longer."""
    deadline = time.monotonic() + MAX_INLINE_WAIT_S
    while True:
        granted = limiter.acquire(provider, model, tokens)
        if isinstance(granted, Permit):
            return granted
        if time.monotonic() + granted > deadline:
            return granted
        time.sleep(granted + random.uniform(0, 0.05))


def _handle_failure(task: GenesisTask, job: jobs.ClaimedJob, err: ProviderError, attempt: int) -> str:
    settings = get_settings()
    retry_after = retry_after_from_headers(err.headers) if err.headers else None
    if err.kind == "rate_limit":
        services().limiter.block(job.provider, job.model, retry_after or settings.retry.backoff_base_s)
    counters.count_failure(services().budget.redis, job.provider, err.kind, err.status)
    detail = f"{err.kind}{f' {err.status}' if err.status else ''}: {err}"
    if err.retryable and attempt < settings.retry.max_attempts:
        delay = backoff_delay(
            attempt - 1, retry_after=retry_after, base=settings.retry.backoff_base_s, cap=settings.retry.backoff_max_s
        )
        log.info("job %s attempt %s failed (%s); retrying in %.1fs", job.id, attempt, detail, delay)
        raise task.hand_back(job.id, delay, error_type=err.error_type, error_message=detail)
    reason = f"after {attempt} attempt(s): {detail}" if err.retryable else detail
    log.warning("job %s failed for good: %s", job.id, reason)
    jobs.finish_error(job.id, err.error_type, reason)
    return "error"


@genesis_task("genesis.build_report", queue="reports", autoretry_for=(Exception,), retry_backoff=2,
              retry_backoff_max=60, max_retries=8)
def build_report(self: GenesisTask, results: list | None = None, run_id: str = "") -> str:
    """The run's completion step: reads SQL only (`results` is kept for messages sent by older
    producers as a chord body). The report code (numpy and all, ~20 MB) is imported here, so a
    worker that does not consume `reports` never loads it; one that does loads it at start
    (worker/app.py)."""
    from shared.runs import publish_report

    return str(publish_report(run_id).paths["md"])
