"""Grading a `judge` task: one more paid call, to the `[judge]` backend, made after the job's
own answer is recorded (so a judge retry never pays for the answer again).

It goes through the same guards as the job's call, by their public methods: the budget guard
reserves its worst case under its own key (`judge:<job id>`) and settles it, or halts; the
global rate limiter paces it; failures retry with backoff within the job's attempts. It is
ledgered with operation `judge` against the job's run, agent and job. A reply that is not a
grade is still a paid call (ledgered without a job link), retried, and in the end stored as an
error saying so, never a silent 0."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery.exceptions import Retry

from shared.budget import BudgetRefused, BudgetWait, call_cost, worst_case_cost
from shared.budget.recorded import call_key
from shared.config import get_settings
from shared.limiter import Permit
from shared.models import CostEntry
from shared.calls import judge_request
from shared.providers import ChatResponse, ProviderError, complete
from shared.retry import backoff_delay, retry_after_from_headers
from shared.scoring.judge import JudgeReplyError, read_judge_reply
from shared.tokens import estimate_prompt_tokens
from shared import lifecycle as jobs
from worker.app import app
from worker.halt import halt_on_refusal

log = logging.getLogger("genesis.judge")

BUDGET_WAIT_S = 2.0  # when the guard answers "wait": other calls' reservations must settle first
UNPARSEABLE = "JudgeUnparseable"


def budget_key(job_id: int) -> str:
    """The judge's reservation and settlement key, apart from the job's own call."""
    return call_key(job_id, "judge")


def grade(task: Any, job: jobs.ClaimedJob, suite_task: Any, answer: str, svc: Any) -> str:
    """Judge a recorded answer and store the grade; returns the job's status (or raises a
    Celery Retry). `svc` holds the worker's limiter and budget guard."""
    settings = get_settings()
    provider, request = judge_request(settings, job.agent, suite_task, answer)
    model = request.model
    tokens = estimate_prompt_tokens(request.prompt, request.system) + request.max_tokens
    key = budget_key(job.id)
    try:
        svc.budget.reserve(key, worst_case_cost(settings, model, tokens - request.max_tokens, request.max_tokens),
                           run_id=job.run_id)
    except BudgetWait:  # room held by calls in flight: wait for them to settle, no call, no halt
        raise task.hand_back(job.id, BUDGET_WAIT_S + random.uniform(0, 0.5), uncount=True)
    except BudgetRefused as refused:
        return halt_on_refusal(app, svc.budget, job, refused, "judge call")
    try:
        permit = svc.limiter.acquire(provider, model, tokens)
    except Exception:
        svc.budget.release(key)
        raise
    if not isinstance(permit, Permit):
        svc.budget.release(key)
        raise task.hand_back(job.id, permit + random.uniform(0, 0.25), uncount=True)  # no call: not an attempt
    try:
        response = complete(provider, request)
    except ProviderError as err:
        _quietly(svc.limiter.release, permit)
        svc.budget.release(key)
        return _call_failed(task, job, err, provider, model, svc)
    except Exception:
        _quietly(svc.limiter.release, permit)
        svc.budget.release(key)
        raise
    _quietly(svc.limiter.release, permit, response.input_tokens + response.output_tokens)
    _quietly(svc.limiter.observe, provider, model, response.headers)
    return _record(task, job, response, call_cost(settings, model, response.input_tokens, response.output_tokens),
                   model, svc)


def _record(task: Any, job: jobs.ClaimedJob, response: ChatResponse, cost: float, model: str, svc: Any) -> str:
    """Paid from here on: the grade and its ledger entry, or (unparseable, duplicate) the cost alone."""
    key = budget_key(job.id)
    recorded = False
    try:
        try:
            result = read_judge_reply(response.text)
        except JudgeReplyError as exc:
            _ledger_unattached(job, response, cost, model, svc, "judge answer unparseable")
            recorded = True
            svc.budget.release(key)
            return _retry_or_fail(task, job, UNPARSEABLE, f"judge answer could not be parsed: {exc}", retryable=True)
        entry = _entry(job, response, cost, model, job_id=job.id, source="api")
        if jobs.finish_judged(job, entry, score=result.score, detail=result.detail):
            recorded = True
            svc.budget.settle(key, cost)
        else:
            svc.budget.release(key)
            _ledger_unattached(job, response, cost, model, svc, "duplicate judge call for an already judged job")
            recorded = True
        return "ok"
    except Retry:  # an unparseable grade going back to the queue: already ledgered and released
        raise
    except Exception:
        if not recorded:  # e.g. the database went away: the judge call still cost money
            _quietly(_ledger_unattached, job, response, cost, model, svc, "judge result not stored")
        _quietly(svc.budget.release, key)
        raise


def _call_failed(task: Any, job: jobs.ClaimedJob, err: ProviderError, provider: str, model: str, svc: Any) -> str:
    retry_after = retry_after_from_headers(err.headers) if err.headers else None
    if err.kind == "rate_limit":
        svc.limiter.block(provider, model, retry_after or get_settings().retry.backoff_base_s)
    detail = f"judge call failed ({err.kind}{f' {err.status}' if err.status else ''}): {err}"
    return _retry_or_fail(task, job, err.error_type, detail, retryable=err.retryable, retry_after=retry_after)


def _retry_or_fail(task: Any, job: jobs.ClaimedJob, error_type: str, detail: str, *, retryable: bool,
                   retry_after: float | None = None) -> str:
    """Within the job's attempts: back to the queue (its answer stays recorded), else an error."""
    retry = get_settings().retry
    if retryable and job.attempts < retry.max_attempts:
        delay = backoff_delay(job.attempts - 1, retry_after=retry_after, base=retry.backoff_base_s,
                              cap=retry.backoff_max_s)
        log.info("job %s: %s; judging again in %.1fs", job.id, detail, delay)
        raise task.hand_back(job.id, delay, error_type=error_type, error_message=detail)
    reason = f"after {job.attempts} attempt(s): {detail}" if retryable else detail
    log.warning("job %s: judge failed for good: %s", job.id, reason)
    jobs.finish_error(job.id, error_type, reason)
    return "error"


def _entry(job: jobs.ClaimedJob, response: ChatResponse, cost: float, model: str, *, job_id: int | None,
           source: str) -> CostEntry:
    return CostEntry(
        run_id=job.run_id, job_id=job_id, agent=job.agent, backend=job.backend, model=model, operation="judge",
        input_tokens=response.input_tokens, output_tokens=response.output_tokens, cost_usd=cost, source=source,
    )


def _ledger_unattached(job: jobs.ClaimedJob, response: ChatResponse, cost: float, model: str, svc: Any,
                       why: str) -> None:
    log.warning("job %s: judge call $%.6f paid but %s; ledgered without a job link", job.id, cost, why)
    svc.budget.record_entry(_entry(job, response, cost, model, job_id=None, source=f"api ({why})"))


def _quietly(call, *args) -> None:
    """Bookkeeping after a paid call: losing it costs accuracy, never the job."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        log.warning("judge bookkeeping failed", exc_info=True)
