"""Recovery without a human (design §10): every worker process keeps a heartbeat in Redis for
its incarnation (shared.fleet: a same-name restart or another prefork child is another holder,
design §12) and takes its turn at a periodic sweep (one sweeper per interval across the fleet) that

1. replays the paid-call journal (Redis' copy) into SQL (answers billed while the database was
   away); a replayed answer still waiting for its judge is handed back and published, to be judged;
2. hands back jobs `running` on an incarnation whose heartbeat stopped, or past their lease, and
   re-publishes them (a dead worker's unacknowledged messages would otherwise wait for
   Redis' one-hour visibility timeout);
3. re-publishes the queued jobs of runs whose messages Redis lost (no run marker);
4. builds the report of runs whose every job is final but that nobody completed (the last
   job's completion step failed, e.g. the database was away at that moment), or, for a
   sequential run whose later looks wait, takes its look step (worker/looks.py);
5. sends again the flush or poll message of provider batches that lost theirs (worker/batches.py);
6. reconciles the budget's reservations with SQL (a dead worker's call in flight is settled
   from the ledger when its answer was recorded, else ledgered at its worst case as `outcome
   unknown`: the provider may have billed it); only then are the dead incarnations forgotten.
Each step is isolated: one that fails does not skip the others, and nothing dead is forgotten
before it was handled.

Besides, every worker process replays its own host's copy of the journal (shared/journal.py)
at start and every half sweep interval, and puts it back into Redis if Redis lost it.

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
from worker import unreleased

log = logging.getLogger("genesis.recovery")


def sweep(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """One pass; returns what it did (for logs and tests). Each step runs on its own: one that
    fails (Redis or SQL away, a bug) is logged and the others still run. A dead incarnation is
    forgotten only once its jobs were handed back and published again and its reservations
    reconciled, so a failure anywhere in between leaves it to the next sweep (review M4)."""
    from shared.budget import BudgetGuard

    grace_s = 2 * settings.recovery.heartbeat_interval_s
    budget = BudgetGuard(client, settings)
    steps = _Steps()
    replayed = steps.run("journal replay", journal.replay, client, budget.settle, about_the_dead=False)
    done = {"replayed": replayed.count if replayed else 0}
    dead = steps.run("finding dead holders", _dead_holders, client, budget, grace_s) or set()
    by_run = steps.run("handing back lost jobs", _hand_back, client, settings, dead,
                       replayed.needs_judge if replayed else []) or defaultdict(list)
    done["requeued"] = sum(len(jobs) for jobs in by_run.values())
    lost_runs = steps.run("finding runs without messages", _runs_without_messages, client, grace_s, dead) or {}
    for run_id, why in lost_runs.items():
        if steps.run(f"run {run_id}'s queued jobs", _add_queued, by_run, run_id) is not None:
            log.warning("run %s %s: re-enqueueing %d jobs", run_id, why, len(by_run[run_id]))
            done["runs_reenqueued"] = done.get("runs_reenqueued", 0) + 1
    for run_id, jobs in by_run.items():
        if jobs:
            steps.run(f"publishing run {run_id}'s jobs", publish_jobs, run_id, jobs)
    done["reported"] = steps.run("building reports", _report_finished_runs, client,
                                 {run_id for run_id, jobs in by_run.items() if jobs}, grace_s,
                                 about_the_dead=False) or 0
    from worker.batches import resume_batches

    done["batches_resumed"] = steps.run("resuming batches", resume_batches, client, settings,
                                        about_the_dead=False) or 0
    reconciled = steps.run("reconciling the budget", budget.reconcile, dead)  # dead holders' calls in flight
    done["reconciled"] = (len(reconciled.released) + len(reconciled.settled) + len(reconciled.unknown)
                          if reconciled else 0)
    if dead and not steps.failed_about_the_dead:  # what they held is handed back, published, reconciled
        steps.run("forgetting dead holders", fleet.drop_nodes, client, dead)
    done["failed_steps"] = len(steps.failed)
    return done


def replay_host_journal(client: redis.Redis, settings: Settings) -> int:
    """This host's copy of the journal: back into Redis where Redis lost it (other hosts then
    leave its jobs alone), then into SQL; a replayed answer waiting for its judge is published."""
    from shared.budget import BudgetGuard

    journal.mirror(client)
    replayed = journal.replay(client, BudgetGuard(client, settings).settle, local_only=True)
    by_run: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    _to_judge(replayed.needs_judge, by_run)
    for run_id, jobs in by_run.items():
        publish_jobs(run_id, jobs)
    return replayed.count


class _Steps:
    """Runs the sweep's steps one by one: a failing step is logged (its driver's words) and
    noted, and returns None; the next step runs all the same. A step `about_the_dead` that
    failed keeps the dead incarnations for the next sweep."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.failed_about_the_dead = False

    def run(self, name: str, step, *args, about_the_dead: bool = True):
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - Redis or SQL away, or a bug: the other steps still run
            self.failed.append(name)
            self.failed_about_the_dead |= about_the_dead
            log.warning("recovery sweep: %s failed (%s); the other steps go on", name, _first_line(exc))
            return None


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's wrapper
    return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"


