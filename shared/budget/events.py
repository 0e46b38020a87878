"""Budget events: the level a spend is at, and writing an event (SQL row, log line, webhook)."""

from __future__ import annotations

import logging
from datetime import datetime

from shared.config import Settings
from shared.config.tables import BudgetConfig
from shared.db import session_scope
from shared.models import BudgetEvent

from shared.budget.money import threshold, to_usd
from shared.budget.webhook import post_webhook

log = logging.getLogger("genesis.budget")

LOG_LEVELS = {"resume": logging.INFO, "limit": logging.INFO, "critical": logging.ERROR, "halt": logging.ERROR}


def level_of(budget: BudgetConfig, spent: int, limit: int, *, halted: bool = False) -> str:
    """ok / warning / critical / emergency; a halted budget is at emergency whatever it spent
    (the guard halts when the next call's worst case no longer fits under the threshold)."""
    if halted or spent >= threshold(limit, budget.emergency):
        return "emergency"
    if spent >= threshold(limit, budget.critical):
        return "critical"
    if spent >= threshold(limit, budget.warning):
        return "warning"
    return "ok"


def record_event(
    settings: Settings,
    database_url: str,
    kind: str,
    *,
    spent: int,
    limit: int,
    message: str,
    run_id: str | None = None,
    level: str | None = None,
    at: datetime | None = None,
) -> BudgetEvent:
    """`at`: the Redis time of the step that caused it (halt, resume, limit), else now."""
    event = BudgetEvent(
        kind=kind, level=level or level_of(settings.budget, spent, limit), spent_usd=to_usd(spent),
        limit_usd=to_usd(limit), run_id=run_id, message=message, **({"at": at} if at else {}),
    )
    with session_scope(database_url) as session:
        session.add(event)
    log.log(LOG_LEVELS.get(kind, logging.WARNING), "budget %s: spent $%.2f of $%.2f — %s",
            kind, event.spent_usd, event.limit_usd, message)
    if settings.budget.webhook_url:
        post_webhook(settings.budget.webhook_url, event)
    return event
