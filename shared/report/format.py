"""How numbers read in the report (markdown and HTML alike)."""

from __future__ import annotations

from datetime import datetime, timezone


def pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def pp(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} pp"


def ci(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}] pp"


def p_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.6f}"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def date(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def clip(text: str | None, limit: int) -> str:
    """One line, at most `limit` characters."""
    if text is None:
        return "(no answer)"
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
