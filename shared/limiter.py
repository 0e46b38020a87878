"""The global rate limiter: one set of buckets in Redis, shared by every worker on every host.

Why it looks like this:
- Providers meter with token buckets (full at start, refilled continuously), so we model one:
  GCRA, which stores a single "theoretical arrival time" (TAT) per bucket instead of a level.
  The burst equals the limit, so a fresh rpm=60 bucket admits 60 calls at once and then one a
  second — exactly what the provider accepts. A sliding window (the `limits` package) would
  admit only 60 per rolling minute and waste the refill.
- Buckets are keyed by (provider, model) with `settings.limit_for(provider, model)`: providers
  limit per model and per key, so `[limits.<provider>]` is the limit *each* model of that
  provider gets, and `[limits."<provider>:<model>"]` overrides fields for one model.
- Everything is decided in one Lua script per call, atomically, on Redis's clock (`TIME`), so
  hosts with skewed clocks still share one timeline, and the fast path is one round trip.
- Calls in flight are leases in a ZSET (score = expiry): a worker that dies mid-call holds
  its slot only until the lease runs out, never forever.
- acquire() never sleeps; it says how long to wait, so the caller can retry(countdown=...) and
  free its worker slot for other providers' jobs.
- Tokens are estimated before the call (a request larger than the whole token bucket is charged
  as a full bucket, or it could never pass) and corrected by release() from the real usage.
- A 429 or an exhausted provider quota sets a shared "blocked until" for the bucket.
- Unlimited dimensions (None) are passed as 0 and skipped by the scripts: no keys, no work.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from shared import counters
from shared.config import Settings
from shared.config.tables import RateLimit
from shared.retry import quotas_from_headers

SECONDS_PER_MINUTE = 60.0
LEASE_MARGIN_S = 30.0  # a slot outlives the call timeout by this much before it is reclaimed
IN_FLIGHT_POLL_S = 0.2  # calls finish in ~seconds: when all slots are taken, look again soon

# Shared by every script: the Redis clock in milliseconds, and an expiry that keeps a bucket's
# hash exactly as long as it still matters (once every TAT and block lies in the past the
# bucket is full and unblocked, which is what a missing key means too).
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function keep_until_useless(key, now)
  local s = redis.call('HMGET', key, 'req', 'tok', 'blocked')
  local last = math.max(tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0)
  if last > now then
    redis.call('PEXPIRE', key, math.ceil(last - now) + 1000)
  end
end
"""

# KEYS: state hash, slots zset.  ARGV: request interval ms, token interval ms (0 = unlimited),
# tokens, max in flight (0 = unlimited), slot id, lease ms, in-flight poll ms.
# Returns {1} when granted, else {0, microseconds to wait}.
_ACQUIRE = _PRELUDE + """
local req_iv, tok_iv = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, max_in_flight = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local s = redis.call('HMGET', KEYS[1], 'blocked', 'req', 'tok')
local blocked = tonumber(s[1]) or 0
if blocked > now then
  return {0, math.ceil((blocked - now) * 1000)}
end
local wait = 0
local req_tat, tok_tat
if req_iv > 0 then
  -- burst = limit, so the tolerance is one minute's worth of intervals
  req_tat = math.max(tonumber(s[2]) or now, now) + req_iv
  wait = math.max(wait, req_tat - 60000 - now)
end
if tok_iv > 0 then
  tok_tat = math.max(tonumber(s[3]) or now, now) + tokens * tok_iv
  wait = math.max(wait, tok_tat - 60000 - now)
end
if max_in_flight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_in_flight then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    wait = math.max(wait, math.min(tonumber(first[2]) - now, tonumber(ARGV[7])))
  end
end
if wait > 0 then
  return {0, math.ceil(wait * 1000)}
end
if req_tat then redis.call('HSET', KEYS[1], 'req', req_tat) end
if tok_tat then redis.call('HSET', KEYS[1], 'tok', tok_tat) end
if req_tat or tok_tat then keep_until_useless(KEYS[1], now) end
if max_in_flight > 0 then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[2], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease) + 1000)
end
return {1}
"""

# KEYS: state hash, slots zset.  ARGV: slot id ('' = none), token interval ms, token delta.
_RELEASE = _PRELUDE + """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
local tok_iv, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
if tok_iv > 0 and delta ~= 0 then
  local now = now_ms()
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tok')) or now
  -- a refund can fill the bucket but not beyond full (a TAT in the past means full)
  local new_tat = math.max(math.max(tat, now) + delta * tok_iv, now)
  redis.call('HSET', KEYS[1], 'tok', new_tat)
  keep_until_useless(KEYS[1], now)
end
return 1
"""

