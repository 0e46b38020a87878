"""bench/chaos.py's core on a tiny seed, so CI runs it: real workers (threads and prefork), real
Redis, the simulator behind the bench's relay, and two fault kinds the code at hand recovers
from exactly once. The bench itself, over every kind and several seeds, is the real check."""

from __future__ import annotations

import pytest

from bench.chaos import broken_invariants, chaos_run
from bench.chaos_faults import fault_plan

KINDS = ["worker SIGKILL", "Redis FLUSHDB"]
DURATION_S = 20


@pytest.mark.workers
@pytest.mark.sockets  # the relay binds a port
def test_a_tiny_chaos_run_injects_its_faults_and_ledgers_every_call_served_once(redis_url, simulator, tmp_path):
    # A seed whose kill comes while the first calls are in flight, and whose flush comes once the
    # sweep has ledgered them, with the run still under way. A Redis loss before a dead worker's
    # calls are reconciled loses them from the ledger in this code (bench/chaos.py shows it).
    def spaced(seed: int) -> bool:
        at = {fault.kind: fault.at_s for fault in fault_plan(seed, DURATION_S, KINDS, [0.0])}
        return 2 < at["worker SIGKILL"] < 4 and at["worker SIGKILL"] + 6 < at["Redis FLUSHDB"] < 11

    seed = next(s for s in range(1000) if spaced(s))

    row = chaos_run(seed, jobs=40, duration=DURATION_S, kinds=KINDS, redis_url=redis_url,
                    database_url=f"sqlite:///{tmp_path / 'chaos.db'}", simulator=simulator, tmp=tmp_path / "chaos")

    assert row["faults"] == {"worker SIGKILL": 1, "Redis FLUSHDB": 1}
    assert (row["runs"], row["jobs"], row["ok"]) == (1, 40, 40)
    assert row["served"] >= 40
    assert broken_invariants(row) == []
