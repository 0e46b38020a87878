"""Every paid provider call goes through `pay()`: one guarded path, so no payment is lost or
made twice whatever fails around it (design §7, §10).

    lease renewed → budget reserved (its id kept) → rate-limit permit (brief in-slot wait), on
    the key pool with the most headroom → call within the deadline, with that pool's key →
    ledger (SQL) or journal (Redis, database away) → settle by id

with one retry decision (one BUDGET_WAIT, one failure count, one backoff). What a caller
supplies, as a `PaidCall`:

- what to call: `request`, sent with `complete()` to `provider` (which gives up at the deadline
  with a ProviderError marked `past_deadline` and later hands the call's outcome, answer or
  ProviderError, to `on_late`);
- its worst case (`worst_case_usd`, reserved) and its size for the limiter (`tokens`);
- the ledger entry's identity: the claimed `job` and its `operation` (`inference`, `judge`, ...);
- how to record a result: `result(response, payment)` returns a `Recording`, whose `kind` names
  a recorder in `shared.journal.RECORDERS` (the same function writes it now and replays it from
  the journal), or raises `UnusableReply` (a billed reply that is no result: ledgered, retried).

A new kind of paid call plugs in by building a PaidCall with its own operation and, if its result
is stored differently from an answer or a grade, by registering a recorder under a new kind in
`shared.journal.RECORDERS`: reservation, permit, deadline, late answers, ledger, journal and settle
are all here. (A provider batch is one submission whose answers arrive later in another task, so
worker/batch_results.py uses the same parts one step at a time: the guard's reservation by call
id, the journal's recorders, settle by id.)

The call's description (`PaidCall`, `Recording`), what it holds while it is made and the money
rules that give those back (late answers, billed failures, unattached payments) live in
worker/paid_holds.py; only `pay()` uses them.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import redis
from celery.worker.control import control_command

from shared import counters, fleet, journal
from shared import lifecycle as jobs
from shared.budget import BudgetGuard, BudgetRefused, BudgetWait
from shared.budget.recorded import call_key, reservation_field
from shared.config import get_settings
from shared.messaging import app
from shared.payments import Payment
from shared.limiter import Permit, RateLimiter, Refused
from shared.providers import ChatResponse, ProviderError
from shared.providers.deadline import helper_threads
from shared.providers.errors import refused_setting_line
from shared.retry import BackPressureClock, backoff_delay, is_back_pressure, retry_after_from_headers
from worker.halt import halt_on_refusal
from worker.paid_holds import (  # noqa: F401 - DATABASE_AWAY, Services: the public names callers import from here
    DATABASE_AWAY,
    Holds,
    LateAnswer,
    PaidCall,
    Recording,
    Services,
    best_effort,
    ledger_unattached,
    payment_of,
    unbilled_or_ledgered,
)

log = logging.getLogger("genesis.paid_call")

# A call that must wait this long or less for rate-limit capacity waits in its slot; longer
# waits go back to the broker with a countdown so other providers' jobs keep flowing.
MAX_INLINE_WAIT_S = 2.0
# A reservation that must wait for calls in flight to settle comes back after this long plus as
# much again at random: the jitter spreads the pollers, so none is always last.
BUDGET_WAIT_S = 0.5


class UnusableReply(Exception):
    """A billed reply that is not a result (e.g. an unparseable grade): ledgered without a job
    link, then retried within the job's attempts like a provider failure."""

    def __init__(self, error_type: str, detail: str, why: str) -> None:
        super().__init__(detail)
        self.error_type, self.detail, self.why = error_type, detail, why


@dataclass(frozen=True)
class Outcome:
    """The job's status after the call ("ok", "error", "halted", "journaled", "duplicate",
    "lost": this delivery no longer holds the job), and the answer when one was recorded."""

    status: str
    response: ChatResponse | None = None


# --- the worker's connections ------------------------------------------------------------------


@lru_cache(maxsize=None)
def _services(pid: int) -> Services:  # keyed by pid: a forked child builds its own connections
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    jobs.use_clock(lambda: fleet.redis_now(client))  # finished_at on the clock started_at and leases use
    return Services(redis=client, limiter=RateLimiter(client, settings), budget=BudgetGuard(client, settings),
                    back_pressure=BackPressureClock(client, settings.retry.rate_limited_max_s))


def services() -> Services:
    return _services(os.getpid())


@control_command()
def genesis_call_threads(state: Any, **_: Any) -> dict:
    """How many call helper threads this worker has: serving, and abandoned past a deadline."""
    return helper_threads()


# --- the one path ------------------------------------------------------------------------------


