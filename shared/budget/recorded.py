"""What SQL records about the budget, from which the Redis counters are rebuilt and checked:
the budget events replayed (limit, halt, tiers fired), this ledger's identity, and the
reservations of the calls SQL says are in flight."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from shared.config import ConfigError, Settings
from shared.models import BudgetEvent, CostEntry, Job, JobStatus, Run
from shared.numbers import MAX_USD, is_cost, is_limit

from shared.budget.money import to_micro
from shared.budget.pricing import task_worst_case

log = logging.getLogger("genesis.budget")

TIERS = ("warning", "critical")  # fired once each; the emergency tier is the halt itself


@dataclass(frozen=True)
class RecordedBudgetState:
    """What the budget events in SQL say: the limit set by `budget resume --limit` (None: the
    config's), whether the queues are halted, why, and the tiers fired since the last limit change."""

    limit_usd: float | None
    halted: bool
    fired: frozenset[str]
    halt_reason: str | None = None


def ledger_id(session: Session) -> str:
    """This database's ledger identity (its first `ledger` event), created on first use, so
    Redis counters can tell which ledger they were built from."""
    first = select(BudgetEvent.message).where(BudgetEvent.kind == "ledger").order_by(col(BudgetEvent.id)).limit(1)
    found = session.exec(first).first()
    if found is None:
        session.add(BudgetEvent(kind="ledger", level="ok", spent_usd=0.0, limit_usd=0.0, message=uuid.uuid4().hex))
        session.commit()
        found = session.exec(first).first()
    return found


def recorded_budget_state(session: Session) -> RecordedBudgetState:
    """Tiers and limits in the order they were written; halted or not by the last halt or resume
    on the Redis clock that stamps both (`at`, then id), so a halt event committed after a
    resume that followed it in Redis does not come back in a rebuild."""
    events = session.exec(
        select(BudgetEvent.kind, BudgetEvent.limit_usd, BudgetEvent.message, BudgetEvent.at)
        .order_by(col(BudgetEvent.id))
    ).all()
    limit_usd: float | None = None
    fired: set[str] = set()
    switches = []
    for kind, event_limit, message, at in events:
        if kind == "limit" and not is_limit(event_limit):
            log.warning("budget event: limit %r is not a positive finite amount up to $%s: skipped",
                        event_limit, f"{MAX_USD:,}")
        elif kind == "limit":
            limit_usd, fired = event_limit, set()
        elif kind in ("halt", "resume"):
            switches.append((at, len(switches), kind, message))  # UTCDateTime: aware
        elif kind in TIERS:
            fired.add(kind)
    last = max(switches, default=None)
    halted = last is not None and last[2] == "halt"
    return RecordedBudgetState(limit_usd, halted, frozenset(fired), last[3] if halted else None)


def call_key(job_id: int, operation: str = "inference") -> str:
    """What a paid call of a job is reserved and settled under: `<job id>` for the job's own
    call, `<operation>:<job id>` for another (the judge's), so both can be in flight at once."""
    return str(job_id) if operation == "inference" else f"{operation}:{job_id}"


def call_of(key: str) -> tuple[int, str]:
    """The (job id, operation) a reservation key names: the inverse of `call_key`."""
    operation, _, job_id = key.rpartition(":")
    return int(job_id), operation or "inference"


def settled_member(entry_id: int, job_id: int | None, operation: str, call_id: str | None = None) -> str:
    """The settled-set member of a ledger entry, as settle() names it: `call:<paid call id>`,
    or for an entry without one, `job:<call key>` (a job's) or `entry:<id>` (unattached)."""
    if call_id:
        return f"call:{call_id}"
    return f"entry:{entry_id}" if job_id is None else f"job:{call_key(job_id, operation)}"


def ledger_members(session: Session) -> tuple[int, list[str]]:
    """The settled spend in micro-dollars, summed per entry exactly as the settle script adds
    them, and the member each entry is counted under."""
    entries = _sound(session.exec(
        select(CostEntry.id, CostEntry.job_id, CostEntry.cost_usd, CostEntry.operation, CostEntry.call_id)
    ).all())
    spent = sum(to_micro(cost) for _, _, cost, _, _ in entries)
    return spent, [settled_member(id_, job_id, operation, call_id) for id_, job_id, _, operation, call_id in entries]


def _sound(entries: list) -> list:
    """Ledger rows (id, job id, cost, ...) whose cost is a finite amount >= 0. The ledger refuses
    any other since shared.models.LedgerCost, but a row written before that (`budget log --cost
    inf`) must not stop every rebuild: it is left out, one log line each."""
    sound = []
    for entry in entries:
        if is_cost(entry[2]):
            sound.append(entry)
        else:
            log.warning("ledger entry %s: cost %r is not a finite amount from 0 to $%s: left out of the budget",
                        entry[0], entry[2], f"{MAX_USD:,}")
    return sound


REBUILT = "rebuilt"  # the holder and id of a reservation rebuilt for a job whose paid call SQL does not name


def reservation_field(key: str, call_id: str) -> str:
    """A paid call's reservation in the budget (lua.RESERVE names it so): `<call key>#<call id>`."""
    return f"{key}#{call_id}"


def running_reservations(session: Session, settings: Settings) -> dict[str, tuple[int, str]]:
    """reservation field → (worst case in micro-dollars, holder) for every job SQL says is
    running: what their holders reserved, so a rebuild after Redis loss keeps the room their
    calls may still use, and a dead holder's call is still ledgered as outcome unknown. A job
    names its paid call in flight (`job.paid_call`, written before it was reserved): rebuilt
    under that id and the job's holder (`<incarnation>|<model>`), unless its call is in the
    ledger already. One that names none (a provider batch's, one not yet calling) gets its
    job's worst case under `<job id>#rebuilt`, holder `rebuilt`: the first reservation of its
    key replaces it."""
    from shared.suite import load_task, run_suite_folder  # lazily: the suite loader is heavy

    rows = session.exec(
        select(Job.id, Job.agent, Job.task_id, Job.backend, Job.model, Run.suite, Job.holder, Job.paid_call,
               Job.paid_call_usd)
        .join(Run, col(Run.id) == col(Job.run_id))
        .where(Job.status == JobStatus.running)
    ).all()
    ledgered = paid_call_cost(session, [row.paid_call.rpartition("#")[2] for row in rows if row.paid_call])
    held: dict[str, tuple[int, str]] = {}
    for row in rows:
        try:
            if row.paid_call and row.paid_call_usd is not None:
                key, _, call_id = row.paid_call.rpartition("#")
                if call_id not in ledgered:
                    held[row.paid_call] = (to_micro(row.paid_call_usd), f"{row.holder}|{_model_of(settings, row, key)}")
            else:
                task = load_task(run_suite_folder(row.suite), row.agent, row.task_id)
                held[reservation_field(call_key(row.id), REBUILT)] = (
                    to_micro(task_worst_case(settings, task, row.backend, row.model)), REBUILT)
        except (ConfigError, KeyError) as exc:  # its worker could not have reserved it either
            log.warning("job %s: no reservation rebuilt (%s)", row.id, exc)
    return held


def _model_of(settings: Settings, job: Any, key: str) -> str:
    """The model a job's paid call went to: its own, or its judge's."""
    return job.model if call_of(key)[1] == "inference" else settings.judge_model(job.agent)[1]


@dataclass(frozen=True)
class JobOutcomes:
    """What SQL says about the jobs of some reservations: each job's status and (run, agent,
    backend, model); each call key's ledger (cost, paid call id)."""

    statuses: dict[int, str]
    jobs: dict[int, Any]
    costs: dict[str, tuple[float, str | None]]


def job_outcomes(session: Session, job_ids: list[int]) -> JobOutcomes:
    rows = session.exec(
        select(Job.id, Job.status, Job.run_id, Job.agent, Job.backend, Job.model).where(col(Job.id).in_(job_ids))
    ).all()
    entries = session.exec(
        select(CostEntry.job_id, CostEntry.operation, CostEntry.cost_usd, CostEntry.call_id)
        .where(col(CostEntry.job_id).in_(job_ids))
    ).all()
    return JobOutcomes(
        statuses={row.id: row.status for row in rows},
        jobs={row.id: row for row in rows},
        costs={call_key(job_id, operation): (cost, call_id) for job_id, operation, cost, call_id in entries},
    )


def paid_call_cost(session: Session, call_ids: list[str]) -> dict[str, float]:
    """The ledger's cost of each of these paid calls that has an entry (attached or not)."""
    if not call_ids:
        return {}
    rows = session.exec(select(CostEntry.call_id, CostEntry.cost_usd).where(col(CostEntry.call_id).in_(call_ids)))
    return dict(rows.all())
