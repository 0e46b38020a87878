"""The report's facts, read from SQL only: the run, its jobs (as light rows, not ORM objects, so
10,000 jobs load fast), per agent/backend and per backend figures, difficulty, budget. Nothing
here judges; shared.report.decision does."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from shared.budget import recorded_budget_state, to_micro
from shared.budget.events import level_of
from shared.config import ConfigError
from shared.config.tables import BudgetConfig
from shared.models import BudgetEvent, CostEntry, Job, JobStatus, Run, RunStatus, iso
from shared.report.costs import NOTHING, Spend, answer_calls, is_batch, is_reused, judge_spend, key_spend, total
from shared.stats import mean_or_none, percentile

DIFFICULTY_ORDER = ("easy", "medium", "hard")
LATENCY_QUANTILES = (0, 25, 50, 75, 95, 100)
# Every column the report reads except `output` (fetched only for the drill-down).
JOB_COLUMNS = (
    Job.id, Job.agent, Job.task_id, Job.epoch, Job.difficulty, Job.cluster, Job.backend, Job.model, Job.status,
    Job.score,
    Job.latency_ms, Job.input_tokens, Job.output_tokens, Job.cost_usd, Job.error_type,
    Job.reused_from_job_id, Job.reused_from_run_id, Job.simulated, Job.reasoning_tokens, Job.truncated, Job.look,
)
_IN_CHUNK = 500  # ids per IN (...) when fetching outputs


class UnknownRunError(ConfigError, KeyError):
    """A KeyError for callers that look runs up, a one-line ConfigError (exit 2) for the CLI."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RunFacts:
    """A run and its job rows, grouped the ways the report needs them."""

    run: Run
    jobs: list[Any]  # sqlalchemy Rows with JOB_COLUMNS' names
    agents: list[str]
    backends: list[str]
    by_pair: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    # The ledger's judge calls per (agent, backend answered), with or without a job link.
    judge: dict[tuple[str | None, str | None], Spend] = field(default_factory=dict)
    # The ledger's paid calls for the run's answers (operation inference).
    answers: Spend = NOTHING
    # The ledger's paid calls per (backend, key variable that made them).
    keys: dict[tuple[str | None, str], Spend] = field(default_factory=dict)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a in self.agents for b in self.backends if (a, b) in self.by_pair]

    @property
    def snapshot(self) -> dict:
        return self.run.config or {}


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise UnknownRunError(f"no run with id {run_id!r}")
    return run


def load_jobs(session: Session, run_id: str) -> list[Any]:
    return list(session.exec(select(*JOB_COLUMNS).where(Job.run_id == run_id).order_by(Job.id)))


def load_facts(session: Session, run_id: str, *, partial: bool) -> RunFacts:
    """Refuses (ConfigError) a queued or running run with jobs in flight unless `partial`; a
    halted, cancelled or completed run always gets its report of what finished."""
    run = get_run(session, run_id)
    jobs = load_jobs(session, run_id)
    counts = status_counts(jobs)
    in_flight = counts[JobStatus.queued] + counts[JobStatus.running]
    if in_flight and not partial and run.status in (RunStatus.queued, RunStatus.running):
        raise ConfigError(
            f"run {run_id} still has {in_flight} job(s) queued or running: "
            "use --partial for a report of what has finished so far"
        )
    facts = RunFacts(
        run=run,
        jobs=jobs,
        agents=_ordered(run.agents, (j.agent for j in jobs)),
        backends=_ordered(run.backends, (j.backend for j in jobs)),
        judge=judge_spend(session, run_id),
        answers=answer_calls(session, run_id),
        keys=key_spend(session, run_id),
    )
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for job in jobs:
        grouped[(job.agent, job.backend)].append(job)
    facts.by_pair = dict(grouped)
    return facts


def load_outputs(session: Session, job_ids: Iterable[int]) -> dict[int, str | None]:
    ids = sorted(set(job_ids))
    outputs: dict[int, str | None] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        outputs.update(session.exec(select(Job.id, Job.output).where(Job.id.in_(chunk))).all())
    return outputs


def status_counts(jobs: list[Any]) -> dict[JobStatus, int]:
    seen = Counter(job.status for job in jobs)
    return {status: seen.get(status.value, 0) for status in JobStatus}


def _ordered(preferred: Iterable[str], found: Iterable[str]) -> list[str]:
    """The run's own order first, then anything the jobs name that the run row does not."""
    present = set(found)
    listed = [name for name in dict.fromkeys(preferred) if name in present]
    return listed + sorted(present - set(listed))


def answered(job: Any | None) -> bool:
    """An ok job; one without a score (a worker bug) is not counted as answered."""
    return job is not None and job.status == JobStatus.ok and job.score is not None


def scored(jobs: Iterable[Any]) -> list[Any]:
    return [j for j in jobs if answered(j)]