def _dead_holders(client: redis.Redis, budget, grace_s: float) -> set[str]:
    """Incarnations without a heartbeat (for the grace period) that hold a running job, a
    reservation, or were seen beating and are not yet forgotten."""
    from shared.budget.reconcile import reservation_holders

    candidates = lifecycle.running_holders() | fleet.known_nodes(client) | reservation_holders(budget)
    return fleet.dead_nodes(client, candidates, grace_s)


def _hand_back(client: redis.Redis, settings: Settings, dead: set[str],
               needs_judge: list) -> dict[str, list[tuple[int, str, str]]]:
    """The running jobs handed back because their holder is dead or their lease passed
    (journaled ones stay), and replayed answers waiting for their judge (a delivery runs the
    judge, once: the claim decides), by run."""
    now = fleet.redis_now(client)
    lost = lifecycle.requeue_lost(now, lifecycle.lease_seconds(settings), dead, journal.pending_job_ids(client))
    if dead:
        log.warning("holders without a heartbeat: %s; %d of their jobs handed back", ", ".join(sorted(dead)), len(lost))
    by_run: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for run_id, job_id, provider, backend in lost:
        by_run[run_id].append((job_id, provider, backend))
    _to_judge(needs_judge, by_run)
    return by_run


def _to_judge(jobs: list[lifecycle.ClaimedJob], by_run: dict[str, list[tuple[int, str, str]]]) -> None:
    """Replayed answers waiting for their judge: handed back, for a delivery to run the judge
    (once: the claim decides)."""
    for job in jobs:
        lifecycle.requeue(job)
        by_run[job.run_id].append((job.id, job.provider, job.backend))


def _add_queued(by_run: dict[str, list[tuple[int, str, str]]], run_id: str) -> bool:
    by_run[run_id] = sorted(set(by_run[run_id]) | set(lifecycle.queued_jobs(run_id)))
    return True


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
        from worker.looks import take_look
    for run_id in reported:
        if lifecycle.has_waiting(run_id):  # a sequential run between looks: its look step, not its report
            log.info("run %s: look final; look step by the recovery sweep: %s", run_id, take_look(run_id))
            fleet.forget(client, "report", run_id)
            continue
        publish_report(run_id)
        fleet.forget(client, "report", run_id)
        log.info("run %s: every job final; report built by the recovery sweep", run_id)
    return len(reported)


class Recovery:
    """The heartbeat, sweep and host-journal threads of one worker process, stopped (and joined) by stop().
    The heartbeat keeps this process's incarnation (shared.fleet.incarnation) alive, so only
    the process holding a lease or a reservation can vouch for it; after each beat it releases
    what failed to release here (worker/unreleased.py)."""

    def __init__(self, hostname: str, settings: Settings | None = None) -> None:
        self.hostname = hostname
        self.settings = settings or get_settings()
        self.client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._budget = None  # made on first need: most beats have nothing to release

    def start(self, *, sweeps: bool = True) -> None:
        """`sweeps=False`: the heartbeat only (a prefork child; its parent sweeps)."""
        rec = self.settings.recovery
        lifecycle.use_clock(lambda: fleet.redis_now(self.client))  # a replay's finished_at, on the leases' clock
        self._loop("heartbeat", rec.heartbeat_interval_s, self._beat)
        if sweeps:
            self._loop("sweep", rec.sweep_interval_s / 2, self._maybe_sweep)
            self._loop("journal", rec.sweep_interval_s / 2, lambda: replay_host_journal(self.client, self.settings))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ends its loops; a sweep or replay in progress finishes first (up to timeout_s each)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout_s)
        self.threads.clear()

    def _beat(self) -> None:
        fleet.beat(self.client, fleet.incarnation(self.hostname), self.settings.recovery.heartbeat_ttl_s)
        if unreleased.pending():
            if self._budget is None:
                from shared.budget import BudgetGuard

                self._budget = BudgetGuard(self.client, self.settings)
            unreleased.release(self._budget)

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
                    log.warning("recovery %s failed (%s); retrying in %.1fs", name, _first_line(exc), interval_s)
                self.stopping.wait(interval_s)

        thread = threading.Thread(target=run, name=f"genesis-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()


class RecoveryStep(bootsteps.StartStopStep):
    """Each worker (its main process, under any pool) beats and sweeps while it runs; registered
    on the app by worker/app.py. Starts before the consumer connects, stops at shutdown. A
    prefork child beats for itself (beat_in_child): it, not its parent, holds its calls."""

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


def beat_in_child(hostname: str) -> Recovery:
    """A prefork child's own heartbeat (worker_process_init): a daemon thread of the child, so it
    stops when the child dies even while its parent lives on."""
    recovery = Recovery(hostname)
    recovery.start(sweeps=False)
    return recovery
