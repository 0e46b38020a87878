"""Retry policy for provider calls, and the rate-limit headers providers send.

Backoff uses *full jitter* (AWS, "Exponential Backoff and Jitter"): a delay drawn uniformly from
[0, min(cap, base * 2**attempt)]. It spreads retries of many workers best for the least total
wait. When the server says how long to wait (retry-after), that wins over the exponential
schedule and over `cap` — the server knows its own bucket — up to MAX_RETRY_AFTER_S, with a
little jitter on top so the workers it turned away do not all come back in the same instant.

Header formats read here (case-insensitive):
- `retry-after-ms` (milliseconds), `retry-after` (seconds, or an HTTP date);
- OpenAI / Mistral: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets written
  as Go durations ("1s", "6m0s", "250ms");
- Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
  resets as RFC 3339 timestamps.
Garbled values are ignored, never raised: a header is advice, not a contract.

Back-pressure (a 429, or Anthropic's 529 "overloaded") is not a failure of the job: the provider
asks us to slow down, not to give up. It sends the job back without spending one of its attempts
(`[retry] max_attempts` bounds real failures: 5xx, network, malformed); what bounds it instead is
the time since the job's first refusal (`[retry] rate_limited_max_s`), kept in Redis so every
worker that takes the job next sees the same clock (`BackPressureClock`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 600.0
# Jitter added to a server-given wait: a tenth of it, kept between 0.1 s and 2 s.
RETRY_AFTER_JITTER_FRACTION = 0.1
RETRY_AFTER_JITTER_MIN_S = 0.1
RETRY_AFTER_JITTER_MAX_S = 2.0
MAX_EXPONENT = 62  # 2.0**62 is finite; beyond it the cap has long since won

# Statuses that mean "slow down", not "this call failed": they do not use up an attempt.
BACK_PRESSURE_STATUSES = frozenset({429, 529})
BACK_PRESSURE_KEY = "genesis:backpressure:{job_id}"
# The clock outlives the bound by this much, then expires by itself (a finished job's is unread).
BACK_PRESSURE_KEEP_S = 600.0

QUOTA_DIMENSIONS: tuple[str, ...] = ("requests", "tokens", "input-tokens", "output-tokens")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def backoff_delay(
    attempt: int,
    *,
    retry_after: float | None,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry)."""
    draw = (rng or random).uniform
    if retry_after is not None and math.isfinite(retry_after):
        wait = min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        spread = min(max(wait * RETRY_AFTER_JITTER_FRACTION, RETRY_AFTER_JITTER_MIN_S), RETRY_AFTER_JITTER_MAX_S)
        return wait + draw(0.0, spread)
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), MAX_EXPONENT))
    return draw(0.0, max(ceiling, 0.0))


def is_back_pressure(status: int | None) -> bool:
    """A refusal that asks us to wait (429 rate limited, 529 overloaded), not a failed call."""
    return status in BACK_PRESSURE_STATUSES


@dataclass(frozen=True)
class Refusals:
    """A job's back-pressure so far: how many refusals, over how long since the first."""

    count: int
    elapsed_s: float

    def exhausted(self, max_s: float) -> bool:
        return self.elapsed_s >= max_s

    def next_delay(self, retry_after: float | None, retry) -> float:
        """The provider's retry-after when it gave one, else backoff growing with the refusals
        (`retry`: the [retry] settings)."""
        return backoff_delay(self.count - 1, retry_after=retry_after, base=retry.backoff_base_s,
                             cap=retry.backoff_max_s)

    def describe(self) -> str:
        return f"rate limited for {self.elapsed_s:.0f} s ({self.count} refusal(s))"


# KEYS: the job's clock.  ARGV: keep ms.  Returns {count, ms since the first refusal}.
_NOTE_REFUSAL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[1], 'since', now)
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local since = tonumber(redis.call('HGET', KEYS[1], 'since'))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {count, now - since}
"""


class BackPressureClock:
    """Per job, on Redis' clock: when its first refusal came and how many followed. Shared by
    every worker (the next delivery may run anywhere); rebuilt from nothing if Redis is lost
    (the bound then starts again, erring towards finishing the job)."""

    def __init__(self, client, max_s: float) -> None:
        self._client = client
        self._keep_ms = int((max_s + BACK_PRESSURE_KEEP_S) * 1000)
        self._note = client.register_script(_NOTE_REFUSAL)

    def note(self, job_id: int) -> Refusals:
        count, elapsed_ms = self._note(keys=[BACK_PRESSURE_KEY.format(job_id=job_id)], args=[self._keep_ms])
        return Refusals(int(count), max(int(elapsed_ms), 0) / 1000.0)

    def forget(self, job_id: int) -> None:
        """The job ended: a later `producer resume` starts its clock afresh."""
        self._client.delete(BACK_PRESSURE_KEY.format(job_id=job_id))


@dataclass(frozen=True)
class Quota:
    """One dimension of a provider's per-minute limit, as a response's headers state it."""

    limit: int | None
    remaining: int | None
    reset_s: float | None  # seconds until the provider's bucket is full again
    source: str = field(default="", compare=False)  # the header that stated the limit

    def seconds_until_available(self) -> float | None:
        """How long until the provider has capacity again, if it says it has none left.

        Both OpenAI and Anthropic document `reset` as the time until the bucket is *fully*
        replenished; a bucket refilling from 0 to `limit` in `reset_s` has one unit again after
        reset_s / limit. Without the limit, the whole reset is the only safe reading."""
        if self.remaining != 0 or self.reset_s is None:
            return None
        if self.limit:
            return self.reset_s / self.limit
        return self.reset_s


@dataclass(frozen=True)
class QuotaReading:
    """What a response's rate-limit headers say, by dimension, and the headers not trusted."""

    quotas: dict[str, Quota]
    bogus: tuple[str, ...] = ()