# KEYS: state hash.  ARGV: block ms (0 = none), then for requests and tokens: provider's
# remaining (-1 = unknown), our interval ms (0 = unlimited), our capacity.
# Our bucket is only ever lowered to what the provider says is left, never raised.
_OBSERVE = _PRELUDE + """
local now = now_ms()
local block = tonumber(ARGV[1])
if block > 0 then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  redis.call('HSET', KEYS[1], 'blocked', math.max(blocked, now + block))
end
for i, field in ipairs({'req', 'tok'}) do
  local remaining = tonumber(ARGV[2 + (i - 1) * 3])
  local iv = tonumber(ARGV[3 + (i - 1) * 3])
  local capacity = tonumber(ARGV[4 + (i - 1) * 3])
  if remaining >= 0 and iv > 0 and remaining < capacity then
    local tat = tonumber(redis.call('HGET', KEYS[1], field)) or now
    local floor_tat = now + (capacity - remaining) * iv
    if floor_tat > tat then redis.call('HSET', KEYS[1], field, floor_tat) end
  end
end
keep_until_useless(KEYS[1], now)
return 1
"""


@dataclass(frozen=True)
class Permit:
    """What acquire() granted; only meaningful in the process that acquired it."""

    provider: str
    model: str
    tokens: int  # token units charged (the estimate, capped at the bucket's capacity)
    slot_id: str | None  # the in-flight lease, when max_in_flight is set


class RateLimiter:
    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        prefix: str = "genesis:rl",
        *,
        lease_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._prefix = prefix
        lease = lease_s if lease_s is not None else settings.retry.call_timeout_s + LEASE_MARGIN_S
        self._lease_ms = lease * 1000.0
        self._limits: dict[tuple[str, str], RateLimit] = {}
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._observe = redis.register_script(_OBSERVE)

    def acquire(self, provider: str, model: str, tokens: int) -> Permit | float:
        """A Permit, or the seconds to wait (> 0) before capacity exists. Never sleeps."""
        limit = self._limit(provider, model)
        charged = min(max(tokens, 0), limit.tpm) if limit.tpm else max(tokens, 0)
        slot_id = uuid.uuid4().hex if limit.max_in_flight else None
        reply = self._acquire(
            keys=self._keys(provider, model),
            args=[
                _interval_ms(limit.rpm),
                _interval_ms(limit.tpm),
                charged,
                limit.max_in_flight or 0,
                slot_id or "",
                self._lease_ms,
                IN_FLIGHT_POLL_S * 1000,
            ],
        )
        if int(reply[0]) == 1:
            return Permit(provider, model, charged, slot_id)
        counters.count(self._redis, "limiter_wait", provider)
        return int(reply[1]) / 1_000_000

    def release(self, permit: Permit, actual_tokens: int | None = None) -> None:
        """Frees the in-flight slot and charges (or refunds) actual − estimated tokens."""
        limit = self._limit(permit.provider, permit.model)
        delta = actual_tokens - permit.tokens if actual_tokens is not None and limit.tpm else 0
        if permit.slot_id is None and delta == 0:
            return
        self._release(
            keys=self._keys(permit.provider, permit.model),
            args=[permit.slot_id or "", _interval_ms(limit.tpm), delta],
        )

    def block(self, provider: str, model: str, seconds: float) -> None:
        """After a 429: every worker waits until now + seconds (the later of old and new)."""
        if seconds > 0 and math.isfinite(seconds):
            self._observe(keys=self._keys(provider, model)[:1], args=[seconds * 1000, -1, 0, 0, -1, 0, 0])

    def observe(self, provider: str, model: str, headers: Mapping[str, str]) -> None:
        """Learns from the provider's rate-limit headers: blocks while a quota is exhausted,
        and lowers our buckets to what the provider says is left (never raises them)."""
        quotas = quotas_from_headers(headers)
        if not quotas:
            return
        waits = [w for q in quotas.values() if (w := q.seconds_until_available()) is not None]
        block_ms = max(waits, default=0.0) * 1000
        limit = self._limit(provider, model)
        lowered = []
        for dim, per_minute in (("requests", limit.rpm), ("tokens", limit.tpm)):
            quota = quotas.get(dim)
            remaining = quota.remaining if quota and quota.remaining is not None and per_minute else -1
            lowered += [remaining, _interval_ms(per_minute), per_minute or 0]
        if block_ms <= 0 and lowered[0] < 0 and lowered[3] < 0:
            return
        self._observe(keys=self._keys(provider, model)[:1], args=[block_ms, *lowered])

    def _limit(self, provider: str, model: str) -> RateLimit:
        key = (provider, model)
        if key not in self._limits:
            self._limits[key] = self._settings.limit_for(provider, model)
        return self._limits[key]

    def _keys(self, provider: str, model: str) -> list[str]:
        # The hash tag keeps a bucket's two keys in one slot, should Redis ever be a cluster.
        base = f"{self._prefix}:{{{provider}:{model}}}"
        return [base, f"{base}:slots"]


def _interval_ms(per_minute: int | None) -> float:
    """Milliseconds between two units at `per_minute`; 0 means unlimited."""
    return SECONDS_PER_MINUTE * 1000 / per_minute if per_minute else 0.0
