"""Re-runs are not new evidence: the decisions stored in SQL (run_report) for earlier runs of
the same suite, on the same candidate model, baseline model and agent, so a reader sees when a
GO follows earlier non-GO verdicts on the same tasks (running again until GO comes up is
testing many times, at the same error rate each time)."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, select

from shared.models import Run, RunReport, iso
from shared.report.decision import GO, POOLED

MAX_EARLIER_RUNS = 200  # the newest reports of the same suite that are read


def _key(c: dict) -> tuple:
    return (c.get("agent"), c.get("candidate_model"), c.get("baseline_model"))


def _task_ids(c: dict) -> frozenset | None:
    pairs = c.get("pairs")
    return frozenset(p["task_id"] for p in pairs) if pairs is not None else None


def earlier_decisions(session: Session, run: Run, comparisons: list[dict]) -> dict[str, Any]:
    """`rows`: one per earlier matching comparison (newest first); `notes`: GOs that follow
    earlier non-GO verdicts on the same tasks."""
    wanted = {_key(c): c for c in comparisons if c.get("candidate_model") and c.get("baseline_model")}
    if not wanted:
        return {"rows": [], "notes": []}
    stored = session.exec(
        select(RunReport.run_id, Run.created_at, RunReport.data_json)
        .join(Run, Run.id == RunReport.run_id)
        .where(Run.suite == run.suite, Run.id != run.id, Run.created_at <= run.created_at)
        .order_by(Run.created_at.desc())
        .limit(MAX_EARLIER_RUNS)
    ).all()
    tasks_now = {key: _task_ids(c) for key, c in wanted.items()}
    rows = []
    for run_id, created_at, data_json in stored:
        for earlier in json.loads(data_json).get("comparisons", []):
            current = wanted.get(key := _key(earlier))
            if current is None:
                continue
            same_tasks = _task_ids(earlier) == tasks_now[key] if current["agent"] != POOLED else None
            rows.append({"run_id": run_id, "created_at": iso(created_at), "agent": earlier["agent"],
                         "candidate_model": earlier["candidate_model"], "baseline_model": earlier["baseline_model"],
                         "decision": earlier["decision"], "improvement_abs": earlier.get("improvement_abs"),
                         "same_tasks": same_tasks})
    notes = []
    for key, current in wanted.items():
        before = [r for r in rows if (r["agent"], r["candidate_model"], r["baseline_model"]) == key]
        not_go = [r for r in before if r["decision"] != GO and r["same_tasks"] in (True, None)]
        if current["decision"] == GO and not_go:
            who = "all agents pooled" if current["agent"] == POOLED else current["agent"]
            notes.append(f"{who}: this GO follows {len(not_go)} earlier non-GO verdict(s) on the same tasks "
                         f"({', '.join(r['run_id'] for r in not_go[:5])}): each run has its own "
                         f"{1 - current['confidence']:.0%} chance of a false GO, so repeated runs until one says "
                         "GO are not new evidence.")
    return {"rows": rows, "notes": notes}
