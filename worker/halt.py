"""The Celery side of a budget halt: workers stop taking paid work, queued jobs stay queued.

Only the provider queues are stopped; `reports` keeps running so chord callbacks still build
the report of what finished. The queues are named after the providers (worker.app declares
them the same way; importing it here would be circular, since worker.app imports this module).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from shared.budget import BudgetGuard
from shared.config import PROVIDERS, get_settings

log = logging.getLogger("genesis.halt")


def stop_provider_consumers(app: Celery) -> None:
    """Every worker, on every host, cancels its provider consumers (a broadcast)."""
    for queue in PROVIDERS:
        app.control.cancel_consumer(queue)


def restore_provider_consumers(app: Celery) -> None:
    for queue in PROVIDERS:
        app.control.add_consumer(queue)


@worker_ready.connect
def keep_provider_queues_stopped_while_halted(sender: Any, **_: Any) -> None:
    """A worker started during a halt must not consume paid work either; `sender` is its consumer."""
    settings = get_settings()
    try:
        halted = BudgetGuard(redis.Redis.from_url(settings.redis_url), settings).is_halted()
    except Exception:  # noqa: BLE001 — the worker still starts; reservations stay refused while halted
        log.exception("could not read the budget halt flag at worker start")
        return
    if halted:
        log.warning("budget is halted: not consuming the provider queues %s", ", ".join(PROVIDERS))
        for queue in PROVIDERS:
            sender.cancel_task_queue(queue)
