"""Reconciling the budget's reservations with SQL: what a dead worker or a stray redelivery
left in Redis is settled from the ledger, ledgered as `outcome unknown`, or released."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.budget.money import to_usd
from shared.budget.recorded import REBUILT, call_of, job_outcomes, paid_call_cost
from shared.db import session_scope
from shared.models import CostEntry, JobStatus
from shared.payments import OUTCOME_UNKNOWN  # the ledger source of a call whose outcome is unknown

if TYPE_CHECKING:
    from shared.budget.guard import BudgetGuard

log = logging.getLogger("genesis.budget")



@dataclass
class Reconciled:
    """What a reconciliation did: reservations released (their job is not running in SQL and
    has no ledger entry), settled (their call's cost is in the ledger, never counted) and
    ledgered as outcome unknown."""

    released: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # a dead worker's calls, ledgered at their worst case


def holder_parts(holder: str) -> tuple[str, str]:
    """(incarnation, model) of a reservation's holder (`<incarnation>|<model>`, then `|<key
    variable>` once the limiter chose its key); ("", "") for one rebuilt for a job naming no paid
    call, or reserved without a holder (a batch's)."""
    if holder == REBUILT:
        return "", ""
    incarnation, _, model = holder.partition("|")
    return incarnation, model.partition("|")[0]


def _rebuilt_if_lost(guard: "BudgetGuard") -> None:
    """Redis lost the budget: rebuild it from SQL now, while the jobs of a dead holder still show
    `running` with their paid calls (the sweep hands them back next), so their reservations
    come back under that holder and reconcile ledgers them (issue #27)."""
    if not guard.redis.exists(guard.keys.state):
        guard.rebuild()


def reservation_holders(guard: "BudgetGuard") -> set[str]:
    """The incarnations holding a reservation now (the sweep checks that each is alive)."""
    _rebuilt_if_lost(guard)
    return {incarnation for holder in guard.redis.hvals(guard.keys.reservation_holders)
            if (incarnation := holder_parts(holder.decode())[0])}


def reconcile(guard: "BudgetGuard", dead_nodes: set[str] = frozenset()) -> Reconciled:
    """Repair what a dead worker or a stray redelivery left. A reservation whose holder (a
    process incarnation, shared.fleet) is in `dead_nodes` (the sweep's, believed after a grace
    period) was a call in flight when its
    worker died: settled from the ledger if its entry got there, else ledgered at its worst
    case as `outcome unknown` (the provider may have billed it), never released. A live
    holder's reservation is its call's to settle (a late answer may still come). A rebuild
    after Redis loss restores each running job's call under its holder and id, so both hold
    after a flush too. One without a holder (rebuilt for a job naming no call, or a batch's)
    whose job SQL does not say is running is
    settled from the ledger when the job's entry is there, else released. A reservation made
    after this looked is left alone."""
    _rebuilt_if_lost(guard)
    held = {field.decode(): holder.decode()
            for field, holder in guard.redis.hgetall(guard.keys.reservation_holders).items()}
    amounts = {field.decode(): int(amount) for field, amount in guard.redis.hgetall(guard.keys.reservations).items()}
    done = Reconciled()
    if not held:
        return done
    calls = {field: field.rsplit("#", 1) for field in held}
    with session_scope(guard.database_url) as session:
        outcomes = job_outcomes(session, sorted({call_of(key)[0] for key, _ in calls.values()}))
        paid = paid_call_cost(session, [call_id for _, call_id in calls.values()])
    for field, holder in held.items():
        key, call_id = calls[field]
        node, model = holder_parts(holder)
        if call_id in paid:  # its entry is in the ledger: the worker died before its settle
            guard.settle(key, paid[call_id], call_id)
            done.settled.append(key)
        elif node and node in dead_nodes and field in amounts:
            _ledger_unknown(guard, key, call_id, to_usd(amounts[field]), model, outcomes)
            done.unknown.append(key)
        elif node or outcomes.statuses.get(call_of(key)[0]) == JobStatus.running:
            continue
        elif key in outcomes.costs:
            guard.settle(key, outcomes.costs[key][0], outcomes.costs[key][1] or "")
            done.settled.append(key)
        elif guard.release(key, call_id):
            done.released.append(key)
    if done.released or done.settled or done.unknown:
        log.warning("budget reconciled with SQL: released %s, settled from the ledger %s, ledgered as "
                    "outcome unknown %s", done.released, done.settled, done.unknown)
    return done


def _ledger_unknown(guard: "BudgetGuard", key: str, call_id: str, worst_usd: float, model: str, outcomes) -> None:
    """A call whose worker died mid-call: the provider may have billed it; its worst case is
    ledgered (without a job link: the job runs again) so the spend is never lost."""
    job_id, operation = call_of(key)
    job = outcomes.jobs.get(job_id)
    log.warning("call %s of job %s: its worker died mid-call; $%.6f (its worst case) ledgered as outcome unknown",
                operation, job_id, worst_usd)
    guard.record_entry(CostEntry(
        run_id=job.run_id if job else None, agent=job.agent if job else None, backend=job.backend if job else None,
        model=model or (job.model if job else None), operation=operation, cost_usd=worst_usd,
        source=f"{OUTCOME_UNKNOWN} (its worker died mid-call, job {job_id})", call_id=call_id,
    ), key=key)