# Each provider's names for (limit, remaining, reset) of a per-minute dimension; None: not sent.
# OpenAI (platform.openai.com/docs/guides/rate-limits): x-ratelimit-{limit,remaining,reset}-
# {requests,tokens}, resets as Go durations. Anthropic (docs.anthropic.com/en/api/rate-limits):
# anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset},
# resets as RFC 3339. Mistral (what api.mistral.ai sends): x-ratelimit-{limit,remaining}-
# {req,tokens}-minute, no reset (its -month tokens are a monthly quota, not a rate).
HEADER_FAMILIES: tuple[tuple[str, tuple[str, str, str | None]], ...] = (
    *((dim, (f"x-ratelimit-limit-{dim}", f"x-ratelimit-remaining-{dim}", f"x-ratelimit-reset-{dim}"))
      for dim in ("requests", "tokens")),
    *((dim, (f"anthropic-ratelimit-{dim}-limit", f"anthropic-ratelimit-{dim}-remaining",
             f"anthropic-ratelimit-{dim}-reset")) for dim in QUOTA_DIMENSIONS),
    ("requests", ("x-ratelimit-limit-req-minute", "x-ratelimit-remaining-req-minute", None)),
    ("tokens", ("x-ratelimit-limit-tokens-minute", "x-ratelimit-remaining-tokens-minute", None)),
)
# A per-minute bucket is full again within a minute: a reset further away than this, or further
# in the past than clock skew explains, is not a reading of one.
MAX_RESET_S = 3600.0
MAX_RESET_PAST_S = 60.0


def read_quotas(headers: Mapping[str, str] | None, now: datetime | None = None) -> QuotaReading:
    """The provider's per-minute limits, by dimension ("requests", "tokens", ...). A dimension
    with any bogus value (a limit of 0, a non-number, remaining above the limit, a reset in the
    past or hours away) is left out whole and its header named in `bogus`: never trusted."""
    lowered = _lowered(headers)
    quotas: dict[str, Quota] = {}
    bogus: list[str] = []
    for dim, names in HEADER_FAMILIES:
        if dim in quotas:
            continue
        limit_name, remaining_name, reset_name = names
        raw_limit, raw_remaining = lowered.get(limit_name), lowered.get(remaining_name)
        raw_reset = lowered.get(reset_name) if reset_name else None
        if raw_limit is None and raw_remaining is None and raw_reset is None:
            continue
        limit, remaining = _count(raw_limit), _count(raw_remaining)
        reset = _reset_seconds(raw_reset, now)
        wrong = [name for name, raw, ok in (
            (limit_name, raw_limit, limit is not None and limit > 0),
            (remaining_name, raw_remaining, remaining is not None and (limit is None or remaining <= limit)),
            (reset_name, raw_reset, reset is not None),
        ) if raw is not None and not ok]
        if wrong:
            bogus += wrong
            continue
        quotas[dim] = Quota(limit, remaining, reset, source=limit_name if raw_limit is not None else "")
    return QuotaReading(quotas, tuple(bogus))


def quotas_from_headers(headers: Mapping[str, str] | None) -> dict[str, Quota]:
    """The trusted per-minute quotas of a response (see read_quotas)."""
    return read_quotas(headers).quotas


def _reset_seconds(value: str | None, now: datetime | None) -> float | None:
    """A reset as seconds from now, or None when it is unreadable or no per-minute reset."""
    if value is None:
        return None
    moment = _timestamp(str(value).strip())
    if moment is not None and _number(value) is None:
        ahead = (moment - (now or datetime.now(timezone.utc))).total_seconds()
        return max(ahead, 0.0) if -MAX_RESET_PAST_S <= ahead <= MAX_RESET_S else None
    seconds = seconds_from_now(value, now)
    return seconds if seconds is not None and seconds <= MAX_RESET_S else None


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait, or None if it did not say.

    Falls back to the reset of an exhausted limit (remaining == 0): on a 429 that is the
    dimension that refused us. On a success no dimension is usually exhausted, so the
    fallback stays silent there."""
    lowered = _lowered(headers)
    millis = _number(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    seconds = seconds_from_now(lowered.get("retry-after"))
    if seconds is not None:
        return seconds
    waits = [w for q in quotas_from_headers(lowered).values() if (w := q.seconds_until_available()) is not None]
    return max(waits, default=None)


def seconds_from_now(value: str | None, now: datetime | None = None) -> float | None:
    """A wait written as seconds ("1.5"), a Go duration ("6m0s", "250ms"), an RFC 3339
    timestamp or an HTTP date; None when absent or unreadable. Past times give 0."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    seconds = _number(text)
    if seconds is not None:
        return seconds
    if _DURATION.fullmatch(text):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    moment = _timestamp(text)
    if moment is None:
        return None
    return max((moment - (now or datetime.now(timezone.utc))).total_seconds(), 0.0)


def _timestamp(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _lowered(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def _number(value: str | None) -> float | None:
    """A finite, non-negative number, else None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _count(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None
