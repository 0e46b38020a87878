"""A run as the tests drive it and read it back: the `producer` CLI in this process, submit and
wait for the report, then what SQL, the ledger and the simulator hold of the run."""

from __future__ import annotations

import json
import re
from collections import Counter

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


def batch_rows(run_id: str | None = None) -> list:
    """The provider batches that hold or held a run's jobs (every batch when None), by id."""
    from shared.db import session_scope
    from shared.models import Job, ProviderBatch

    with session_scope() as session:
        query = select(ProviderBatch)
        if run_id is not None:
            query = query.where(ProviderBatch.id.in_(select(Job.provider_batch_id).where(Job.run_id == run_id)))
        return list(session.exec(query.order_by(ProviderBatch.id)).all())


def all_batched(run_id: str, jobs: int, state: str = "submitted") -> list | None:
    """The run's batches once they hold `jobs` jobs and every one is in `state`, else None."""
    rows = batch_rows(run_id)
    return rows if rows and sum(b.job_count for b in rows) >= jobs and all(b.state == state for b in rows) else None


def run_ledger(run_id: str) -> tuple[int, float]:
    """How many ledger entries a run has, and their sum."""
    from sqlalchemy import func

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        n, total = session.exec(select(func.count(), func.sum(CostEntry.cost_usd))
                                .where(CostEntry.run_id == run_id)).one()
    return n, total or 0.0


def inference_entries(run_id: str) -> dict[int | None, int]:
    """Ledger entries of a run's inference by job (None: paid but not attached to a job)."""
    from collections import Counter

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        rows = session.exec(select(CostEntry.job_id).where(CostEntry.run_id == run_id,
                                                           CostEntry.operation == "inference")).all()
    return dict(Counter(rows))


def ledger_rows(run_id: str) -> list:
    """The run's ledger entries in SQL."""
    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        return list(session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all())


def running_on(run_id: str | None, hostname: str) -> set[int]:
    """Jobs SQL says `hostname` is running now, of one run (of every run when None)."""
    from shared.db import session_scope
    from shared.models import Job, JobStatus

    query = select(Job.id).where(Job.status == JobStatus.running, Job.worker == hostname)
    if run_id is not None:
        query = query.where(Job.run_id == run_id)
    with session_scope() as session:
        return set(session.exec(query).all())


def ledger_figures(run_id: str) -> dict:
    """What the ledger holds for a run, and which jobs were called more than once."""
    from sqlalchemy import func

    from shared.db import session_scope
    from shared.models import CostEntry, Job

    with session_scope() as session:
        rows = session.exec(select(CostEntry.job_id, CostEntry.source).where(CostEntry.run_id == run_id)).all()
        entries = [job_id for job_id, _ in rows]
        repeated = set(session.exec(select(Job.id).where(Job.run_id == run_id, Job.attempts > 1)).all())
        jobs = session.exec(select(func.count()).select_from(Job).where(Job.run_id == run_id)).one()
    return {"entries": len(entries), "job_entries": len({e for e in entries if e is not None}),
            "unattached": sum(1 for e in entries if e is None), "jobs": jobs, "repeated": repeated,
            "unknown": sum(1 for _, source in rows if source.startswith("outcome unknown"))}


def served_ok(simulator) -> int:
    """Chat requests the simulator answered with 200: the calls paid for."""
    by_status = simulator.stats()["by_status"]
    return int(by_status.get("200", 0))


def served_billed(simulator) -> int:
    """Every answer the simulator billed: chat 200s and the requests its batches answered
    (a batch counts them once it ends, which its first read after its delay makes happen)."""
    return served_ok(simulator) + int(simulator.stats()["batch"]["succeeded"])


def payments_by_job(run_id: str | None = None) -> Counter:
    """Ledger rows per (job, operation), of one run or of all: an unattached row counts for the
    job its source names ("... job N)"), as the ledger writes it for a call a job paid."""
    from shared.db import session_scope
    from shared.models import CostEntry

    query = select(CostEntry.job_id, CostEntry.operation, CostEntry.source)
    if run_id is not None:
        query = query.where(CostEntry.run_id == run_id)
    with session_scope() as session:
        rows = session.exec(query).all()
    payments: Counter = Counter()
    for job_id, operation, source in rows:
        named = re.search(r"job (\d+)\)$", source or "")
        payments[(job_id or (int(named.group(1)) if named else None), operation)] += 1
    return payments


def paid_twice_jobs(run_id: str | None = None) -> set[int | None]:
    """Jobs paid more than once for one operation (ledger rows, attached or naming the job;
    None stands for the unattached rows that name no job)."""
    return {job for (job, _), n in payments_by_job(run_id).items() if n > 1}


def paid_call_figures(run_id: str, simulator, app=None) -> dict:
    """One row of the paid-call fault table: paid calls the simulator served (200s), ledger
    entries, jobs paid more than once for one operation, and call helper threads still alive
    on the workers."""
    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        sources = session.exec(select(CostEntry.source).where(CostEntry.run_id == run_id)).all()
    threads = {"callers": 0, "late": 0}
    if app is not None:
        for reply in app.control.broadcast("genesis_call_threads", reply=True, timeout=1.0) or []:
            for counts in reply.values():
                for name in threads:
                    threads[name] += counts.get(name, 0)
    return {"served": served_ok(simulator), "entries": len(sources),
            "unknown": sum(1 for source in sources if (source or "").startswith("outcome unknown")),
            "paid_twice": len(paid_twice_jobs(run_id)),
            "threads_late": threads["late"], "threads": threads["callers"]}


def print_fault_row(fault: str, figures: dict) -> None:
    """The row `pytest -s tests/test_paid_calls.py` prints for the fault table."""
    print(f"\n| {fault} | {figures['served']} | {figures['entries']} ({figures['unknown']} outcome unknown) | "
          f"{figures['paid_twice']} | {figures['threads_late']} late, {figures['threads']} serving |")


def one_job_run(*, status: str = "running", **job_fields) -> int:
    """A run (genesis-custom, in flight) of one qa/openai job, straight into SQL, for tests of
    the job transitions and the journal; returns the job's id."""
    from shared.db import migrate, session_scope
    from shared.models import Job, Run, RunStatus

    migrate()
    with session_scope() as session:
        session.add(Run(id="r1", suite="genesis-custom", status=RunStatus.running, total_jobs=1))
        session.flush()
        job = Job(run_id="r1", agent="qa", task_id="qa-001", backend="openai", provider="openai",
                  model="gpt-4o-mini", status=status, **job_fields)
        session.add(job)
        session.flush()
        return job.id


def one_line_error(result, code: int = 2) -> str:
    """A refused command's whole message: exit `code`, one `error:` line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]
