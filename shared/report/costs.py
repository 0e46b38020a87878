"""What a run cost and what it did not pay for: inference on its jobs, judge calls from the
ledger (operation `judge`, also those ledgered without a job link), answers reused at $0.
One owner for these sums, so the rows, the totals and the text cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from shared.config import ConfigError, price_in
from shared.config.tables import Price
from shared.models import CostEntry

JUDGE_OPERATION = "judge"
INFERENCE_OPERATION = "inference"


@dataclass(frozen=True)
class Spend:
    """Dollars and the number of ledger entries (paid calls) behind them."""

    usd: float = 0.0
    calls: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.usd + other.usd, self.calls + other.calls)


NOTHING = Spend()


def judge_spend(session: Session, run_id: str) -> dict[tuple[str | None, str | None], Spend]:
    """The run's judge calls per (agent, backend answered), as the ledger holds them."""
    rows = session.exec(
        select(CostEntry.agent, CostEntry.backend, func.sum(CostEntry.cost_usd), func.count())
        .where(CostEntry.run_id == run_id, CostEntry.operation == JUDGE_OPERATION)
        .group_by(CostEntry.agent, CostEntry.backend)
    )
    return {(agent, backend): Spend(float(usd or 0.0), int(calls)) for agent, backend, usd, calls in rows}


def answer_calls(session: Session, run_id: str) -> Spend:
    """The run's paid calls for its answers (operation `inference`), as the ledger holds them: a
    job that errored after a billed or outcome-unknown call counts, one refused before sending
    (no ledger entry) does not, a reused answer (no call) does not; judge calls are judge_spend's."""
    usd, calls = session.exec(
        select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0), func.count())
        .where(CostEntry.run_id == run_id, CostEntry.operation == INFERENCE_OPERATION)
    ).one()
    return Spend(float(usd or 0.0), int(calls))


def key_spend(session: Session, run_id: str) -> dict[tuple[str | None, str], Spend]:
    """The run's paid calls per (backend, key variable) that made them (key pools, design §14):
    the variable's name, as the ledger holds it; calls ledgered before pools existed name none."""
    rows = session.exec(
        select(CostEntry.backend, CostEntry.key_env, func.sum(CostEntry.cost_usd), func.count())
        .where(CostEntry.run_id == run_id, CostEntry.key_env.is_not(None))
        .group_by(CostEntry.backend, CostEntry.key_env)
    )
    return {(backend, key): Spend(float(usd or 0.0), int(calls)) for backend, key, usd, calls in rows}


def total(spends: Iterable[Spend]) -> Spend:
    return sum(spends, NOTHING)


def is_reused(job: Any) -> bool:
    return job.reused_from_job_id is not None


def reuse_facts(jobs: list[Any]) -> dict[str, Any]:
    reused = [j for j in jobs if is_reused(j)]
    return {"jobs": len(reused), "source_runs": sorted({j.reused_from_run_id for j in reused if j.reused_from_run_id})}


def is_batch(config: dict[str, dict], backend: str) -> bool:
    """Whether a backend of the run's config snapshot went through its provider's batch API (a
    batch's latency is its turnaround, not a call's: left out of latency figures and charts)."""
    return config.get(backend, {}).get("mode") == "batch"


def batch_backends(snapshot: dict) -> list[str]:
    """The backends the run sent through the providers' batch APIs (its config snapshot)."""
    config = snapshot.get("backends") or {}
    return sorted(name for name in config if is_batch(config, name))


def batch_saved_usd(jobs: list[Any], snapshot: dict, batch: Iterable[str] | None = None) -> float:
    """What the batch backends' answers would have cost more at realtime prices: each job's
    batch cost over its model's `batch_discount`, less that cost."""
    batch = set(batch_backends(snapshot) if batch is None else batch)
    pricing = {name: Price.model_validate(p) for name, p in (snapshot.get("pricing") or {}).items()}
    saved = 0.0
    for job in jobs:
        if job.backend in batch and job.cost_usd:
            try:
                discount = price_in(pricing, job.model).batch_discount
            except ConfigError:
                continue
            saved += job.cost_usd / discount - job.cost_usd
    return saved


def run_costs(jobs: list[Any], judge: dict[tuple[str | None, str | None], Spend], ledger_usd: float,
              snapshot: dict | None = None, keys: dict[tuple[str | None, str], Spend] | None = None) -> dict:
    """The run's cost split: inference as its jobs recorded it, judge from the ledger, what
    batch mode saved against realtime prices, and the calls and cost of each key variable."""
    snapshot = snapshot or {}
    inference = sum(j.cost_usd or 0.0 for j in jobs)
    judged = total(judge.values())
    whole = inference + judged.usd
    batch = batch_backends(snapshot)
    return {
        "inference_usd": inference,
        "judge_usd": judged.usd,
        "judge_calls": judged.calls,
        "judge_share": judged.usd / whole if whole else None,
        "total_usd": whole,
        "ledger_usd": ledger_usd,
        "reuse": reuse_facts(jobs),
        "batch_backends": batch,
        "batch_usd": sum(j.cost_usd or 0.0 for j in jobs if j.backend in batch),
        "batch_saved_usd": batch_saved_usd(jobs, snapshot, batch),
        "keys": [{"backend": backend, "key_env": key, "calls": spend.calls, "usd": spend.usd}
                 for (backend, key), spend in sorted((keys or {}).items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))],
    }

