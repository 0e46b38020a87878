"""Backend mode "batch" (design §11): a job's `run_job` enrols it into an open provider batch
in SQL instead of calling; these tasks do the rest, on the `batches` queue (a budget halt
stops the provider queues, not this one: a halt's cancels and the results of cancelled
batches must still be read and ledgered).

- `flush_batch(batch_id)`: sent when a batch opens (with a countdown of its max wait) and when
  it fills; submits it when full or due: every job's worst case reserved at the batch price,
  then one submission through the provider's SDK, then the first poll.
- `poll_batch(batch_id, token)`: polls with backoff, re-sending itself (no beat); when the
  batch ends, writes every job's result (worker/batch_results.py) and runs the completion step.
  Its result names the batch at its provider and what the provider said ("openai batch_…
  (batch 12, 40 jobs): in_progress"): Flower's task list, filtered on it, shows the open batches.
- `cancel_batches()`: sent by a budget halt; cancels every submitted batch at its provider.
- `resume_batches` (called by the recovery sweep): batches whose flush or poll message was
  lost (a dead worker, Redis losing everything) get a new one, from their SQL rows."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from shared import batches as sql
from shared import fleet
from shared import lifecycle as jobs
from shared.budget import BudgetRefused, task_worst_case
from shared.calls import job_request
from shared.config import get_settings
from shared.messaging import BATCHES_QUEUE, CANCEL_BATCHES, FLUSH_BATCH, POLL_BATCH, app
from shared.models import BatchState
from shared.providers import PROVIDERS, ProviderError
from shared.providers.batch_api import BATCH_APIS, ENDED, EXPIRED, RUNNING, UNREADABLE
from shared.providers.batch_names import CLOCK_SLACK, CreateUnanswered, LostSubmission, OurBatch, Undecided
from shared.providers.clients import client_for
from shared.retry import backoff_delay
from worker import batch_results
from worker.base import GenesisTask, genesis_task, suite_task_of
from worker.completion import complete_run_of
from worker.halt import halt_on_refusal
from worker.paid_call import DATABASE_AWAY, services

log = logging.getLogger("genesis.batches")

BUDGET_WAIT_S = 2.0  # a batch whose worst case waits for calls in flight to settle tries again after this
OPEN_TRIES, OPEN_LOCK_MS = 50, 2000  # enrolments wait up to ~1 s for another to open the batch
# A results file with unreadable lines is read this many times (a download cut short reads whole
# the next time); then those requests are taken as billed and lost (worker/batch_results.py).
UNREADABLE_READS = 3


def enrol(job: jobs.ClaimedJob) -> str:
    """run_job's whole work for a batch backend's job: recorded in SQL first, then the flush is
    scheduled (when this job opened the batch) or sent now (when it filled it)."""
    settings, client_redis = get_settings(), services().redis
    max_jobs, max_wait_s = settings.batch_limits(job.backend)
    lock = f"genesis:batch-opening:{job.backend}:{job.model}"
    enrolled = None
    for _ in range(OPEN_TRIES):  # one opener at a time, so jobs arriving together share a batch
        opener = bool(client_redis.set(lock, "1", nx=True, px=OPEN_LOCK_MS))
        try:
            enrolled = sql.enrol(job.id, job.provider, job.backend, job.model, fleet.redis_now(client_redis),
                                 max_jobs, max_wait_s, may_open=opener)
        finally:
            if opener:
                client_redis.delete(lock)
        if enrolled is not None:
            break
        time.sleep(0.02)
    if enrolled is None:  # the opener is slow or gone: open one anyway (two small batches at worst)
        enrolled = sql.enrol(job.id, job.provider, job.backend, job.model, fleet.redis_now(client_redis),
                             max_jobs, max_wait_s)
    if enrolled.full:
        flush_batch.apply_async((enrolled.batch_id,), queue=BATCHES_QUEUE)
    elif enrolled.new:
        flush_batch.apply_async((enrolled.batch_id,), countdown=max_wait_s, queue=BATCHES_QUEUE)
    return "batched"


@genesis_task(FLUSH_BATCH)
def flush_batch(self: GenesisTask, batch_id: int) -> str:
    try:
        return _flush(batch_id)
    except DATABASE_AWAY:
        raise self.retry(countdown=get_settings().recovery.claim_retry_max_s)


def _flush(batch_id: int) -> str:
    settings, svc = get_settings(), services()
    now = fleet.redis_now(svc.redis)
    batch = sql.get(batch_id)
    if batch is None or batch.state != BatchState.open:
        return batch.state if batch else "missing"
    max_jobs, _ = settings.batch_limits(batch.backend)
    if batch.job_count < max_jobs and batch.due_at > now:
        flush_batch.apply_async((batch_id,), countdown=(batch.due_at - now).total_seconds(), queue=BATCHES_QUEUE)
        return "not due"
    if not sql.take_for_submit(batch_id, now):
        return "taken"
    waiting = sql.jobs_of(batch_id)
    if not waiting:
        sql.finish(batch_id, BatchState.ended, now)
        return "empty"
    lines, amounts, ours = [], [], OurBatch(sql.deployment_id(), batch_id)
    for job in waiting:
        suite_task = suite_task_of(job)
        lines.append((ours.custom_id(job.id), job_request(settings, job.backend, job.model, suite_task)))
        amounts.append((job.id, task_worst_case(settings, suite_task, job.backend, job.model)))
    money = batch_results.BatchMoney(svc.budget, batch_id)
    fit, reserved, denied = money.reserve_in_order(amounts, waiting[0].run_id)
    halted = isinstance(denied, BudgetRefused) and halt_on_refusal(
        app, svc.budget, waiting[fit], denied, "batch submission") is not None  # None: a resume made room
    if denied is not None and not halted and not fit:  # room held by calls in flight: send it when they settle
        sql.reopen(batch_id, now)
        flush_batch.apply_async((batch_id,), countdown=BUDGET_WAIT_S, queue=BATCHES_QUEUE)
        svc.budget.maybe_reconcile()
        return "waiting for budget"
    if denied is not None and not halted:  # the rest wait for room in a later batch
        batch_results.requeue(batch_id, waiting[fit:])
    elif halted:  # the settled spend leaves no room: the refused job is halted, and so is the rest
        for job in waiting[fit + 1:]:
            jobs.finish_halted(job, f"batch submission: {denied}")
    if not fit:
        sql.finish(batch_id, BatchState.halted, now, error=str(denied)[:500])
        _complete_runs(batch_id)
        return "halted"
    waiting, lines = waiting[:fit], lines[:fit]
    try:
        provider_id = BATCH_APIS[batch.provider].submit(_client(settings, batch), batch.model, lines, ours.metadata)
    except CreateUnanswered as err:  # the provider may hold (and bill) it: looked up, never sent again blindly
        return _create_unanswered(batch_id, err)
    except ProviderError as err:  # certainly not created: free to send again
        money.release([job.id for job in waiting])
        return _submission_failed(batch, waiting, err, now)
    token = sql.mark_submitted(batch_id, provider_id, reserved, len(waiting), now)
    log.info("batch %s: %d jobs submitted as %s %s ($%.6f reserved)", batch_id, len(waiting), batch.provider,
             provider_id, reserved)
    poll_batch.apply_async((batch_id, token), countdown=settings.batch.poll_min_s, queue=BATCHES_QUEUE)
    return f"submitted as {_named(batch, provider_id, len(waiting))}"


def _create_unanswered(batch_id: int, err: CreateUnanswered) -> str:
    """The create's reply was lost: the jobs stay in the batch, `submitting`, their worst cases
    reserved. The provider is asked now; when it does not show the batch (yet), the recovery
    sweep asks again and adopts it, or sends it anew only once the provider says it has none."""
    sql.note_unanswered(batch_id, f"{err}; looked up at the provider before anything is sent again"[:500])
    log.warning("batch %s: %s; looking it up at its provider", batch_id, err)
    batch = sql.get(batch_id)
    if batch is not None and _adopt_or_reopen(batch, fleet.redis_now(services().redis), may_reopen=False):
        return f"create unanswered; adopted as {batch.provider} {sql.get(batch_id).provider_batch_id}"
    return "create unanswered; left to the sweep's lookup"


def _submission_failed(batch, waiting: list[jobs.ClaimedJob], err: ProviderError, now) -> str:
    settings = get_settings()
    detail = f"batch submission failed ({err.kind}{f' {err.status}' if err.status else ''}): {err}"[:500]
    attempts = batch.attempts + 1
    if err.retryable and attempts < settings.batch.max_attempts:
        delay = backoff_delay(attempts - 1, retry_after=None, base=settings.retry.backoff_base_s,
                              cap=settings.retry.backoff_max_s)
        sql.reopen(batch.id, now + timedelta(seconds=delay), error=detail)
        flush_batch.apply_async((batch.id,), countdown=delay, queue=BATCHES_QUEUE)
        log.warning("batch %s: %s; submitting again in %.1fs", batch.id, detail, delay)
        return "retrying"
    for job in waiting:
        jobs.finish_error(job, err.error_type, detail)
    sql.finish(batch.id, BatchState.failed, now, errored=len(waiting), error=detail)
    _complete_runs(batch.id)
    return "failed"


@genesis_task(POLL_BATCH)
def poll_batch(self: GenesisTask, batch_id: int, token: str) -> str:
    try:
        return _poll(batch_id, token)
    except (ProviderError, *DATABASE_AWAY) as exc:  # the batch is still at the provider: poll again
        log.warning("batch %s: poll failed (%s); polling again", batch_id, exc)
        _poll_later(batch_id, token, 0)
        return "poll failed"


def _poll(batch_id: int, token: str) -> str:
    settings, svc = get_settings(), services()
    batch = sql.get(batch_id)
    if batch is None or batch.state != BatchState.submitted or batch.poll_token != token:
        return "not mine"  # ended, or another chain took over
    api, cli = BATCH_APIS[batch.provider], _client(settings, batch)
    if not batch.cancel_requested and svc.budget.is_halted():
        _cancel(batch)
        batch = sql.get(batch_id)
    polled = api.poll(cli, batch.provider_batch_id)
    now = fleet.redis_now(svc.redis)
    if not sql.polled(batch_id, token, now, polled.status):
        return "not mine"
    if polled.phase == RUNNING:
        _poll_later(batch_id, token, batch.polls + 1)
        return f"{_named(batch)}: {polled.status}"
    if polled.phase == ENDED:
        results = api.results(cli, batch.provider_batch_id)
        unreadable = sum(1 for result in results if result.kind == UNREADABLE)
        if unreadable and sql.count_unreadable_read(batch_id) < UNREADABLE_READS:
            _poll_later(batch_id, token, batch.polls + 1)
            return f"{_named(batch)}: {unreadable} unreadable result line(s); reading them again"
        counts = batch_results.write_results(batch, results, now, svc.budget)
    else:
        error_type = "BatchExpired" if polled.phase == EXPIRED else "BatchFailed"
        counts = batch_results.end_without_results(batch, error_type, polled.reason or polled.status, svc.budget)
    state = BatchState.cancelled if batch.cancel_requested else (
        BatchState.ended if polled.phase == ENDED else BatchState(polled.phase))
    sql.finish(batch_id, state, now, succeeded=counts.get("succeeded", 0),
               errored=counts.get("errored", 0) + counts.get("unreadable", 0), error=polled.reason)
    log.info("batch %s (%s %s) %s: %s", batch_id, batch.provider, batch.provider_batch_id, state, counts)
    _complete_runs(batch_id)
    return f"{_named(batch)}: {state} {counts}"


def _named(batch, provider_batch_id: str | None = None, jobs: int | None = None) -> str:
    """How a task's result names a batch (what Flower shows of it)."""
    jobs = batch.job_count if jobs is None else jobs
    return f"{batch.provider} {provider_batch_id or batch.provider_batch_id} (batch {batch.id}, {jobs} jobs)"


