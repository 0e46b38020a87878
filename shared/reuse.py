"""Reuse: a job whose request is identical to an earlier job answered `ok` takes that answer
instead of paying again. The one rule for what may be reused lives here, for the worker (which
takes an answer when it claims a job) and `submit --dry-run --reuse` (which counts the savings).

What counts as an earlier answer: a job with the same request key (provider, model, system,
prompt, max_tokens, every generation setting, and the epoch past the first: shared.calls), status `ok`, that
paid for its own answer (not
itself reused, so reuse never chains), finished within `max_age_days`, as simulated as the
newest answer of the backend asking (a simulator's answer is never a real model's; whether an
endpoint is the simulator is learnt from its answers, never asked). A new fine-tune has a new
model id, hence a new key: it is never reused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from shared.budget import worst_case_cost
from shared.calls import job_request, request_key
from shared.config import Settings
from shared.models import CostEntry, Job, JobStatus, Run, RunStatus, utcnow
from shared.tokens import estimate_prompt_tokens


@dataclass(frozen=True)
class EarlierAnswer:
    job_id: int
    run_id: str
    output: str
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    simulated: bool | None


def _reusable(query, since: datetime):
    """The conditions an earlier job must meet, on a SELECT over job."""
    return (
        query.where(Job.status == JobStatus.ok, col(Job.reused_from_job_id).is_(None), col(Job.output).is_not(None))
        .where(col(Job.finished_at) >= since)
    )


def backend_simulated(session: Session, backend: str) -> bool | None:
    """Whether the newest answer of this backend came from the simulator; None: it never answered
    (then nothing is reused for it: which kind of answer it would give is not known)."""
    return session.exec(
        select(Job.simulated).where(Job.backend == backend, col(Job.simulated).is_not(None))
        .order_by(col(Job.finished_at).desc()).limit(1)
    ).first()


def oldest_allowed(max_age_days: float) -> datetime:
    return utcnow() - timedelta(days=max_age_days)


def find_earlier_answer(session: Session, key: str, *, max_age_days: float, simulated: bool,
                        exclude_job_id: int | None = None) -> EarlierAnswer | None:
    """The newest reusable answer to this request, as simulated as asked, or None."""
    query = (_reusable(select(Job), oldest_allowed(max_age_days))
             .where(Job.request_key == key, Job.simulated == simulated))
    if exclude_job_id is not None:
        query = query.where(Job.id != exclude_job_id)
    job = session.exec(query.order_by(col(Job.finished_at).desc()).limit(1)).first()
    if job is None:
        return None
    return EarlierAnswer(job.id, job.run_id, job.output, job.input_tokens, job.output_tokens, job.latency_ms,
                         job.simulated)


def older_twin(session: Session, key: str, job_id: int, lease_s: float, now: datetime) -> int | None:
    """An older job (smaller id) of a live run with the identical request, queued or being
    paid for right now: waiting for it pays once when two runs overlap. Only older ones are
    waited for, so no two jobs ever wait on each other. `now` is on the Redis clock, the one
    its started_at was written on (shared.fleet.redis_now)."""
    started_after = now - timedelta(seconds=lease_s)
    live = (Job.status == JobStatus.queued) | ((Job.status == JobStatus.running) & (col(Job.started_at) >= started_after))
    query = (
        select(Job.id)
        .join(Run, col(Run.id) == col(Job.run_id))
        .where(Job.request_key == key, Job.id < job_id, live, col(Job.reused_from_job_id).is_(None))
        .where(col(Run.status).in_([RunStatus.queued, RunStatus.running]))
        .limit(1)
    )
    return session.exec(query).first()


def reuse_settings(run: Run) -> tuple[bool, float]:
    """(enabled, max_age_days) as the run was submitted (its config snapshot)."""
    reuse = (run.config or {}).get("reuse") or {}
    return bool(reuse.get("enabled")), float(reuse.get("max_age_days") or 30)


def estimate_savings(session: Session, settings: Settings, selection: Any) -> dict[str, Any]:
    """For `submit --dry-run --reuse`: per backend, how many planned calls an earlier answer
    covers, their worst-case cost (what the estimate no longer reserves) and what those earlier
    answers actually cost when they were paid. Each backend counts only answers as simulated as
    its newest answer, as the workers will."""
    simulated = {backend: backend_simulated(session, backend) for backend in selection.backends}
    planned: dict[str, list[tuple[str, float]]] = {}  # request key -> [(backend, worst case)]
    for agent in selection.agents:
        for backend in selection.backends:
            model = settings.model_for(backend, agent)
            provider = settings.backends[backend].provider
            for task in selection.suite.tasks_for(agent, selection.limit):
                request = job_request(settings, backend, model, task)
                worst = worst_case_cost(settings, model, estimate_prompt_tokens(task.prompt, task.system),
                                        request.max_tokens)
                for epoch in range(1, selection.epochs + 1):  # epoch i reuses epoch i
                    planned.setdefault(request_key(provider, request, epoch), []).append((backend, worst))
    found: dict[tuple[str, bool], float] = {}
    keys = list(planned)
    since = oldest_allowed(settings.reuse.max_age_days)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        rows = session.exec(
            _reusable(select(Job.request_key, Job.simulated, func.max(CostEntry.cost_usd)), since)
            .join(CostEntry, (col(CostEntry.job_id) == col(Job.id)) & (CostEntry.operation == "inference"))
            .where(col(Job.request_key).in_(chunk), col(Job.simulated).is_not(None))
            .group_by(Job.request_key, Job.simulated)
        ).all()
        found.update({(key, bool(sim)): cost for key, sim, cost in rows})
    by_backend: dict[str, dict[str, float]] = {b: {"reused": 0, "saved_usd": 0.0, "paid_before_usd": 0.0}
                                               for b in selection.backends}
    for (key, sim), paid in found.items():
        for backend, worst in planned[key]:
            if simulated[backend] is None or simulated[backend] != sim:
                continue
            row = by_backend[backend]
            row["reused"] += 1
            row["saved_usd"] += worst
            row["paid_before_usd"] += paid or 0.0
    for row in by_backend.values():
        row["saved_usd"] = round(row["saved_usd"], 6)
        row["paid_before_usd"] = round(row["paid_before_usd"], 6)
    return {
        "calls_saved": sum(int(r["reused"]) for r in by_backend.values()),
        "saved_usd": round(sum(r["saved_usd"] for r in by_backend.values()), 6),
        "paid_before_usd": round(sum(r["paid_before_usd"] for r in by_backend.values()), 6),
        "by_backend": by_backend,
    }
