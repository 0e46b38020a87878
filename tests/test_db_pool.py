"""PostgreSQL connections per worker process are sized from its concurrency, not 10 + 30."""

from __future__ import annotations

import pytest

from tests.support.env import POSTGRES_URL
from tests.support.postgres import ConnectionSampler
from tests.support.runs import submit, wait_until_reported


def test_pool_size_follows_the_threads():
    from shared.db import pool_size_for

    assert [pool_size_for(n) for n in (1, 4, 8, 16, 32, 64)] == [2, 2, 3, 5, 9, 17]


def test_a_sized_pool_never_overflows(monkeypatch):
    import shared.db as db

    monkeypatch.setattr(db, "_engines", {})
    monkeypatch.setattr(db, "_pool_size", db.DEFAULT_POOL_SIZE)
    monkeypatch.setattr(db, "_application_name", db._application_name)
    db.size_pool(5, application_name="genesis-worker test")
    engine = db.get_engine(POSTGRES_URL)
    assert engine.pool.size() == 5 and engine.pool._max_overflow == 0
    assert engine.pool._timeout == db.POOL_TIMEOUT_S
    db.size_pool(3)
    assert db.get_engine(POSTGRES_URL) is not engine and db.get_engine(POSTGRES_URL).pool.size() == 3
    db.get_engine(POSTGRES_URL).dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_16_thread_worker_holds_at_most_its_pool(start_worker, database_url):
    from shared.db import pool_size_for

    worker = start_worker("w1", concurrency=16)
    with ConnectionSampler(database_url) as sampler:
        snap = wait_until_reported(submit("--all-agents", "--limit", "4"))
    assert snap["by_status"]["ok"] == snap["total"] == 80
    name = f"genesis-worker {worker.hostname}"
    assert 0 < sampler.peak[name] <= pool_size_for(16) == 5, sampler.peak
