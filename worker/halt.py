"""The Celery side of a budget halt: workers stop taking paid work, queued jobs stay queued.

Only the provider queues are stopped; `reports` keeps running so chord callbacks still build
the report of what finished. The queues are named after the providers (worker.app declares
them the same way; importing it here would be circular, since worker.app imports this module).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from shared.budget import BudgetGuard
from shared.config import PROVIDERS, get_settings

log = logging.getLogger("genesis.halt")


CONSUMERS_KEY = "genesis:halt:consumers"  # hostname -> the provider queues it consumes at start


def stop_provider_consumers(app: Celery) -> None:
    """Every worker, on every host, cancels its provider consumers (a broadcast)."""
    for queue in PROVIDERS:
        app.control.cancel_consumer(queue)


def restore_provider_consumers(app: Celery) -> None:
    """Give each worker back the provider queues it had: a `-Q reports` worker, or one on a
    host without a provider's key, must not start taking that provider's jobs."""
    client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    recorded = client.hgetall(CONSUMERS_KEY)
    if not recorded:
        log.warning("no record of which worker consumed which queue: restoring every provider queue everywhere")
        for queue in PROVIDERS:
            app.control.add_consumer(queue)
        return
    for hostname, queues in recorded.items():
        for queue in json.loads(queues):
            app.control.add_consumer(queue, destination=[hostname])


@worker_ready.connect
def keep_provider_queues_stopped_while_halted(sender: Any, **_: Any) -> None:
    """Records which provider queues this worker consumes (for a later restore); a worker
    started during a halt must not consume paid work either. `sender` is its consumer."""
    settings = get_settings()
    provider_queues = [q.name for q in sender.task_consumer.queues if q.name in PROVIDERS]
    try:
        client = redis.Redis.from_url(settings.redis_url)
        client.hset(CONSUMERS_KEY, sender.hostname, json.dumps(provider_queues))
        halted = BudgetGuard(client, settings).is_halted()
    except Exception:  # noqa: BLE001 — the worker still starts; reservations stay refused while halted
        log.exception("could not read the budget halt flag at worker start")
        return
    if halted:
        log.warning("budget is halted: not consuming the provider queues %s", ", ".join(provider_queues))
        for queue in provider_queues:
            sender.cancel_task_queue(queue)
