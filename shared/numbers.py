"""The one rule for numbers people type: finite and in range. A CLI option, a GENESIS_*
variable, a TOML key or a simulator knob that is `inf`, `nan` or out of its bounds is refused
with one line (exit 2) before anything is written; the ledger refuses a cost that is not a
finite amount >= 0 however it got there.

- Config models (shared.config, simulator.config) say `model_config = ConfigDict(**FINITE, ...)`
  and bound each field with pydantic's `Field(ge=..., le=...)`.
- CLI options say `typer.Option(parser=number(float, ge=0))`: the same pydantic check, so the
  messages read the same ("Input should be a finite number").
- Every amount of money and every limit is at most `MAX_USD`: the budget counters hold integer
  micro-dollars in Redis' 64-bit integers, and a $1e13 entry overflowed them (every later settle
  failed). Config fields and CLI options take `**USD` (or `**LIMIT_USD`); `is_cost` (the ledger's
  write path, fine-tuning costs a provider reports) and `is_limit` hold the same bound.
- `is_cost` is what a ledger amount must be (shared.models refuses the write, the budget
  rebuild skips an older damaged row)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable

from pydantic import Field, TypeAdapter, ValidationError

FINITE: dict[str, Any] = {"allow_inf_nan": False}
PORT = {"ge": 0, "le": 65535}  # 0: the system picks a free one
# The largest amount of money anything here holds: one ledger entry, a budget limit, a price per
# million tokens. Far above any real benchmark's spend, and a sum of millions of them still fits
# the budget counters (int64 micro-dollars: ~$9.2e12).
MAX_USD = 1_000_000
USD: dict[str, float] = {"ge": 0, "le": MAX_USD}  # an amount: a cost, a price
LIMIT_USD: dict[str, float] = {"gt": 0, "le": MAX_USD}  # a budget limit
# The longest wait anything here is configured with (a call's deadline, a lease, a sweep): a year.
# Larger ones overflowed datetime arithmetic (`call_timeout_s = 1e308` broke every claim).
MAX_SECONDS = 366 * 24 * 3600
SECONDS: dict[str, float] = {"gt": 0, "le": MAX_SECONDS}  # a duration in the config
MAX_TASKS = 1_000_000  # `submit --limit`: a count of tasks, not an arbitrary-precision integer
# An answer's token allowance (a task's max_tokens, a backend's cap): ten times the largest output
# any provider offers today (128k), yet a typo of 10**12 tokens no longer reserves a fortune.
MAX_TOKENS = 1_000_000
TOKENS: dict[str, int] = {"gt": 0, "le": MAX_TOKENS}


def number(kind: type = float, **bounds: float) -> Callable[[str], Any]:
    """A Typer `parser=` for an option of type `kind` (float or int) within `bounds`
    (pydantic's ge/gt/le/lt); a bad value is the option's one-line usage error."""
    constraint = Field(**bounds, **(FINITE if kind is float else {}))
    adapter = TypeAdapter(Annotated[kind, constraint])

    def parse(text: str) -> Any:
        import typer  # the CLI's own dependency; shared code never needs it otherwise

        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise typer.BadParameter(f"{exc.errors()[0]['msg']} (got {text!r})") from None

    return parse


def is_cost(value: object) -> bool:
    """A ledger amount: a finite number of dollars, 0 to MAX_USD."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= MAX_USD)


def is_limit(value: object) -> bool:
    """A budget limit: a finite number of dollars above 0, at most MAX_USD."""
    return is_cost(value) and value > 0  # type: ignore[operator]  # is_cost made it a number
