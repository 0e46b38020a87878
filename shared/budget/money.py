"""Budget amounts as integer micro-dollars, so Python and the Lua scripts add and round alike."""

from __future__ import annotations

import math

MICRO = 1_000_000


def to_micro(usd: float) -> int:
    return math.floor(usd * MICRO + 0.5)


def to_usd(micro: int) -> float:
    return round(micro / MICRO, 6)


def threshold(limit: int, ratio: float) -> int:
    """A share of the limit, rounded like the Lua scripts round the cap (see lua.CAP)."""
    return math.floor(limit * ratio + 0.5)
