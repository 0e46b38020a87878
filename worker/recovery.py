"""Recovery without a human (design §10): every worker process keeps a heartbeat in Redis and
takes its turn at a periodic sweep (one sweeper per interval across the fleet) that

1. replays the paid-call journal into SQL (answers billed while the database was away);
2. hands back jobs `running` on a node whose heartbeat stopped, or past their lease, and
   re-publishes them (a dead worker's unacknowledged messages would otherwise wait for
   Redis' one-hour visibility timeout);
3. re-publishes the queued jobs of runs whose messages Redis lost (no run marker);
4. builds the report of runs whose every job is final but that nobody completed (the last
   job's completion step failed, e.g. the database was away at that moment);
5. reconciles the budget's reservations with SQL (a dead worker's reservation is released, or
   settled from the ledger when its answer was recorded).

Re-publishing goes through the producer's `enqueue`, exactly as `producer resume` does. Every
SQL change is a conditional UPDATE in shared.lifecycle, so overlapping sweeps, workers and
producers agree.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import redis
from celery.signals import worker_ready

from shared import fleet, journal, lifecycle
from shared.config import Settings, get_settings

log = logging.getLogger("genesis.recovery")


def sweep(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """One pass; returns what it did (for logs and tests)."""
    from producer.submit import enqueue
    from shared.budget import BudgetGuard
    from shared.runs import publish_report

    rec = settings.recovery
    grace_s = 2 * rec.heartbeat_interval_s
    budget = BudgetGuard(client, settings)
    done = {"replayed": journal.replay(client, budget.settle)}

    now = fleet.redis_now(client)
    dead = fleet.dead_nodes(client, lifecycle.running_workers(), grace_s)
    lost = lifecycle.requeue_lost(now, lifecycle.lease_seconds(settings), dead, journal.pending_job_ids(client))
    by_run: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for run_id, job_id, provider in lost:
        by_run[run_id].append((job_id, provider))
    done["requeued"] = len(lost)
    if dead:
        log.warning("nodes without a heartbeat: %s; %d of their jobs handed back", ", ".join(sorted(dead)), len(lost))

    unmarked = fleet.runs_without_messages(client, set(lifecycle.runs_in_flight()), grace_s)
    for run_id in unmarked:
        by_run[run_id] = sorted(set(by_run[run_id]) | set(lifecycle.queued_jobs(run_id)))
        log.warning("run %s lost its queue state in Redis: re-enqueueing %d jobs", run_id, len(by_run[run_id]))
    done["runs_reenqueued"] = len(unmarked)

    for run_id, jobs in by_run.items():
        if jobs:
            enqueue(run_id, jobs)
        fleet.forget(client, "run", run_id)

    finished = set(lifecycle.runs_without_unfinished_jobs()) - set(by_run)
    for run_id in fleet.lasting(client, "report", finished, grace_s):
        publish_report(run_id)
        fleet.forget(client, "report", run_id)
        log.info("run %s: every job final; report built by the recovery sweep", run_id)
    reconciled = budget.reconcile()
    done["reconciled"] = len(reconciled.released) + len(reconciled.settled)
    return done


class Recovery:
    """The heartbeat and sweep threads of one worker process (daemon threads: they die with it)."""

    def __init__(self, hostname: str, settings: Settings | None = None) -> None:
        self.hostname = hostname
        self.settings = settings or get_settings()
        self.client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.stopping = threading.Event()

    def start(self) -> None:
        rec = self.settings.recovery
        self._loop("heartbeat", rec.heartbeat_interval_s, self._beat)
        self._loop("sweep", rec.sweep_interval_s / 2, self._maybe_sweep)

    def stop(self) -> None:
        self.stopping.set()

    def _beat(self) -> None:
        fleet.beat(self.client, self.hostname, self.settings.recovery.heartbeat_ttl_s)

    def _maybe_sweep(self) -> None:
        if fleet.take_sweep_turn(self.client, self.hostname, self.settings.recovery.sweep_interval_s):
            done = sweep(self.client, self.settings)
            if any(done.values()):
                log.info("recovery sweep by %s: %s", self.hostname, done)

    def _loop(self, name: str, interval_s: float, step) -> None:
        def run() -> None:
            while not self.stopping.is_set():
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - Redis or SQL away: try again next tick
                    cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's wrapper
                    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
                    log.warning("recovery %s failed (%s: %s); retrying in %.1fs", name, type(cause).__name__,
                                first_line, interval_s)
                self.stopping.wait(interval_s)

        threading.Thread(target=run, name=f"genesis-{name}", daemon=True).start()


@worker_ready.connect
def start_recovery(sender: Any, **_: Any) -> None:
    """Each worker process (the main one, under any pool) beats and sweeps. `sender` is its consumer."""
    Recovery(sender.hostname).start()
