"""What a paid call is, as the ledger and the journal keep it: the payment (its id, operation,
model, tokens, cost) and, for a job's answer, the scored result `finish_ok` stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import get_engine
from shared.models import CostEntry

if TYPE_CHECKING:
    from shared.lifecycle import ClaimedJob


@dataclass(frozen=True)
class Payment:
    """One paid call as the ledger records it (worker/paid_call.py makes them): its id is its
    budget reservation's, its journal entry's and its ledger row's."""

    call_id: str
    operation: str  # inference | judge | batch ...
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    source: str = "api"
    reasoning_tokens: int = 0  # of output_tokens
    key_env: str | None = None  # the variable whose key made the call (its name: never the key)

    def entry(self, job: "ClaimedJob", *, attached: bool = True, why: str | None = None) -> CostEntry:
        """Its ledger row: the job's own (attached), or a cost without a job link (the job's
        own row is another payment's) saying why and naming the job."""
        if not attached:
            why = f"{why or 'not the job result'}, job {job.id}"
        return CostEntry(
            run_id=job.run_id, job_id=job.id if attached else None, agent=job.agent, backend=job.backend,
            model=self.model, operation=self.operation, input_tokens=self.input_tokens,
            output_tokens=self.output_tokens, reasoning_tokens=self.reasoning_tokens, cost_usd=self.cost_usd,
            call_id=self.call_id, key_env=self.key_env,
            source=f"{self.source} ({why})" if why else self.source,
        )


# The ledger source of a paid call whose outcome is unknown (its worker judged dead mid-call, no
# usable reply to a request the provider received): ledgered at its worst case, as the provider
# may have billed it, until its real outcome replaces it (`write_cost_row`).
OUTCOME_UNKNOWN = "outcome unknown"

_COSTS = CostEntry.__table__
_COST_COLUMNS = tuple(column.name for column in _COSTS.columns if column.name != "id")
# Built once (every paid call runs them; see shared/lifecycle/jobs.py on why), values bound per call.
_UNKNOWN = _COSTS.c.source.startswith(OUTCOME_UNKNOWN, autoescape=True)
_FIND_UNKNOWN = select(_COSTS.c.id, _COSTS.c.cost_usd).where(_COSTS.c.call_id == bindparam("unknown_call"), _UNKNOWN)
_REPLACE_UNKNOWN = update(_COSTS).where(_COSTS.c.id == bindparam("unknown_id"), _UNKNOWN)
_INSERT = insert(_COSTS)


@dataclass(frozen=True)
class Ledgered:
    """What writing a paid call's ledger row did: written or not (false: the ledger already held
    this job's payment for the operation, another delivery's), and the worst case of the
    `outcome unknown` row it replaced, if it replaced one (the budget counters then move by the
    difference: BudgetGuard.settle's `replaced_usd`)."""

    written: bool
    replaced_usd: float | None = None

    def __bool__(self) -> bool:
        return self.written


def cost_row(entry: CostEntry) -> dict[str, Any]:
    """An entry's column values, for `write_cost_row`."""
    return {name: getattr(entry, name) for name in _COST_COLUMNS}


def write_cost_row(conn: Any, values: dict[str, Any]) -> tuple[int, float | None]:
    """The one write of a ledger row, inside the caller's transaction: one row per paid call id.
    When the call is already ledgered as `outcome unknown` (at its worst case) and this is its
    real outcome, that row becomes this one. Returns (the row's id, the worst case it replaced or
    None). Raises IntegrityError when the row is there already otherwise (a replay, a duplicate)."""
    call_id, source = values.get("call_id"), str(values.get("source") or "")
    if call_id and not source.startswith(OUTCOME_UNKNOWN):
        found = conn.execute(_FIND_UNKNOWN, {"unknown_call": call_id}).one_or_none()
        if found is not None and conn.execute(_REPLACE_UNKNOWN, {"unknown_id": found.id, **values}).rowcount == 1:
            return found.id, found.cost_usd
    return conn.execute(_INSERT, values).inserted_primary_key[0], None


def record_payment(entry: CostEntry) -> Ledgered:
    """A ledger row of its own (an unattached payment); not written (false) when this paid
    call's row is already there (a replay)."""
    try:
        with get_engine().begin() as conn:
            return Ledgered(True, write_cost_row(conn, cost_row(entry))[1])
    except IntegrityError:
        return Ledgered(False)


@dataclass(frozen=True)
class PaidResult:
    """A provider's (billed) answer, scored: what `finish_ok` stores and the journal keeps."""

    output: str
    score: float | None  # None: waits for its judge
    detail: str
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    source: str = "api"  # the ledger's `source`: usage the provider returned, or how it was estimated
    simulated: bool = False  # the genesis simulator answered (its header)
    reasoning_tokens: int = 0  # of output_tokens, spent reasoning or thinking
    truncated: bool = False  # cut off by its output allowance
    key_env: str | None = None  # the variable whose key made the call (its name: never the key)
