"""Counters only workers see (limiter waits, 429s, provider errors), kept in one Redis hash
so the one metrics endpoint (shared/metrics.py) reports every worker on every host.
No Prometheus import here: workers run without the [monitor] extra."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger("genesis.counters")

COUNTERS_KEY = "genesis:metrics:counters"

# event -> (metric name, help, label names after "provider")
EVENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "limiter_wait": ("genesis_limiter_waits",
                     "Limiter checks answered 'wait' (a call that waits twice counts twice).", ()),
    "rate_limited": ("genesis_provider_rate_limited", "Provider answers 429 (rate limited).", ()),
    "provider_error": ("genesis_provider_errors", "Failed provider calls, by kind of failure.", ("kind",)),
    "bogus_limit_header": ("genesis_bogus_limit_headers",
                           "Rate-limit headers ignored as bogus (a limit of 0, a non-number, a reset "
                           "in the past or hours away), by header.", ("header",)),
}


def count(client: redis.Redis, event: str, provider: str, *labels: str) -> None:
    """Bump a counter; never raises (a metric must not fail a job)."""
    try:
        client.hincrby(COUNTERS_KEY, "|".join((event, provider, *labels)), 1)
    except redis.RedisError:
        log.debug("counter %s not recorded", event, exc_info=True)


def count_failure(client: redis.Redis, provider: str, kind: str, status: int | None) -> None:
    """One failed provider call: an error by kind, and a 429 counted on its own."""
    count(client, "provider_error", provider, kind)
    if status == 429 or kind == "rate_limit":
        count(client, "rate_limited", provider)


def read(client: redis.Redis) -> list[tuple[str, list[str], int]]:
    """Every counter as (event, labels with provider first, value)."""
    rows = []
    for field, value in client.hgetall(COUNTERS_KEY).items():
        event, *labels = field.decode().split("|")
        if event in EVENTS and len(labels) == 1 + len(EVENTS[event][2]):
            rows.append((event, labels, int(value)))
    return rows
