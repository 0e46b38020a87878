"""What a paid call is, as the ledger and the journal keep it: the payment (its id, operation,
model, tokens, cost) and, for a job's answer, the scored result `finish_ok` stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from shared.db import session_scope
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

    def entry(self, job: "ClaimedJob", *, attached: bool = True, why: str | None = None) -> CostEntry:
        """Its ledger row: the job's own (attached), or a cost without a job link (the job's
        own row is another payment's) saying why and naming the job."""
        if not attached:
            why = f"{why or 'not the job result'}, job {job.id}"
        return CostEntry(
            run_id=job.run_id, job_id=job.id if attached else None, agent=job.agent, backend=job.backend,
            model=self.model, operation=self.operation, input_tokens=self.input_tokens,
            output_tokens=self.output_tokens, reasoning_tokens=self.reasoning_tokens, cost_usd=self.cost_usd,
            call_id=self.call_id,
            source=f"{self.source} ({why})" if why else self.source,
        )


def record_payment(entry: CostEntry) -> bool:
    """A ledger row of its own (an unattached payment); True also when this paid call's row is
    already there (a replay)."""
    try:
        with session_scope() as session:
            session.add(entry)
        return True
    except IntegrityError:
        return False


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
