"""A run as the tests drive it and read it back: the `producer` CLI in this process, submit and
wait for the report, then what SQL, the ledger and the simulator hold of the run."""

from __future__ import annotations

import json

from sqlmodel import select

from tests.support.waiting import wait_for


def producer(*args: str):
    """The `producer` CLI in this process, as a user would run it (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from producer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def submit(*args: str) -> str:
    """`producer submit ARGS --json`, which must succeed; the new run's id."""
    result = producer("submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def wait_until_reported(run_id: str, timeout: float = 120) -> dict:
    """Poll `status` until the run is final and its report is written."""
    from shared.progress import run_snapshot

    def reported():
        snap = run_snapshot(run_id)
        return snap if snap["status"] in ("completed", "halted", "cancelled") and snap["report"] else None

    return wait_for(reported, timeout=timeout, interval=0.3, what=f"run {run_id} to be reported")


def run_jobs(run_id: str) -> list:
    """The run's jobs in SQL, by id."""
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return list(session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)).all())


def ledger_rows(run_id: str) -> list:
    """The run's ledger entries in SQL."""
    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        return list(session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all())


def running_on(run_id: str, hostname: str) -> set[int]:
    """Jobs SQL says `hostname` is running now."""
    from shared.db import session_scope
    from shared.models import Job, JobStatus

    with session_scope() as session:
        return set(session.exec(select(Job.id).where(
            Job.run_id == run_id, Job.status == JobStatus.running, Job.worker == hostname)).all())


def ledger_figures(run_id: str) -> dict:
    """What the ledger holds for a run, and which jobs were called more than once."""
    from sqlalchemy import func

    from shared.db import session_scope
    from shared.models import CostEntry, Job

    with session_scope() as session:
        entries = session.exec(select(CostEntry.job_id).where(CostEntry.run_id == run_id)).all()
        repeated = set(session.exec(select(Job.id).where(Job.run_id == run_id, Job.attempts > 1)).all())
        jobs = session.exec(select(func.count()).select_from(Job).where(Job.run_id == run_id)).one()
    return {"entries": len(entries), "job_entries": len({e for e in entries if e is not None}),
            "unattached": sum(1 for e in entries if e is None), "jobs": jobs, "repeated": repeated}


def served_ok(simulator) -> int:
    """Chat requests the simulator answered with 200: the calls paid for."""
    by_status = simulator.stats()["by_status"]
    return int(by_status.get("200", 0))
