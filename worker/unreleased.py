"""Reservations whose release failed in this process (a Redis blip while a call gave its
reservation back), kept until this process's heartbeat (worker/recovery.py) releases them: a
live worker's failed release then holds budget back for a heartbeat, not until the worker dies
(review M8). If the process dies first, its reservations are its dead incarnation's, which the
recovery sweep reconciles.

List appends and pops are atomic under the GIL: no lock, which a fork could leave held."""

from __future__ import annotations

import logging

log = logging.getLogger("genesis.budget")

_pending: list[tuple[str, str]] = []  # (call key, call id)


def remember(key: str, call_id: str) -> None:
    _pending.append((key, call_id))


def pending() -> bool:
    return bool(_pending)


def release(budget) -> int:
    """Release what `remember` kept, with `budget` (a BudgetGuard); what fails again stays for the
    next beat (and the error is raised). Returns how many were released now."""
    taken = []
    while _pending:
        taken.append(_pending.pop())
    for done, (key, call_id) in enumerate(taken):
        try:
            budget.release(key, call_id)
        except Exception:
            _pending.extend(taken[done:])
            raise
    if taken:
        log.info("released %d reservation(s) whose release had failed", len(taken))
    return len(taken)