def pay(task: Any, spec: PaidCall) -> Outcome:
    """Make `spec`'s call under every guard; returns its Outcome, or raises the Celery Retry
    that gives the job back (budget wait, rate-limit wait, a retryable failure)."""
    svc, job = services(), spec.job
    holder = fleet.incarnation(task.request.hostname or "local")  # this process, as the claim named it
    key, call_id = call_key(job.id, spec.operation), uuid.uuid4().hex
    if not jobs.renew_lease(job, fleet.redis_now(svc.redis), reservation_field(key, call_id),
                            spec.worst_case_usd):  # in SQL before Redis: a budget rebuild restores it
        log.warning("job %s: no longer held by this delivery; %s not made", job.id, spec.what)
        return Outcome("lost")
    try:
        svc.budget.reserve(key, spec.worst_case_usd, run_id=job.run_id, call_id=call_id,
                           holder=f"{holder}|{spec.model}")
    except BudgetWait:  # room held by calls in flight: no call, not an attempt, no halt
        retry = task.hand_back(job, BUDGET_WAIT_S + random.uniform(0, BUDGET_WAIT_S), uncount=True)
        best_effort(svc.budget.maybe_reconcile)  # a dead worker's reservation must not hold it forever
        raise retry
    except BudgetRefused as refused:
        status = halt_on_refusal(app, svc.budget, job, refused, spec.what)
        if status is None:  # a `budget resume` made room since the refusal: try again, nothing halted
            raise task.hand_back(job, BUDGET_WAIT_S, uncount=True)
        return Outcome(status)

    held = Holds(svc, key, call_id)
    try:
        permit = _acquire(svc.limiter, spec, job.run_id)
        if isinstance(permit, Refused):  # every key of the backend refused (401/403) this run: no call
            held.release()
            log.warning("job %s failed for good: %s", job.id, permit.reason)
            jobs.finish_error(job, permit.error_type, permit.reason)
            return Outcome("error")
        if not isinstance(permit, Permit):
            held.release()
            raise task.hand_back(job, permit + random.uniform(0, 0.25), uncount=True)  # no call: not an attempt
        held.permit, held.key_env = permit, permit.key_env
        if permit.key_env:
            best_effort(svc.budget.name_key, key, call_id, permit.key_env)
        try:
            response = spec.call(LateAnswer(spec, held), permit.key_env)
        except ProviderError as err:
            if err.past_deadline:  # the call goes on: the late answer's handler keeps and ends the holds
                held.late = True
            else:
                held.release_permit()
                unbilled_or_ledgered(spec, held, err)
            return Outcome(_failed(task, spec, err, permit))
    except BaseException:
        held.release()
        raise
    return _paid(task, spec, held, response)


def _paid(task: Any, spec: PaidCall, held: Holds, response: ChatResponse) -> Outcome:
    """Billed from here on: record it before anything else can fail."""
    svc, job = held.svc, spec.job
    response, payment = payment_of(spec, held, response)
    best_effort(partial(svc.limiter.observe, pool=_pool_of(spec, held.key_env)), spec.limit_scope, spec.model,
                 response.headers)
    try:
        recording = spec.result(response, payment)
    except UnusableReply as bad:
        ledger_unattached(spec, held, payment, bad.why)
        return Outcome(_retry_or_fail(task, job, bad.error_type, bad.detail, retryable=True))
    except BaseException:
        best_effort(ledger_unattached, spec, held, payment, "result not stored")
        raise
    return Outcome(_record(spec, held, payment, recording), response)


def _record(spec: PaidCall, held: Holds, payment: Payment, recording: Recording) -> str:
    """In SQL now, or through the journal once the database is back (the job then stays
    `running` and the sweep leaves it alone); settled by the call's id either way."""
    svc, job = held.svc, spec.job
    try:
        recorded = journal.RECORDERS[recording.kind](job, payment, recording.data)
    except DATABASE_AWAY as exc:
        journal.write(svc.redis, recording.kind, job, held.key, payment, recording.data)
        log.warning("job %s: database not answering (%s): $%.6f %s journaled for replay", job.id,
                    type(exc).__name__, payment.cost_usd, spec.operation)
        held.settle(payment.cost_usd)
        return "journaled"
    except BaseException:
        best_effort(ledger_unattached, spec, held, payment, "result not stored")
        raise
    if not recorded:  # another delivery's result is the job's: this call is still a real cost
        ledger_unattached(spec, held, payment, f"duplicate {spec.what} for an already recorded job")
        return "duplicate"
    held.settle(payment.cost_usd, recorded.replaced_usd)
    return recording.status


# --- the one retry decision --------------------------------------------------------------------


