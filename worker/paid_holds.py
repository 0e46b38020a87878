"""What one paid call is and what it holds while it is made (worker/paid_call.py's `pay()` is the
one path that makes it): the caller's description (`PaidCall`, `Recording`), the worker's
connections (`Services`), the call's reservation and permit (`Holds`), and the money rules that
give them back.

The money rules this module owns:
- a late answer (after the deadline) keeps its reservation and its permit until it arrives, and
  is then ledgered (unattached: the job has been retried); the abandoned helper thread then
  closes its connection and exits (shared.providers.deadline);
- a billed reply that cannot be used (a 200 without choices, an unparseable grade) is ledgered
  before the retry;
- a failed call the provider may have billed (`ProviderError.outcome_unknown`: a 200 that cannot
  be parsed, a connection lost after sending, in or past the deadline alike) is ledgered at its
  worst case as `outcome unknown` (`unbilled_or_ledgered`, the one rule);
- a payment whose result cannot be stored is ledgered without a job link, never dropped;
- a call already ledgered as `outcome unknown` (its worker judged dead while it was alive) whose
  answer arrives after all: its real cost replaces that entry (shared.payments.write_cost_row)
  and the budget counters move by the difference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import redis
from sqlalchemy import exc as sql_errors

from shared import journal
from shared import lifecycle as jobs
from shared.budget import BudgetGuard, billed_usage, call_cost
from shared.config import get_settings
from shared.keypools import KeyPool
from shared.limiter import Permit, RateLimiter
from shared.retry import BackPressureClock
from shared.payments import OUTCOME_UNKNOWN, Payment
from shared.providers import ChatRequest, ChatResponse, ProviderError, complete
from worker import unreleased

log = logging.getLogger("genesis.paid_call")

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


@dataclass(frozen=True)
class PaidCall:
    """One paid call, as its caller describes it (see worker/paid_call.py's docstring)."""

    job: jobs.ClaimedJob
    operation: str  # the ledger's operation: inference | judge | batch ...
    provider: str
    model: str
    worst_case_usd: float
    tokens: int  # estimated prompt + output allowance (request.max_tokens), for the rate limiter
    result: Callable[[ChatResponse, Payment], Recording]
    request: ChatRequest
    what: str = "call"  # how halts and failures name it ("judge call")
    limits: str = ""  # whose rate limits it counts against (Settings.limit_scope); "": its provider's
    pools: tuple[KeyPool, ...] = ()  # its backend's key pools (Settings.key_pools); (): the provider's key

    @property
    def limit_scope(self) -> str:
        return self.limits or self.provider

    def call(self, on_late: Callable[[ChatResponse | ProviderError], None], key_env: str | None = None) -> ChatResponse:
        """The call, with the key of `key_env` (the variable the limiter chose) when given."""
        request = replace(self.request, key_env=key_env) if key_env else self.request
        return complete(self.provider, request, on_late=on_late)


@dataclass(frozen=True)
class Services:
    redis: redis.Redis
    limiter: RateLimiter
    budget: BudgetGuard
    back_pressure: BackPressureClock  # how long each job has met 429s (shared.retry)


def ledger_unattached(spec: PaidCall, held: "Holds", payment: Payment, why: str) -> None:
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


def unbilled_or_ledgered(spec: PaidCall, held: "Holds", err: ProviderError) -> None:
    """The one rule for a failed call, in or past its deadline: billed with its usage known (a
    200 without choices) → ledgered at that cost; possibly billed (`outcome_unknown`) → ledgered
    at its worst case as `outcome unknown`; else not billed → its reservation is released."""
    if err.billed is not None:
        tokens_in, tokens_out, source = billed_usage(spec.request, *err.billed, err.usage_reported, "")
        cost = call_cost(get_settings(), spec.model, tokens_in, tokens_out)
        payment = Payment(held.call_id, spec.operation, spec.model, tokens_in, tokens_out, cost, source,
                          key_env=held.key_env)
        best_effort(ledger_unattached, spec, held, payment, f"billed failure: {err}")
    elif err.outcome_unknown:
        payment = Payment(held.call_id, spec.operation, spec.model, 0, 0, spec.worst_case_usd, OUTCOME_UNKNOWN,
                          key_env=held.key_env)
        best_effort(ledger_unattached, spec, held, payment, f"no usable reply, {err.kind}: {err}")
    else:
        held.release()


class LateAnswer:
    """Handed to the call as `on_late`: receives the outcome of a call abandoned at its
    deadline, on the helper thread, and ends the call's holds then."""

    def __init__(self, spec: PaidCall, held: "Holds") -> None:
        self.spec, self.held = spec, held

    def __call__(self, outcome: ChatResponse | ProviderError) -> None:
        spec, held = self.spec, self.held
        held.late = False  # this handler holds them now: settled, ledgered or released here
        try:
            if isinstance(outcome, ChatResponse):
                _paid_late(spec, held, outcome)
            else:
                held.release_permit()
                unbilled_or_ledgered(spec, held, outcome)
        except Exception:  # noqa: BLE001 - on a helper thread: nothing above it to tell
            log.exception("job %s: late %s could not be ledgered", spec.job.id, spec.what)
            held.release()


def _paid_late(spec: PaidCall, held: "Holds", response: ChatResponse) -> None:
    _, payment = payment_of(spec, held, response)
    ledger_unattached(spec, held, payment, "answered after its deadline")


@dataclass
class Holds:
    """What one paid call holds: its reservation (by id) and its limiter permit. Each is given
    back once: settled, released, or handed to the late answer's handler."""

    svc: Services
    key: str
    call_id: str
    permit: Permit | None = None
    key_env: str | None = None  # the variable whose key made the call (the permit's), for the ledger
    done: bool = False  # the reservation is settled or released
    late: bool = False  # past its deadline: the late answer's handler ends the holds

    def release_permit(self, actual_tokens: int | None = None, actual_output: int | None = None) -> None:
        permit, self.permit = self.permit, None
        if permit is not None:
            best_effort(self.svc.limiter.release, permit, actual_tokens, actual_output)

    def settle(self, cost: float, replaced_usd: float | None = None) -> None:
        self.svc.budget.settle(self.key, cost, self.call_id, replaced_usd)
        self.done = True

    def release(self) -> None:
        if self.late:  # the late answer's handler ends them
            return
        self.release_permit()
        if not self.done:
            try:
                self.svc.budget.release(self.key, self.call_id)
            except Exception as exc:  # noqa: BLE001 - a Redis blip: this process's next heartbeat retries it
                log.warning("releasing call %s of %s failed (%s: %s); retried at the next heartbeat",
                            self.call_id, self.key, type(exc).__name__, exc)
                unreleased.remember(self.key, self.call_id)
            self.done = True


def payment_of(spec: PaidCall, held: "Holds", response: ChatResponse) -> tuple[ChatResponse, Payment]:
    """A billed answer's payment (a response without usage is still billed: its tokens estimated
    from its text, flagged), its permit given back with the tokens it really took."""
    input_tokens, output_tokens, source = billed_usage(spec.request, response.input_tokens, response.output_tokens,
                                                       response.usage_reported, response.text)
    response = replace(response, input_tokens=input_tokens, output_tokens=output_tokens)
    held.release_permit(input_tokens + output_tokens, output_tokens)
    cost = call_cost(get_settings(), spec.model, input_tokens, output_tokens)
    return response, Payment(held.call_id, spec.operation, spec.model, input_tokens, output_tokens, cost, source,
                             reasoning_tokens=response.reasoning_tokens, key_env=held.key_env)

def best_effort(call, *args) -> None:
    """Bookkeeping (limiter pacing, budget reconciliation): losing it never costs a job."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        log.warning("%s failed", getattr(call, "__name__", "bookkeeping"), exc_info=True)
