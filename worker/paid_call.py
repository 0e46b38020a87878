"""Every paid provider call goes through `pay()`: one guarded path, so no payment is lost or
made twice whatever fails around it (design §7, §10).

    lease renewed → budget reserved (its id kept) → rate-limit permit (brief in-slot wait) →
    call within the deadline → ledger (SQL) or journal (Redis, database away) → settle by id

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

The money rules this module owns:
- a late answer (after the deadline) keeps its reservation and its permit until it arrives, and
  is then ledgered (unattached: the job has been retried); one that never comes is ledgered at
  its worst case as `outcome unknown`; the abandoned helper thread then closes its connection
  and exits (shared.providers.deadline);
- a billed reply that cannot be used (a 200 without choices, an unparseable grade) is ledgered
  before the retry;
- a payment whose result cannot be stored is ledgered without a job link, never dropped.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import redis
from celery.worker.control import control_command
from sqlalchemy import exc as sql_errors

from shared import counters, fleet, journal
from shared import lifecycle as jobs
from shared.budget import BudgetGuard, BudgetRefused, BudgetWait, billed_usage, call_cost
from shared.budget.reconcile import OUTCOME_UNKNOWN
from shared.budget.recorded import call_key
from shared.config import get_settings
from shared.messaging import app
from shared.payments import Payment
from shared.limiter import Permit, RateLimiter
from shared.providers import ChatRequest, ChatResponse, ProviderError, complete
from shared.providers.deadline import helper_threads
from shared.retry import BackPressureClock, backoff_delay, is_back_pressure, retry_after_from_headers
from worker.halt import halt_on_refusal

log = logging.getLogger("genesis.paid_call")

# A call that must wait this long or less for rate-limit capacity waits in its slot; longer
# waits go back to the broker with a countdown so other providers' jobs keep flowing.
MAX_INLINE_WAIT_S = 2.0
# A reservation that must wait for calls in flight to settle comes back after this long plus as
# much again at random: the jitter spreads the pollers, so none is always last.
BUDGET_WAIT_S = 0.5

# What a database that is down, locked or out of connections raises through SQLAlchemy.
DATABASE_AWAY = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError,
                 sql_errors.DisconnectionError)


@dataclass(frozen=True)
class Recording:
    """What a paid reply records: `kind` (a recorder in shared.journal.RECORDERS), its
    JSON-able `data`, and the job's status once it is written."""

    kind: str
    data: dict
    status: str = "ok"


class UnusableReply(Exception):
    """A billed reply that is not a result (e.g. an unparseable grade): ledgered without a job
    link, then retried within the job's attempts like a provider failure."""

    def __init__(self, error_type: str, detail: str, why: str) -> None:
        super().__init__(detail)
        self.error_type, self.detail, self.why = error_type, detail, why


@dataclass(frozen=True)
class PaidCall:
    """One paid call, as its caller describes it (see the module docstring)."""

    job: jobs.ClaimedJob
    operation: str  # the ledger's operation: inference | judge | batch ...
    provider: str
    model: str
    worst_case_usd: float
    tokens: int  # estimated prompt + output allowance, for the rate limiter
    result: Callable[[ChatResponse, Payment], Recording]
    request: ChatRequest
    what: str = "call"  # how halts and failures name it ("judge call")
    limits: str = ""  # whose rate limits it counts against (Settings.limit_scope); "": its provider's

    @property
    def limit_scope(self) -> str:
        return self.limits or self.provider

    def call(self, on_late: Callable[[ChatResponse | ProviderError], None]) -> ChatResponse:
        return complete(self.provider, self.request, on_late=on_late)


@dataclass(frozen=True)
class Outcome:
    """The job's status after the call ("ok", "error", "halted", "journaled", "duplicate",
    "lost": this delivery no longer holds the job), and the answer when one was recorded."""

    status: str
    response: ChatResponse | None = None


