"""Fixtures for integration tests: real Redis (GENESIS_TEST_REDIS_URL, flushed per test), SQLite
in a temp dir or the real PostgreSQL, the simulator on a real port, real `celery worker`
processes. The helpers they are built from live in tests/support, one module per concern."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from tests.support.env import (BATCH_KNOBS, FAST_RECOVERY, INTEGRATION_REDIS_URL, POSTGRES_URL, SCRATCH_REDIS_URL,
                               genesis_env)
from tests.support.postgres import reset_postgres
from tests.support.redis_server import ensure_redis
from tests.support.resources import uses
from tests.support.workers import WorkerProcess

# Marks every test by the fixtures it uses (unit, redis, postgres, ...) and guards the unit tier;
# pytester runs that plugin on test files of tests/test_tiers.py's own.
pytest_plugins = ["tests.support.tiers", "pytester"]


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path: Path) -> str:
    """SQLite by default; tests that also want PostgreSQL parametrize with 'postgres'."""
    if request.param == "postgres":
        reset_postgres(POSTGRES_URL)
        return POSTGRES_URL
    return f"sqlite:///{tmp_path / 'genesis.db'}"


@pytest.fixture
@uses("redis")
def redis_url() -> Iterator[str]:
    ensure_redis(INTEGRATION_REDIS_URL)
    client = redis.Redis.from_url(INTEGRATION_REDIS_URL)
    client.flushdb()
    yield INTEGRATION_REDIS_URL
    client.flushdb()


@pytest.fixture
@uses("redis")
def redis_client():
    """A flushed Redis for Redis-level tests without workers (budget, limiter); settings rebuilt after each."""
    from shared.config import get_settings

    ensure_redis(SCRATCH_REDIS_URL)
    client = redis.Redis.from_url(SCRATCH_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    get_settings.cache_clear()


@pytest.fixture
@uses("simulator")
def simulator():
    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    handle = start_simulator(SimulatorConfig(latency_ms=20, seed=7))
    yield handle
    handle.stop()


@pytest.fixture
def genesis(monkeypatch, tmp_path: Path, database_url: str, redis_url: str, simulator):
    """This process (the producer) and the workers it starts share one environment."""
    from shared.config import get_settings
    from shared.db import migrate

    env = genesis_env(database_url=database_url, redis_url=redis_url, reports_dir=tmp_path / "reports",
                      simulator_url=simulator.url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    migrate(database_url)

    from shared.messaging import reconnect

    reconnect(get_settings())
    yield env
    get_settings.cache_clear()


@pytest.fixture
@uses("workers")
def start_worker(genesis, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    from worker.app import app

    started: list[WorkerProcess] = []

    def start(name: str = "w1", env: dict[str, str] | None = None, **options) -> WorkerProcess:
        """`env` overrides the shared environment for this worker (e.g. its own reports dir)."""
        worker = WorkerProcess({**genesis, **(env or {})}, name=name, log_path=tmp_path / f"{name}.log", **options)
        started.append(worker)
        return worker.wait_ready(app)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def fast_limits(monkeypatch):
    """Runs of a few hundred jobs in seconds, not at the configured requests/min (set before
    start_worker so the workers get it too)."""
    from shared.config import get_settings

    for provider in ("MISTRAL", "OPENAI"):
        monkeypatch.setenv(f"GENESIS_LIMITS__{provider}__RPM", "100000")
        monkeypatch.setenv(f"GENESIS_LIMITS__{provider}__MAX_IN_FLIGHT", "64")
    get_settings.cache_clear()


@pytest.fixture
def fast_recovery(genesis, monkeypatch) -> dict[str, str]:
    """Recovery timings in seconds, for this process and every worker started after it."""
    from shared.config import get_settings

    for key, value in FAST_RECOVERY.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return FAST_RECOVERY


@pytest.fixture
def batch_knobs(monkeypatch) -> dict[str, str]:
    """Batch mode's small batches, due fast, polled often (set before start_worker so workers get them)."""
    from shared.config import get_settings

    for key, value in BATCH_KNOBS.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return BATCH_KNOBS
