"""`producer limits`: what the fleet's rate limiter knows, per provider (or endpoint) and model:
the limits the provider stated (which header, when), the configured ceiling, the rate in force,
calls and 429s of the last minute; and a note wherever a ceiling holds the fleet below what the
provider allows. Read from Redis, so it covers every worker on every host."""

from __future__ import annotations

from datetime import datetime, timezone

import typer
from rich.markup import escape
from rich.table import Table

from producer.output import JsonOpt, console, emit_json
from shared.config import get_settings


def register(app: typer.Typer) -> None:
    app.command("limits")(limits)


def limits(as_json: JsonOpt = False) -> None:
    """Learned rate limits, ceilings, current rates and 429s per provider, model and key pool."""
    import redis  # here, not at import: `producer runs` and `status` load no Redis client

    from shared.limiter import RateLimiter

    settings = get_settings()
    views = RateLimiter(redis.Redis.from_url(settings.redis_url), settings).buckets()
    rows = [_row(view) for view in views]
    if as_json:
        emit_json({"buckets": rows})
        return
    if not rows:
        console.print("No limits learned yet: no call has been made since Redis started.")
        return
    table = Table("provider", "model", "pool", "stated rpm/tpm", "ceiling rpm/tpm", "in force rpm/tpm", "calls/min",
                  "429s/min")
    for row in rows:
        stated, ceiling, in_force = row["stated"], row["ceiling"], row["in_force"]
        table.add_row(escape(row["scope"]), escape(row["model"]), escape(row["pool"] or "-"),
                      f"{stated['rpm'] or '-'}/{stated['tpm'] or '-'}{_split(stated['input_tpm'], stated['output_tpm'])}",
                      f"{ceiling['rpm'] or '-'}/{ceiling['tpm'] or '-'}{_split(ceiling['itpm'], ceiling['otpm'])}",
                      f"{in_force['rpm'] or 'unlimited'}/{in_force['tpm'] or 'unlimited'}"
                      f"{_split(in_force['itpm'], in_force['otpm'])}",
                      f"{row['calls_last_minute']:.0f}", f"{row['rate_limited_last_minute']:.0f}")
    console.print(table)
    for row in rows:
        said = [_stated(row, unit) for unit in ("rpm", "tpm") if row["stated"][unit]]
        for line in ([f"stated {'; '.join(said)}"] if said else []) + row["notes"]:
            pool = f" pool {row['pool']}" if row["pool"] else ""
            console.print(escape(f"{row['scope']} {row['model']}{pool}: {line}"), highlight=False, soft_wrap=True)


def _row(view) -> dict:
    learned, ceiling = view.learned, view.ceiling
    notes = []
    for unit, stated, capped in (("rpm", learned.rpm, ceiling.rpm), ("tpm", learned.tpm, ceiling.tpm),
                                 ("itpm", learned.input_tpm, ceiling.itpm), ("otpm", learned.output_tpm, ceiling.otpm)):
        if stated and capped and capped < stated:
            notes.append(f"the ceiling {unit} = {capped} is below the {stated} the provider allows "
                         f"(raise or remove [limits.\"{view.scope}\"] {unit})")
    if learned.silent:
        notes.append("the endpoint states no limits: paced by its 429s (AIMD)"
                     + (f", now {learned.aimd_rpm} rpm" if learned.aimd_rpm else ""))
    return {
        "scope": view.scope,
        "model": view.model,
        "pool": view.pool or None,  # the key pool: its `pools` name, else its variable's
        "stated": {
            "rpm": learned.rpm, "rpm_header": learned.rpm_source or None, "rpm_at": _at(learned.rpm_at_ms),
            "tpm": learned.tpm, "tpm_header": learned.tpm_source or None, "tpm_at": _at(learned.tpm_at_ms),
            "input_tpm": learned.input_tpm, "output_tpm": learned.output_tpm,
        },
        "silent": learned.silent,
        "aimd_rpm": learned.aimd_rpm,
        "ceiling": {"rpm": ceiling.rpm, "tpm": ceiling.tpm, "itpm": ceiling.itpm, "otpm": ceiling.otpm,
                    "max_in_flight": ceiling.max_in_flight},
        # itpm / otpm: input and output tokens apart (Anthropic's), which then replace tpm's learned rate
        "in_force": dict(zip(("rpm", "tpm", "itpm", "otpm"), (rate or None for rate in view.in_force))),
        "calls_last_minute": round(view.calls_last_minute, 1),
        "rate_limited_last_minute": round(view.refusals_last_minute, 1),
        "notes": notes,
    }


def _split(input_tpm: int | None, output_tpm: int | None) -> str:
    """Separate input/output token limits, when there are any: ' in N out M'."""
    return f" in {input_tpm or '-'} out {output_tpm or '-'}" if input_tpm or output_tpm else ""


def _stated(row: dict, unit: str) -> str:
    stated = row["stated"]
    return f"{unit} {stated[unit]} by {stated[unit + '_header']} at {stated[unit + '_at'][11:19]} UTC"


def _at(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else None
