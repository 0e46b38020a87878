"""The Celery side of a budget halt: workers stop taking paid work, queued jobs stay queued.

Only the queues of paid work are stopped (shared.messaging.job_queues: one per provider, one per
backend with its own endpoint); `reports` keeps running so completion steps still build the
report of what finished. HaltControlStep, a consumer bootstep registered by worker/app.py,
keeps a worker started during a halt off those queues.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, bootsteps
from celery.worker.control import control_command

from shared import lifecycle
from shared.budget import BudgetGuard, BudgetRefused
from shared.config import get_settings
from shared.messaging import RESTORE_COMMAND, job_queues, stop_provider_consumers

log = logging.getLogger("genesis.halt")



# The provider queues this worker process consumed when it started: what a restore gives back.
# Kept in memory, so it survives Redis losing everything.
_own_provider_queues: list[str] = []


def halt_on_refusal(app: Celery, budget: BudgetGuard, job: Any, refused: BudgetRefused, what: str = "call") -> str | None:
    """A reservation the budget refused: the first to see the halt stops every worker's
    provider queues, and the job is stored `halted` (it stays resumable). Returns the job's
    status, or None when a `budget resume` lifted the halt since the refusal and the call now
    fits (the HALT step checks again under the current limit): nothing is halted then."""
    halted = budget.halt(run_id=job.run_id, reason=str(refused), refused_usd=refused.amount_usd,
                         on_first=lambda: stop_provider_consumers(app))
    if halted is None:
        log.info("job %s: refused under the old limit, but a resume made room since; not halted", job.id)
        return None
    lifecycle.finish_halted(job, str(refused) if what == "call" else f"{what}: {refused}")
    if halted:
        log.warning("budget emergency threshold reached on a %s: provider queues halted (%s)", what, refused)
    return "halted"


@control_command(name=RESTORE_COMMAND)
def genesis_restore_provider_queues(state: Any, **_: Any) -> dict:
    for queue in _own_provider_queues:
        state.consumer.call_soon(state.consumer.add_task_queue, queue)
    return {"ok": f"consuming {', '.join(_own_provider_queues) or 'no provider queue'}"}


class HaltControlStep(bootsteps.StartStopStep):
    """Starts once the consumer has its task queues (and again after a reconnection)."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, parent: Any) -> None:
        keep_provider_queues_stopped_while_halted(parent)

    def stop(self, parent: Any) -> None:
        """Nothing runs between start and stop: the queues a halt cancelled stay as they are."""


def keep_provider_queues_stopped_while_halted(sender: Any) -> None:
    """Remembers this worker's provider queues (for a restore: on the first start only, as a
    halt may have cancelled some since); a worker started during a halt must not consume paid
    work either. `sender` is its consumer."""
    paid = set(job_queues(get_settings()))
    if not _own_provider_queues:
        _own_provider_queues[:] = [q.name for q in sender.task_consumer.queues if q.name in paid]
    settings = get_settings()
    try:
        halted = BudgetGuard(redis.Redis.from_url(settings.redis_url), settings).is_halted()
    except Exception:  # noqa: BLE001 — the worker still starts; reservations stay refused while halted
        log.exception("could not read the budget halt flag at worker start")
        return
    if halted:
        log.warning("budget is halted: not consuming the provider queues %s", ", ".join(_own_provider_queues))
        for queue in _own_provider_queues:
            sender.cancel_task_queue(queue)