def _failed(task: Any, spec: PaidCall, err: ProviderError, permit: Permit) -> str:
    svc, settings, job = services(), get_settings(), spec.job
    retry_after = retry_after_from_headers(err.headers) if err.headers else None
    slow_down = is_back_pressure(err.status)
    if err.kind == "rate_limit" or slow_down:
        svc.limiter.block(spec.limit_scope, spec.model, retry_after or settings.retry.backoff_base_s, err.headers,
                          pool=permit.pool)
    if err.kind == "auth" and permit.key_env and _bench(svc, spec, err, permit.key_env):
        counters.count_failure(svc.redis, spec.provider, err.kind, err.status)  # another key is left: the
        raise task.hand_back(job, random.uniform(0, 0.25), uncount=True)  # job goes on there, no attempt spent
    counters.count_failure(svc.redis, spec.provider, err.kind, err.status)
    detail = f"{err.kind}{f' {err.status}' if err.status else ''}: {err}"
    if err.kind == "refused_setting":  # the backend's configuration, not the call, is at fault
        detail = refused_setting_line(job.backend, spec.model, err)
    if spec.what != "call":
        detail = f"{spec.what} failed ({detail.replace(': ', '): ', 1)}"
    if slow_down:  # back-pressure (shared.retry): no attempt spent, bounded by time instead
        refusals = svc.back_pressure.note(job.id)
        if not refusals.exhausted(settings.retry.rate_limited_max_s):
            raise task.hand_back(job, refusals.next_delay(retry_after, settings.retry), uncount=True,
                                 error_type=err.error_type, error_message=detail)
        best_effort(svc.back_pressure.forget, job.id)
        detail = f"{refusals.describe()}, past [retry] rate_limited_max_s: {detail}"
    return _retry_or_fail(task, job, err.error_type, detail, retryable=err.retryable and not slow_down,
                          retry_after=retry_after)


def _retry_or_fail(task: Any, job: jobs.ClaimedJob, error_type: str, detail: str, *, retryable: bool,
                   retry_after: float | None = None) -> str:
    """Within the job's attempts: back to the queue with backoff (what it recorded stays), else
    an error saying why."""
    retry = get_settings().retry
    if retryable and job.attempts < retry.max_attempts:
        delay = backoff_delay(job.attempts - 1, retry_after=retry_after, base=retry.backoff_base_s,
                              cap=retry.backoff_max_s)
        log.info("job %s attempt %s failed (%s); retrying in %.1fs", job.id, job.attempts, detail, delay)
        raise task.hand_back(job, delay, error_type=error_type, error_message=detail)
    reason = f"after {job.attempts} attempt(s): {detail}" if retryable else detail
    log.warning("job %s failed for good: %s", job.id, reason)
    jobs.finish_error(job, error_type, reason)
    return "error"


# --- helpers -----------------------------------------------------------------------------------


def _bench(svc: Services, spec: PaidCall, err: ProviderError, variable: str) -> bool:
    """A key refused, with one line for the fleet (by whoever benches it first; never the key):
    a 401 (the key itself refused) benches it for the run, a 403 (often one model's permission:
    an unverified organisation, Anthropic's permission_error) for this (provider, model) only.
    True when another key of the call's pools is left to use."""
    status = f" {err.status}" if err.status else ""
    scope = (spec.limit_scope, spec.model) if err.status == 403 else None
    first = svc.limiter.bench(spec.job.run_id, variable, f"{err.error_type}, {err.kind}{status}", scope)
    benched = svc.limiter.benched(spec.job.run_id, spec.limit_scope, spec.model)
    others = [v for pool in spec.pools for v in pool.variables if v not in benched]
    if first:
        log.error("key %s refused by %s (%s%s): benched for run %s%s; %s", variable, spec.provider, err.kind,
                  status, spec.job.run_id, f" for model {spec.model} only" if scope else "",
                  f"its calls go to {', '.join(others)}" if others else "no other key to use")
    return bool(others)


def _pool_of(spec: PaidCall, variable: str | None) -> str:
    return next((pool.name for pool in spec.pools if variable in pool.variables), "")


def _acquire(limiter: RateLimiter, spec: PaidCall, run_id: str) -> Permit | Refused | float:
    """Wait briefly in the slot for capacity; return the remaining wait if it is longer."""
    deadline = time.monotonic() + MAX_INLINE_WAIT_S
    while True:
        granted = limiter.acquire(spec.limit_scope, spec.model, spec.tokens, spec.pools, run_id,
                                  output_tokens=spec.request.max_tokens or 0)
        if isinstance(granted, (Permit, Refused)):
            return granted
        if time.monotonic() + granted > deadline:
            return granted
        time.sleep(granted + random.uniform(0, 0.05))
