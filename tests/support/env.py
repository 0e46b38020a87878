"""Where things are and how the processes of a test find each other: the repository root, the
services' URLs (GENESIS_TEST_* variables, so checkouts side by side use their own Redis and
database), and the environment shared by the producer (this process) and its workers."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Flushed per test by the `redis_url` fixture; workers and the producer meet there.
INTEGRATION_REDIS_URL = os.environ.get("GENESIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# Redis-level tests (budget guard, limiter) use their own db (no workers), flushed per test.
SCRATCH_REDIS_URL = os.environ.get("GENESIS_TEST_SCRATCH_REDIS_URL", "redis://127.0.0.1:6379/12")
# A second deployment's Redis (its own queues and budget), beside the first: tests of two
# deployments sharing one provider account. Another db on the integration server, flushed per test.
SECOND_REDIS_URL = os.environ.get("GENESIS_TEST_SECOND_REDIS_URL", INTEGRATION_REDIS_URL.rsplit("/", 1)[0] + "/14")
POSTGRES_URL = os.environ.get("GENESIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Recovery timings in seconds rather than minutes (heartbeats, sweeps, leases, call deadline).
FAST_RECOVERY = {
    "GENESIS_RECOVERY__HEARTBEAT_INTERVAL_S": "0.5",
    "GENESIS_RECOVERY__HEARTBEAT_TTL_S": "2",
    "GENESIS_RECOVERY__SWEEP_INTERVAL_S": "1",
    "GENESIS_RECOVERY__LEASE_S": "20",
    "GENESIS_RECOVERY__CLAIM_RETRY_MAX_S": "2",
    "GENESIS_RETRY__CALL_TIMEOUT_S": "10",
}


# Batch mode's small batches, due fast, polled often (the `batch_knobs` fixture sets them).
BATCH_KNOBS = {"GENESIS_BATCH__MAX_WAIT_S": "1", "GENESIS_BATCH__POLL_MIN_S": "0.3",
               "GENESIS_BATCH__POLL_MAX_S": "1", "GENESIS_BATCH__MAX_JOBS": "25"}
BATCH_BACKENDS = ("mistral-ft", "mistral-base", "openai", "anthropic")  # every backend of config/genesis.toml


def batch_mode(monkeypatch, *backends: str) -> None:
    """These backends send their jobs through their provider's batch API (this process, and the
    workers started after)."""
    from shared.config import get_settings

    for backend in backends:
        monkeypatch.setenv(f"GENESIS_BACKENDS__{backend.upper()}__MODE", "batch")
    get_settings.cache_clear()


def genesis_env(*, database_url: str, redis_url: str, reports_dir: Path, simulator_url: str | None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the producer and workers; dummy keys are fine for the simulator."""
    env = {
        "GENESIS_DATABASE_URL": database_url,
        "GENESIS_REDIS_URL": redis_url,
        "GENESIS_REPORTS_DIR": str(reports_dir),
        "GENESIS_RECOVERY__JOURNAL_DIR": str(reports_dir.parent / "journal"),  # the workers' host: this one
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
    monkeypatch.setenv("GENESIS_RECOVERY__JOURNAL_DIR", str(tmp_path / "journal"))
    get_settings.cache_clear()