def _poll_later(batch_id: int, token: str, polls: int) -> None:
    settings = get_settings().batch
    countdown = min(settings.poll_max_s, settings.poll_min_s * 1.5 ** polls)
    poll_batch.apply_async((batch_id, token), countdown=countdown, queue=BATCHES_QUEUE)


@genesis_task(CANCEL_BATCHES)
def cancel_batches(self: GenesisTask) -> int:
    """A budget halt: every submitted batch is cancelled at its provider; its poll chain then
    writes what it answered (paid) and leaves the rest `halted`."""
    cancelled = 0
    for batch in sql.in_states((BatchState.submitted,)):
        if not batch.cancel_requested:
            try:
                _cancel(batch)
                cancelled += 1
            except ProviderError as err:  # its next poll (which sees the halt) tries again
                log.warning("batch %s: cancel failed: %s", batch.id, err)
    return cancelled


def _cancel(batch) -> None:
    BATCH_APIS[batch.provider].cancel(_client(get_settings(), batch),
                                      batch.provider_batch_id)
    sql.request_cancel(batch.id)
    log.warning("batch %s: %s batch %s cancelled (budget halt)", batch.id, batch.provider, batch.provider_batch_id)


def _complete_runs(batch_id: int) -> None:
    """The completion step of every run the batch held jobs of (its last job may be one of them)."""
    for job_id in sql.runs_of(batch_id).values():
        complete_run_of(job_id, " (batch)")


