"""The one rule for numbers people type: finite and in range. A CLI option, a GENESIS_*
variable, a TOML key or a simulator knob that is `inf`, `nan` or out of its bounds is refused
with one line (exit 2) before anything is written; the ledger refuses a cost that is not a
finite amount >= 0 however it got there.

- Config models (shared.config, simulator.config) say `model_config = ConfigDict(**FINITE, ...)`
  and bound each field with pydantic's `Field(ge=..., le=...)`.
- CLI options say `typer.Option(parser=number(float, ge=0))`: the same pydantic check, so the
  messages read the same ("Input should be a finite number").
- `is_cost` is what a ledger amount must be (shared.models refuses the write, the budget
  rebuild skips an older damaged row)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable

from pydantic import Field, TypeAdapter, ValidationError

FINITE: dict[str, Any] = {"allow_inf_nan": False}
PORT = {"ge": 0, "le": 65535}  # 0: the system picks a free one


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
    """A ledger amount: a finite number of dollars >= 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
