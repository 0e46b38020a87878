"""A run's progress from SQL: what `producer status` shows, what `--wait` polls, and what the
benchmarks and tests watch. Kept light (no SDK, report, Redis or Celery code) so a status
answers without their imports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from shared.batches import run_batches
from shared.config import ConfigError
from shared.db import session_scope
from shared.looks import UNRELEASED
from shared.models import CostEntry, Job, JobStatus, Run


def run_snapshot(run_id: str) -> dict[str, Any]:
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise ConfigError(f"unknown run {run_id!r}")
        # One grouped query, answered from the index ix_job_run_progress alone (10,000 jobs: ~2 ms).
        rows = session.exec(
            select(Job.backend, Job.status, func.count(), func.min(Job.started_at), func.max(Job.finished_at))
            .where(Job.run_id == run_id).group_by(Job.backend, Job.status)
        ).all()
        spent = session.exec(select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0)).where(CostEntry.run_id == run_id)).one()
        starts = [first for *_, first, _ in rows if first is not None]
        finishes = [last for *_, last in rows if last is not None]
        first_start, last_finish = min(starts, default=None), max(finishes, default=None)
        run_status, created, total = run.status, run.created_at, run.total_jobs
        epochs = int(((run.config or {}).get("decision") or {}).get("epochs") or 1)  # submit --epochs
        report = run.report_path if run.report_path and Path(run.report_path).exists() else None
        report_ready = run.report_path is not None  # possibly on another host: SQL holds it
        batches = run_batches(session, run_id)
        looks = _agent_looks(session, run_id) if run.look is not None else None
    # A fixed run has no looks: its statuses are the five it always had.
    by_status = {s.value: 0 for s in JobStatus if looks is not None or s not in UNRELEASED}
    by_backend: dict[str, dict[str, int]] = {}
    for backend, status, n, _, _ in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_backend.setdefault(backend, {})[status] = n
    finished = by_status["ok"] + by_status["error"]
    elapsed = ((last_finish or created) - (first_start or created)).total_seconds() if first_start else 0.0
    rate = finished / elapsed if elapsed > 0 else 0.0
    remaining = by_status["queued"] + by_status["running"]
    return {
        "batches": batches, "run_id": run_id, "status": run_status, "total": total, "epochs": epochs,
        "by_status": by_status, "by_backend": by_backend,
        "spent_usd": round(float(spent), 6), "report": report, "report_ready": report_ready, "jobs_per_s": round(rate, 2),
        "eta_s": round(remaining / rate, 1) if rate and remaining else None, "active": remaining > 0,
        "looks": looks,
    }


def _agent_looks(session, run_id: str) -> dict[str, Any]:
    """A sequential run: the run's look, the largest number of looks, and per agent the look it
    is on (the latest released to it), whether it stopped (jobs not needed) and those jobs."""
    run = session.get(Run, run_id)
    rows = session.exec(
        select(Job.agent, func.max(Job.look)).where(Job.run_id == run_id, Job.status.not_in(UNRELEASED))
        .group_by(Job.agent)
    ).all()
    skipped = dict(session.exec(
        select(Job.agent, func.count()).where(Job.run_id == run_id, Job.status == JobStatus.not_needed)
        .group_by(Job.agent)
    ).all())
    planned = int(((run.config or {}).get("decision") or {}).get("looks") or 1)
    return {"look": run.look, "looks": planned,
            "agents": {agent: {"look": look, "stopped": agent in skipped, "not_needed": skipped.get(agent, 0)}
                       for agent, look in sorted(rows)}}


def looks_line(looks: dict[str, Any] | None) -> str | None:
    """`look 2 of 5: qa look 1 (stopped, 8 not needed), legal look 2, ...` (None: a fixed run)."""
    if not looks:
        return None
    agents = ", ".join(f"{agent} look {a['look']}" + (f" (stopped, {a['not_needed']} not needed)" if a["stopped"] else "")
                       for agent, a in looks["agents"].items())
    return f"look {looks['look']} of {looks['looks']}: {agents}"