# --- the worker's connections ------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    redis: redis.Redis
    limiter: RateLimiter
    budget: BudgetGuard
    back_pressure: BackPressureClock


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
    node = task.request.hostname or "local"
    key = call_key(job.id, spec.operation)
    if not jobs.renew_lease(job, node, fleet.redis_now(svc.redis)):
        log.warning("job %s: no longer held by this delivery; %s not made", job.id, spec.what)
        return Outcome("lost")
    try:
        call_id = svc.budget.reserve(key, spec.worst_case_usd, run_id=job.run_id, holder=f"{node}|{spec.model}")
    except BudgetWait:  # room held by calls in flight: no call, not an attempt, no halt
        retry = task.hand_back(job.id, BUDGET_WAIT_S + random.uniform(0, BUDGET_WAIT_S), uncount=True)
        _best_effort(svc.budget.maybe_reconcile)  # a dead worker's reservation must not hold it forever
        raise retry
    except BudgetRefused as refused:
        status = halt_on_refusal(app, svc.budget, job, refused, spec.what)
        if status is None:  # a `budget resume` made room since the refusal: try again, nothing halted
            raise task.hand_back(job.id, BUDGET_WAIT_S, uncount=True)
        return Outcome(status)

    held = _Holds(svc, key, call_id)
    try:
        permit = _acquire(svc.limiter, spec.limit_scope, spec.model, spec.tokens)
        if not isinstance(permit, Permit):
            held.release()
            raise task.hand_back(job.id, permit + random.uniform(0, 0.25), uncount=True)  # no call: not an attempt
        held.permit = permit
        try:
            response = spec.call(_LateAnswer(spec, held))
        except ProviderError as err:
            if err.past_deadline:  # the call goes on: the late answer's handler keeps and ends the holds
                held.late = True
            else:
                held.release_permit()
                _unbilled_or_ledgered(spec, held, err)
            return Outcome(_failed(task, spec, err))
    except BaseException:
        held.release()
        raise
    return _paid(task, spec, held, response)


def _paid(task: Any, spec: PaidCall, held: "_Holds", response: ChatResponse) -> Outcome:
    """Billed from here on: record it before anything else can fail."""
    svc, job = held.svc, spec.job
    response, payment = _payment(spec, held, response)
    _best_effort(svc.limiter.observe, spec.limit_scope, spec.model, response.headers)
    try:
        recording = spec.result(response, payment)
    except UnusableReply as bad:
        _ledger_unattached(spec, held, payment, bad.why)
        return Outcome(_retry_or_fail(task, job, bad.error_type, bad.detail, retryable=True))
    except BaseException:
        _best_effort(_ledger_unattached, spec, held, payment, "result not stored")
        raise
    return Outcome(_record(spec, held, payment, recording), response)


def _record(spec: PaidCall, held: "_Holds", payment: Payment, recording: Recording) -> str:
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
        _best_effort(_ledger_unattached, spec, held, payment, "result not stored")
        raise
    if not recorded:  # another delivery's result is the job's: this call is still a real cost
        _ledger_unattached(spec, held, payment, f"duplicate {spec.what} for an already recorded job")
        return "duplicate"
    held.settle(payment.cost_usd)
    return recording.status


def _ledger_unattached(spec: PaidCall, held: "_Holds", payment: Payment, why: str) -> None:
    """A paid call that is not (or no longer) the job's recorded result still costs money: in
    the ledger without a job link, or journaled as such while the database is away."""
    svc, job = held.svc, spec.job
    log.warning("job %s: %s $%.6f paid but %s; ledgered without a job link", job.id, spec.what,
                payment.cost_usd, why)
    try:
        svc.budget.record_entry(payment.entry(job, attached=False, why=why), key=held.key)
    except DATABASE_AWAY:
        journal.write(svc.redis, "unattached", job, held.key, payment, {"why": why})
        held.settle(payment.cost_usd)
    held.done = True


def _unbilled_or_ledgered(spec: PaidCall, held: "_Holds", err: ProviderError) -> None:
    """A failed call: its reservation is released, unless the provider billed it anyway."""
    if err.billed is None:
        held.release()
        return
    tokens_in, tokens_out, source = billed_usage(spec.request, *err.billed, err.usage_reported, "")
    cost = call_cost(get_settings(), spec.model, tokens_in, tokens_out)
    payment = Payment(held.call_id, spec.operation, spec.model, tokens_in, tokens_out, cost, source)
    _best_effort(_ledger_unattached, spec, held, payment, f"billed failure: {err}")