def resume_batches(client_redis, settings) -> int:
    """For the recovery sweep: a batch past its due time still open, or submitted but not polled
    for longer than a live chain ever waits, gets its message again (from SQL). A batch left
    `submitting` (by a dead worker, or a create whose reply was lost) is looked up at its
    provider (shared.providers.batch_api's `find`) and adopted; when the provider has none it
    opens again and is sent anew; when the provider cannot say (yet), the next sweep asks again."""
    now = fleet.redis_now(client_redis)
    grace = timedelta(seconds=2 * settings.recovery.sweep_interval_s + settings.recovery.heartbeat_ttl_s)
    stale = timedelta(seconds=2 * settings.batch.poll_max_s) + grace
    resent = 0
    for batch in sql.in_states((BatchState.open, BatchState.submitting, BatchState.submitted)):
        if batch.state == BatchState.open and batch.due_at < now - grace:
            flush_batch.apply_async((batch.id,), queue=BATCHES_QUEUE)
        elif batch.state == BatchState.submitted and (token := sql.take_over_polling(batch.id, now - stale)):
            poll_batch.apply_async((batch.id, token), queue=BATCHES_QUEUE)
        elif not (batch.state == BatchState.submitting and batch.last_polled_at < now - stale - grace
                  and _adopt_or_reopen(batch, now)):
            continue
        resent += 1
        log.warning("batch %s (%s): its message was lost; sent again from SQL", batch.id, batch.state)
    return resent