def backend_row(agent: str, backend: str, jobs: list[Any], config: dict[str, dict], judge: Spend = NOTHING) -> dict:
    """`cost_usd` is inference only; the judge's calls are beside it. Cost per request is over
    the paid ok answers: a reused one cost nothing and would flatter the backend."""
    ok = scored(jobs)
    batch = is_batch(config, backend)
    latencies = [] if batch else [j.latency_ms for j in ok if j.latency_ms is not None]
    cost = sum(j.cost_usd or 0.0 for j in jobs)
    paid = [j.cost_usd or 0.0 for j in ok if not is_reused(j)]
    return {
        "agent": agent,
        "backend": backend,
        "mode": "batch" if batch else "realtime",
        "model": Counter(j.model for j in jobs).most_common(1)[0][0],
        "role": config.get(backend, {}).get("role"),
        "jobs": len(jobs),
        "n": len(ok),
        "ok": len(ok),
        "errors": sum(j.status == JobStatus.error for j in jobs),
        "halted": sum(j.status == JobStatus.halted for j in jobs),
        "accuracy": mean_or_none([j.score for j in ok]),
        "latency_p50_ms": percentile(latencies, 50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 95) if latencies else None,
        "input_tokens": sum(j.input_tokens or 0 for j in jobs),
        "output_tokens": sum(j.output_tokens or 0 for j in jobs),
        "reasoning_tokens": sum(j.reasoning_tokens or 0 for j in jobs),  # of output_tokens
        "truncated": sum(bool(j.truncated) for j in ok),  # answers cut off by their allowance
        "reused": sum(is_reused(j) for j in jobs),
        "cost_usd": cost,
        "judge_cost_usd": judge.usd,
        "judge_calls": judge.calls,
        "total_cost_usd": cost + judge.usd,
        "cost_per_request_usd": sum(paid) / len(paid) if paid else None,
    }


def backend_summary(facts: RunFacts) -> list[dict]:
    """One row per backend over every agent: what the latency and cost charts draw. Cost per
    accuracy point: the backend's inference cost over its accuracy in percentage points."""
    config = facts.snapshot.get("backends", {})
    rows = []
    for backend in facts.backends:
        jobs = [j for agent in facts.agents for j in facts.by_pair.get((agent, backend), [])]
        ok = scored(jobs)
        batch = is_batch(config, backend)
        latencies = [] if batch else [j.latency_ms for j in ok if j.latency_ms is not None]
        accuracy = mean_or_none([j.score for j in ok])
        cost = sum(j.cost_usd or 0.0 for j in jobs)
        judge = total(facts.judge.get((agent, backend), NOTHING) for agent in facts.agents)
        rows.append({
            "backend": backend,
            "mode": "batch" if batch else "realtime",
            "role": config.get(backend, {}).get("role"),
            "jobs": len(jobs),
            "n": len(ok),
            "accuracy": accuracy,
            "latency_ms": {f"p{q}": percentile(latencies, q) for q in LATENCY_QUANTILES} if latencies else None,
            "cost_usd": cost,
            "judge_cost_usd": judge.usd,
            "total_cost_usd": cost + judge.usd,
            "cost_per_accuracy_point_usd": cost / (accuracy * 100) if accuracy else None,
        })
    return rows


def difficulty_rows(agent: str, backend: str, jobs: list[Any]) -> list[dict]:
    by_difficulty: dict[str, list[Any]] = defaultdict(list)
    for job in jobs:
        by_difficulty[job.difficulty].append(job)
    rank = {name: i for i, name in enumerate(DIFFICULTY_ORDER)}
    rows = []
    for difficulty in sorted(by_difficulty, key=lambda d: (rank.get(d, len(rank)), d)):
        ok = scored(by_difficulty[difficulty])
        rows.append({"agent": agent, "backend": backend, "difficulty": difficulty, "n": len(ok),
                     "accuracy": mean_or_none([j.score for j in ok])})
    return rows


def budget_facts(session: Session, run: Run, jobs: list[Any]) -> dict[str, Any]:
    """The budget is global, so spend counts every ledger row; this run's share is beside it,
    cross-checked against what its jobs recorded."""
    config = BudgetConfig.model_validate((run.config or {}).get("budget") or {})
    recorded = recorded_budget_state(session)
    limit_usd = recorded.limit_usd if recorded.limit_usd is not None else config.limit_usd
    total = func.coalesce(func.sum(CostEntry.cost_usd), 0.0)
    spent = float(session.exec(select(total)).one())
    run_cost = float(session.exec(select(total).where(CostEntry.run_id == run.id)).one())
    fraction = spent / limit_usd
    thresholds = {name: getattr(config, name) for name in ("warning", "critical", "emergency")}
    events = session.exec(
        select(BudgetEvent).where(BudgetEvent.run_id == run.id).order_by(BudgetEvent.at, BudgetEvent.id)
    )
    return {
        "limit_usd": limit_usd,
        "spent_usd": spent,
        "used_fraction": fraction,
        "level": level_of(config, to_micro(spent), to_micro(limit_usd), halted=recorded.halted),
        "halted": recorded.halted,
        "halt_reason": recorded.halt_reason,
        "remaining_usd": max(0.0, limit_usd * config.emergency - spent),  # before the threshold
        "thresholds": thresholds,
        "run_cost_usd": run_cost,
        "jobs_cost_usd": sum(j.cost_usd or 0.0 for j in jobs),
        "events": [
            {"at": iso(e.at), "kind": e.kind, "level": e.level, "spent_usd": e.spent_usd,
             "limit_usd": e.limit_usd, "message": e.message}
            for e in events
        ],
    }