class _LateAnswer:
    """Handed to the call as `on_late`: receives the outcome of a call abandoned at its
    deadline, on the helper thread, and ends the call's holds then."""

    def __init__(self, spec: PaidCall, held: "_Holds") -> None:
        self.spec, self.held = spec, held

    def __call__(self, outcome: ChatResponse | ProviderError) -> None:
        spec, held = self.spec, self.held
        try:
            if isinstance(outcome, ChatResponse):
                _paid_late(spec, held, outcome)
            elif outcome.billed is not None:
                held.release_permit()
                _unbilled_or_ledgered(spec, held, outcome)
            elif outcome.status is None:  # no HTTP answer after it was sent: it may have been billed
                held.release_permit()
                payment = Payment(held.call_id, spec.operation, spec.model, 0, 0, spec.worst_case_usd,
                                  OUTCOME_UNKNOWN)
                _ledger_unattached(spec, held, payment, f"no answer after its deadline: {outcome.kind}")
            else:  # an HTTP error: not billed
                held.release(by_late_handler=True)
        except Exception:  # noqa: BLE001 - on a helper thread: nothing above it to tell
            log.exception("job %s: late %s could not be ledgered", spec.job.id, spec.what)
            held.release(by_late_handler=True)


def _paid_late(spec: PaidCall, held: "_Holds", response: ChatResponse) -> None:
    _, payment = _payment(spec, held, response)
    _ledger_unattached(spec, held, payment, "answered after its deadline")


@dataclass
class _Holds:
    """What one paid call holds: its reservation (by id) and its limiter permit. Each is given
    back once: settled, released, or handed to the late answer's handler."""

    svc: Services
    key: str
    call_id: str
    permit: Permit | None = None
    done: bool = False  # the reservation is settled or released
    late: bool = False  # past its deadline: the late answer's handler ends the holds

    def release_permit(self, actual_tokens: int | None = None) -> None:
        permit, self.permit = self.permit, None
        if permit is not None:
            _best_effort(self.svc.limiter.release, permit, actual_tokens)

    def settle(self, cost: float) -> None:
        self.svc.budget.settle(self.key, cost, self.call_id)
        self.done = True

    def release(self, *, by_late_handler: bool = False) -> None:
        if self.late and not by_late_handler:  # the late answer's handler ends them
            return
        self.release_permit()
        if not self.done:
            _best_effort(self.svc.budget.release, self.key, self.call_id)
            self.done = True


# --- the one retry decision --------------------------------------------------------------------


def _failed(task: Any, spec: PaidCall, err: ProviderError) -> str:
    svc, settings, job = services(), get_settings(), spec.job
    retry_after = retry_after_from_headers(err.headers) if err.headers else None
    slow_down = is_back_pressure(err.status)
    if err.kind == "rate_limit" or slow_down:
        svc.limiter.block(spec.limit_scope, spec.model, retry_after or settings.retry.backoff_base_s, err.headers)
    counters.count_failure(svc.redis, spec.provider, err.kind, err.status)
    detail = f"{err.kind}{f' {err.status}' if err.status else ''}: {err}"
    if spec.what != "call":
        detail = f"{spec.what} failed ({detail.replace(': ', '): ', 1)}"
    if slow_down:  # back-pressure (shared.retry): no attempt spent, bounded by time instead
        refusals = svc.back_pressure.note(job.id)
        if not refusals.exhausted(settings.retry.rate_limited_max_s):
            raise task.hand_back(job.id, refusals.next_delay(retry_after, settings.retry), uncount=True,
                                 error_type=err.error_type, error_message=detail)
        _best_effort(svc.back_pressure.forget, job.id)
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
        raise task.hand_back(job.id, delay, error_type=error_type, error_message=detail)
    reason = f"after {job.attempts} attempt(s): {detail}" if retryable else detail
    log.warning("job %s failed for good: %s", job.id, reason)
    jobs.finish_error(job.id, error_type, reason)
    return "error"


# --- helpers -----------------------------------------------------------------------------------


def _payment(spec: PaidCall, held: "_Holds", response: ChatResponse) -> tuple[ChatResponse, Payment]:
    """A billed answer's payment (a response without usage is still billed: its tokens estimated
    from its text, flagged), its permit given back with the tokens it really took."""
    input_tokens, output_tokens, source = billed_usage(spec.request, response.input_tokens, response.output_tokens,
                                                       response.usage_reported, response.text)
    response = replace(response, input_tokens=input_tokens, output_tokens=output_tokens)
    held.release_permit(input_tokens + output_tokens)
    cost = call_cost(get_settings(), spec.model, input_tokens, output_tokens)
    return response, Payment(held.call_id, spec.operation, spec.model, input_tokens, output_tokens, cost, source)


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


def _best_effort(call, *args) -> None:
    """Bookkeeping (limiter pacing, budget reconciliation): losing it never costs a job."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        log.warning("%s failed", getattr(call, "__name__", "bookkeeping"), exc_info=True)