def _adopt_or_reopen(batch, now, *, may_reopen: bool = True) -> bool:
    """True when the batch got a message again (a poll of the batch found, or a new flush).
    `may_reopen=False`: only adopt (a submitter asking right after its create's reply was lost:
    a provider that does not list the batch yet may still be making it)."""
    settings = get_settings()
    sent = sql.jobs_of(batch.id)  # what the submitter sent: the jobs it did not send it took out first
    ours = OurBatch(sql.deployment_id(), batch.id)
    lost = LostSubmission(
        metadata=ours.metadata, custom_ids=frozenset(ours.custom_id(job.id) for job in sent),
        started_at=batch.last_polled_at,
        known=sql.provider_ids_since(batch.provider, batch.last_polled_at - CLOCK_SLACK))
    try:
        found = BATCH_APIS[batch.provider].find(_client(settings, batch), lost)
    except (ProviderError, Undecided) as why:
        log.warning("batch %s: its lost submission is not found yet (%s); asking again later", batch.id, why)
        return False
    if found is not None:
        reserved = sum(task_worst_case(settings, suite_task_of(job), job.backend, job.model) for job in sent)
        token = sql.mark_submitted(batch.id, found, reserved, len(sent), now)
        log.warning("batch %s: its lost submission is %s batch %s: adopted", batch.id, batch.provider, found)
        poll_batch.apply_async((batch.id, token), queue=BATCHES_QUEUE)
        return True
    if may_reopen and sql.reopen(batch.id, now):
        flush_batch.apply_async((batch.id,), queue=BATCHES_QUEUE)
        return True
    return False


def _client(settings, batch) -> Any:
    """The SDK client of a batch's backend: its endpoint and its first key variable (a provider
    batch is one submission, polled by its id with the key that made it: no pool choice)."""
    config = settings.backends.get(batch.backend)
    return client_for(PROVIDERS[batch.provider], settings.retry.call_timeout_s, config and config.base_url,
                      settings.batch_key_variable(batch.backend, batch.provider))
