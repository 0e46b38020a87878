"""Recovery without a human (design §10): every worker process keeps a heartbeat in Redis and
takes its turn at a periodic sweep (one sweeper per interval across the fleet) that

1. replays the paid-call journal into SQL (answers billed while the database was away); a
   replayed answer still waiting for its judge is handed back and published, to be judged;
2. hands back jobs `running` on a node whose heartbeat stopped, or past their lease, and
   re-publishes them (a dead worker's unacknowledged messages would otherwise wait for
   Redis' one-hour visibility timeout);
3. re-publishes the queued jobs of runs whose messages Redis lost (no run marker);
4. builds the report of runs whose every job is final but that nobody completed (the last
   job's completion step failed, e.g. the database was away at that moment);
5. sends again the flush or poll message of provider batches that lost theirs (worker/batches.py);
6. reconciles the budget's reservations with SQL (a dead worker's call in flight is settled
   from the ledger when its answer was recorded, else ledgered at its worst case as `outcome
   unknown`: the provider may have billed it).

Re-publishing goes through shared.messaging.publish_jobs, exactly as `producer resume` does.
Every SQL change is a conditional UPDATE in shared.lifecycle, so overlapping sweeps, workers and
producers agree. The threads are a worker bootstep (RecoveryStep): started and stopped with the
worker.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import redis
from celery import bootsteps

from shared import fleet, journal, lifecycle
from shared.config import Settings, get_settings
from shared.messaging import all_queues, publish_jobs

log = logging.getLogger("genesis.recovery")


def sweep(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """One pass; returns what it did (for logs and tests)."""
    from shared.budget import BudgetGuard

    grace_s = 2 * settings.recovery.heartbeat_interval_s
    budget = BudgetGuard(client, settings)
    replayed = journal.replay(client, budget.settle)
    done = {"replayed": replayed.count}
    dead, by_run = _jobs_of_dead_runners(client, settings, grace_s)
    for job in replayed.needs_judge:  # its answer is recorded now: a delivery runs its judge (once: the claim decides)
        lifecycle.requeue(job)
        by_run[job.run_id].append((job.id, job.provider, job.backend))
    done["requeued"] = sum(len(jobs) for jobs in by_run.values())
    for run_id, why in _runs_without_messages(client, grace_s, dead).items():
        by_run[run_id] = sorted(set(by_run[run_id]) | set(lifecycle.queued_jobs(run_id)))
        log.warning("run %s %s: re-enqueueing %d jobs", run_id, why, len(by_run[run_id]))
        done["runs_reenqueued"] = done.get("runs_reenqueued", 0) + 1
    for run_id, jobs in by_run.items():
        if jobs:
            publish_jobs(run_id, jobs)
    fleet.drop_nodes(client, dead)  # handled: their messages are published again
    done["reported"] = _report_finished_runs(client, set(by_run), grace_s)
    from worker.batches import resume_batches

    done["batches_resumed"] = resume_batches(client, settings)
    reconciled = budget.reconcile(dead)  # a dead node's calls in flight: ledgered as outcome unknown
    done["reconciled"] = len(reconciled.released) + len(reconciled.settled) + len(reconciled.unknown)
    return done


def _jobs_of_dead_runners(client: redis.Redis, settings: Settings,
                          grace_s: float) -> tuple[set[str], dict[str, list[tuple[int, str, str]]]]:
    """Nodes without a heartbeat, and the running jobs handed back because their node is dead or
    their lease passed (journaled ones stay)."""
    now = fleet.redis_now(client)
    dead = fleet.dead_nodes(client, lifecycle.running_workers() | fleet.known_nodes(client), grace_s)
    lost = lifecycle.requeue_lost(now, lifecycle.lease_seconds(settings), dead, journal.pending_job_ids(client))
    if dead:
        log.warning("nodes without a heartbeat: %s; %d of their jobs handed back", ", ".join(sorted(dead)), len(lost))
    by_run: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for run_id, job_id, provider, backend in lost:
        by_run[run_id].append((job_id, provider, backend))
    return dead, by_run


def _runs_without_messages(client: redis.Redis, grace_s: float, dead: set[str]) -> dict[str, str]:
    """Runs in flight whose queued jobs no message may deliver, with why: their marker is gone
    (Redis lost everything); a node died (the messages it had reserved, or held for a
    countdown, stay unacknowledged for the hour of Redis' visibility timeout, and which ones is
    not recorded: every queued job is published again, and the claim lets only one delivery
    run it); or the broker has held no message all the while a run had queued jobs (lost one
    by one). That last clock is the run's own: a run recorded a moment ago, its messages not yet
    published, is not taken for one whose messages were lost because the broker was idle before."""
    in_flight = set(lifecycle.runs_in_flight())
    lost = {run_id: "lost its queue state in Redis" for run_id in fleet.runs_without_messages(client, in_flight, grace_s)}
    if dead:
        for run_id in in_flight - set(lost):
            lost[run_id] = f"may have had messages on {', '.join(sorted(dead))}"
    waiting = set()
    if fleet.broker_holds_nothing(client, all_queues(get_settings())):
        waiting = lifecycle.runs_with_queued_jobs(in_flight - set(lost))
    for run_id in fleet.lasting(client, "idle", waiting, grace_s):
        lost[run_id] = "has queued jobs but the broker holds no message"
    return lost


def _report_finished_runs(client: redis.Redis, busy: set[str], grace_s: float) -> int:
    """Runs whose every job is final but that nobody completed (the last job's completion step
    failed, e.g. the database was away then) get their report. The report code is imported only
    then: it holds ~20 MB that a sweep with nothing to report never needs."""
    finished = set(lifecycle.runs_without_unfinished_jobs()) - busy
    reported = fleet.lasting(client, "report", finished, grace_s)
    if reported:
        from shared.runs import publish_report
    for run_id in reported:
        publish_report(run_id)
        fleet.forget(client, "report", run_id)
        log.info("run %s: every job final; report built by the recovery sweep", run_id)
    return len(reported)


class Recovery:
    """The heartbeat and sweep threads of one worker process, stopped (and joined) by stop()."""

    def __init__(self, hostname: str, settings: Settings | None = None) -> None:
        self.hostname = hostname
        self.settings = settings or get_settings()
        self.client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        rec = self.settings.recovery
        lifecycle.use_clock(lambda: fleet.redis_now(self.client))  # a replay's finished_at, on the leases' clock
        self._loop("heartbeat", rec.heartbeat_interval_s, self._beat)
        self._loop("sweep", rec.sweep_interval_s / 2, self._maybe_sweep)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ends both loops; a sweep in progress finishes first (up to timeout_s)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout_s)
        self.threads.clear()

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

        thread = threading.Thread(target=run, name=f"genesis-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()


class RecoveryStep(bootsteps.StartStopStep):
    """Each worker (its main process, under any pool) beats and sweeps while it runs; registered
    on the app by worker/app.py. Starts before the consumer connects, stops at shutdown."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.recovery: Recovery | None = None

    def start(self, parent: Any) -> None:
        self.recovery = Recovery(parent.hostname)
        self.recovery.start()

    def stop(self, parent: Any) -> None:
        if self.recovery is not None:
            self.recovery.stop()
            self.recovery = None

    shutdown = stop
