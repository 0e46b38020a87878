"""Real parts for integration tests and benchmarks: Redis, Celery worker processes, the
simulator, and an environment that points them all at each other."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import redis

ROOT = Path(__file__).resolve().parent.parent
# Redis-level unit tests (budget guard, limiter) use their own db (no workers), flushed per test.
SCRATCH_REDIS_URL = os.environ.get("GENESIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
    "--save", "", "--appendonly", "no",
]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(url: str = "redis://127.0.0.1:6379/0") -> None:
    """Start a local redis-server when nothing answers (CI machines start one already)."""
    if redis_answers(url):
        return
    if not shutil.which("redis-server"):
        raise RuntimeError("Redis is not answering and redis-server is not installed")
    subprocess.run(REDIS_START, check=True)
    wait_for(lambda: redis_answers(url), timeout=10, what="redis-server to start")


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def producer(*args: str):
    """The `producer` CLI, in this process (its settings come from this process's environment)."""
    from typer.testing import CliRunner

    from producer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def wait_until_reported(run_id: str, timeout: float = 120) -> dict:
    from producer.cli import run_snapshot

    def reported():
        snap = run_snapshot(run_id)
        return snap if snap["status"] in ("completed", "halted", "cancelled") and snap["report"] else None

    return wait_for(reported, timeout=timeout, interval=0.3, what=f"run {run_id} to be reported")


def genesis_env(*, database_url: str, redis_url: str, reports_dir: Path, simulator_url: str | None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the producer and workers; dummy keys are fine for the simulator."""
    env = {
        "GENESIS_DATABASE_URL": database_url,
        "GENESIS_REDIS_URL": redis_url,
        "GENESIS_REPORTS_DIR": str(reports_dir),
        "GENESIS_CONFIG": str(ROOT / "config" / "genesis.toml"),
    }
    if simulator_url:
        env.update({
            "OPENAI_API_KEY": "sk-sim", "ANTHROPIC_API_KEY": "sk-ant-sim", "MISTRAL_API_KEY": "sim",
            "OPENAI_BASE_URL": f"{simulator_url}/v1", "ANTHROPIC_BASE_URL": simulator_url,
            "MISTRAL_BASE_URL": simulator_url,
        })
    env.update(extra or {})
    return env


def use_config(monkeypatch, tmp_path: Path, toml_text: str, redis_url: str) -> None:
    """Point this process's settings at a TOML written for one test, with its own SQLite file."""
    from shared.config import get_settings

    config = tmp_path / "genesis.toml"
    config.write_text(toml_text)
    monkeypatch.setenv("GENESIS_CONFIG", str(config))
    monkeypatch.setenv("GENESIS_REDIS_URL", redis_url)
    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/t.db")
    monkeypatch.setenv("GENESIS_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()


def reconnect_app(app, settings) -> None:
    """Re-point the Celery app at `settings` and drop connections made under earlier ones
    (tests and benchmarks reconfigure one process several times)."""
    from worker.app import celery_config

    app.conf.update(celery_config(settings))
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    app.__dict__.pop("control", None)


class WorkerProcess:
    """`celery -A worker.app worker` in its own process, as a user would start it."""

    def __init__(self, env: dict[str, str], *, name: str = "w1", concurrency: int = 8, pool: str = "threads",
                 queues: str | None = None, log_path: Path | None = None) -> None:
        self.name = name
        self.hostname = f"{name}@genesis-test"
        self.log_path = log_path
        args = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-n", self.hostname,
                "-P", pool, "-c", str(concurrency), "-l", "INFO", "--without-gossip", "--without-mingle"]
        if queues:
            args += ["-Q", queues]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, app, timeout: float = 30) -> "WorkerProcess":
        def pinged() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; log: {self.log_path}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5) or []
            return any(self.hostname in reply for reply in replies)

        wait_for(pinged, timeout=timeout, interval=0.2, what=f"worker {self.name} to answer ping")
        return self

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a host disappears."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# --- faults, for the recovery tests and bench/recovery.py ----------------------------------------

# Recovery timings in seconds rather than minutes (heartbeats, sweeps, leases, call deadline).
FAST_RECOVERY = {
    "GENESIS_RECOVERY__HEARTBEAT_INTERVAL_S": "0.5",
    "GENESIS_RECOVERY__HEARTBEAT_TTL_S": "2",
    "GENESIS_RECOVERY__SWEEP_INTERVAL_S": "1",
    "GENESIS_RECOVERY__LEASE_S": "20",
    "GENESIS_RECOVERY__CLAIM_RETRY_MAX_S": "2",
    "GENESIS_RETRY__CALL_TIMEOUT_S": "10",
}


def _postgres_admin(url: str):
    """A connection to the server's `postgres` database (ALTER DATABASE cannot target the
    database it runs in); only `url`'s own database is ever touched."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def postgres_outage(url: str, seconds: float) -> None:
    """The database of `url` refuses new connections and drops its open ones for `seconds`,
    then answers again (always, even if this is interrupted)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    engine = _postgres_admin(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})
            time.sleep(seconds)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        engine.dispose()


def running_on(run_id: str, hostname: str) -> set[int]:
    """Jobs SQL says `hostname` is running now."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job, JobStatus

    with session_scope() as session:
        return set(session.exec(select(Job.id).where(
            Job.run_id == run_id, Job.status == JobStatus.running, Job.worker == hostname)).all())


def ledger_figures(run_id: str) -> dict:
    """What the ledger holds for a run, and which jobs were called more than once."""
    from sqlalchemy import func
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry, Job

    with session_scope() as session:
        entries = session.exec(select(CostEntry.job_id).where(CostEntry.run_id == run_id)).all()
        repeated = set(session.exec(select(Job.id).where(Job.run_id == run_id, Job.attempts > 1)).all())
        jobs = session.exec(select(func.count()).select_from(Job).where(Job.run_id == run_id)).one()
    return {"entries": len(entries), "job_entries": len({e for e in entries if e is not None}),
            "unattached": sum(1 for e in entries if e is None), "jobs": jobs, "repeated": repeated}


def served_ok(simulator) -> int:
    by_status = simulator.stats()["by_status"]
    return int(by_status.get("200", 0))
