"""A budget halt as the tests watch it settle and lift: the queues' lengths, the queues each
worker consumes (over Celery remote control), and "halted, nothing running, every job still
queued has its message in the broker"."""

from __future__ import annotations

import redis

from shared.messaging import REPORTS_QUEUE
from shared.providers import PROVIDER_QUEUES as _PROVIDER_QUEUES
from tests.support.waiting import wait_for

PROVIDER_QUEUES = set(_PROVIDER_QUEUES)
QUEUES = (*_PROVIDER_QUEUES, REPORTS_QUEUE)


def consumed_queues(hostnames: list[str]) -> dict[str, set[str]]:
    """Each worker's queues as it reports them over Celery remote control."""
    from worker.app import app

    replies = app.control.inspect(destination=hostnames, timeout=2.0).active_queues() or {}
    return {host: {q["name"] for q in queues} for host, queues in replies.items()}


def wait_consuming(hostnames: list[str], *, providers: bool, timeout: float = 15) -> dict[str, set[str]]:
    def settled():
        queues = consumed_queues(hostnames)
        if set(queues) != set(hostnames):
            return None
        ok = all(bool(q & PROVIDER_QUEUES) == providers and "reports" in q for q in queues.values())
        return queues if ok else None

    return wait_for(settled, timeout=timeout, interval=0.2, what=f"workers consuming provider queues={providers}")


def queue_lengths(redis_url: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url)
    return {name: client.llen(name) for name in QUEUES}


def jobs_by_status(run_id: str) -> dict[str, int]:
    from shared.lifecycle import job_counts

    return {str(status): n for status, n in job_counts(run_id).items()}


def halt_settled(run_id: str, simulator, redis_url: str) -> dict[str, int] | None:
    """The run's job counts once it halted and settled: nothing running (in SQL or at the
    simulator), and every job still queued has its message on `mistral`; else None."""
    counts = jobs_by_status(run_id)
    if counts.get("running") or simulator.stats()["in_flight"]:
        return None
    if counts.get("queued", 0) != queue_lengths(redis_url)["mistral"]:
        return None
    return counts if counts.get("halted") else None
