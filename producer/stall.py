"""`submit --wait` / `status --watch` never wait forever: when no job of the run has finished
for `recovery.stall_after_s`, say so and say what is being recovered (jobs on nodes whose
heartbeat stopped, answers waiting in the journal for the database, no live worker at all);
after `recovery.give_up_after_s` without progress, stop waiting (the run itself goes on). Jobs
waiting in provider batches that are still being polled are waiting, not stalled: a batch may
take the provider's window of hours, and the wait follows it."""

from __future__ import annotations

import time
from collections import Counter

import redis
from sqlmodel import select

from shared import fleet, journal
from shared.batches import polled_lately
from shared.db import session_scope
from shared.models import DONE_JOBS, Job, JobStatus, utcnow

STALLED = "stalled"  # what a wait that gave up reports as the run's status


class StallWatch:
    def __init__(self, run_id: str, settings) -> None:
        self.run_id = run_id
        self.settings = settings
        self.done = -1
        self.last_progress = time.monotonic()
        self.last_said = 0.0

    def observe(self, by_status: dict[str, int] | None, batches: list[dict] | None = None) -> str | None:
        """Feed one snapshot (None when it could not be read; `batches`: its batches); returns a
        line to show, if any."""
        done = sum(by_status.get(s, 0) for s in DONE_JOBS) if by_status is not None else self.done
        now = time.monotonic()
        if done != self.done or self._at_provider(batches):
            self.done, self.last_progress = done, now
            return None
        stalled_for = now - self.last_progress
        if stalled_for < self.settings.recovery.stall_after_s or now - self.last_said < self.settings.recovery.stall_after_s:
            return None
        self.last_said = now
        return f"stalled: no job finished for {stalled_for:.0f}s; {self.describe()}"

    def _at_provider(self, batches: list[dict] | None) -> bool:
        """Jobs wait in batches polled within two of their longest poll intervals (and a stall's
        time): the sweep revives a lost poll chain well within that."""
        if not batches:
            return False
        within_s = 2 * self.settings.batch.poll_max_s + self.settings.recovery.stall_after_s
        return polled_lately(batches, utcnow(), within_s) > 0

    def given_up(self) -> bool:
        return time.monotonic() - self.last_progress >= self.settings.recovery.give_up_after_s

    def describe(self) -> str:
        """What the fleet is doing about it, from SQL and Redis (each part best effort)."""
        parts = []
        try:
            with session_scope() as session:
                rows = session.exec(select(Job.id, Job.status, Job.worker, Job.holder)
                                    .where(Job.run_id == self.run_id)).all()
            running = Counter((w, h or w) for _, s, w, h in rows if s == JobStatus.running)  # (node, incarnation)
            running_ids = {i for i, s, _, _ in rows if s == JobStatus.running}
            queued = sum(1 for _, s, _, _ in rows if s == JobStatus.queued)
        except Exception as exc:  # noqa: BLE001
            return f"the database is not answering ({type(exc).__name__}); workers journal paid answers meanwhile"
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            alive = {k.decode().removeprefix(fleet.NODE_PREFIX) for k in client.scan_iter(f"{fleet.NODE_PREFIX}*")}
            journaled = journal.pending_job_ids(client)
        except redis.RedisError as exc:
            return f"Redis is not answering ({type(exc).__name__}): no worker can take jobs until it is back"
        dead = Counter()
        for (node, holder), n in running.items():
            if holder not in alive:
                dead[node] += n
        if dead:
            who = "being handed back by the recovery sweep" if alive else "handed back once a worker runs the sweep"
            parts.append(", ".join(f"{n} job(s) of {node} (no heartbeat)" for node, n in dead.items()) + f" {who}")
        waiting = len(running_ids) - sum(dead.values())
        if waiting:
            parts.append(f"{waiting} running on live workers")
        mine = len(journaled & running_ids)
        if mine:
            parts.append(f"{mine} paid answer(s) waiting in the journal for the database")
        if queued:
            parts.append(f"{queued} queued")
        if not alive:
            parts.append("no worker is alive: start one (worker, or celery -A worker.app worker)")
        return "; ".join(parts) or "nothing in flight"
