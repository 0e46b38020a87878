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
- The rates in force are learned from the provider's own headers, within the configured
  ceilings (shared/learned_limits.py), read by each script from Redis: one answer re-paces
  every worker.
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
from shared.learned_limits import (EFFECTIVE_LUA, LEARN_LUA, START_RPM, Learned, last_minute, learn_args,
                                   parse_learned)
from shared.retry import read_quotas

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
local function interval(per_minute)
  if per_minute > 0 then return 60000 / per_minute end
  return 0
end
""" + EFFECTIVE_LUA + LEARN_LUA

# KEYS: state hash, slots zset, learned hash, rate hash.  ARGV: ceiling rpm, ceiling tpm (0 = none),
# tokens, max in flight (0 = unlimited), slot id, lease ms, in-flight poll ms, start rpm.
# Returns {1, tokens charged} when granted, else {0, microseconds to wait}.
_ACQUIRE = _PRELUDE + """
local max_in_flight = tonumber(ARGV[4])
local now = now_ms()
local rpm, tpm = effective(KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[8]))
local req_iv, tok_iv = interval(rpm), interval(tpm)
local tokens = tonumber(ARGV[3])
if tpm > 0 and tokens > tpm then tokens = tpm end  -- larger than the whole bucket: a full bucket
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
count_call(KEYS[4], now)
return {1, tokens}
"""

# KEYS: state hash, slots zset, learned hash.  ARGV: slot id ('' = none), ceiling tpm, token delta.
_RELEASE = _PRELUDE + """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
local delta = tonumber(ARGV[3])
local _, tpm = effective(KEYS[3], 0, tonumber(ARGV[2]), 0)
local tok_iv = interval(tpm)
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

# KEYS: state hash, learned hash, rate hash.  ARGV: block ms (0 = none), the provider's remaining
# requests and tokens (-1 = unknown), ceiling rpm and tpm, start rpm, then LEARN_LUA's nine.
# Learns the limits stated, then lowers our buckets to what the provider says is left.
_OBSERVE = _PRELUDE + """
local now = now_ms()
local block = tonumber(ARGV[1])
if block > 0 then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  redis.call('HSET', KEYS[1], 'blocked', math.max(blocked, now + block))
end
local ceil_rpm, ceil_tpm, start_rpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local was_rpm, was_tpm = effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm)
learn(KEYS[2], KEYS[3], now, {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14],
                             ARGV[15]})
local rpm, tpm = effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm)
-- a new rate keeps the units already used: the TAT's lead over now is rescaled, so a bucket that
-- started at START_RPM and learns more admits the difference at once; one lowered stays used (at
-- most empty: a debt beyond one window would outlast the new limit's own bucket)
for i, field in ipairs({'req', 'tok'}) do
  local was, is = ({was_rpm, was_tpm})[i], ({rpm, tpm})[i]
  local tat = tonumber(redis.call('HGET', KEYS[1], field))
  if was > 0 and is > 0 and was ~= is and tat and tat > now then
    redis.call('HSET', KEYS[1], field, now + math.min((tat - now) * was / is, 60000))  -- at most empty
  end
end
for i, field in ipairs({'req', 'tok'}) do
  local remaining = tonumber(ARGV[1 + i])
  local capacity = ({rpm, tpm})[i]
  if remaining >= 0 and capacity > 0 and remaining < capacity then
    local tat = tonumber(redis.call('HGET', KEYS[1], field)) or now
    local floor_tat = now + (capacity - remaining) * interval(capacity)
    if floor_tat > tat then redis.call('HSET', KEYS[1], field, floor_tat) end
  end
end
keep_until_useless(KEYS[1], now)
return 1
"""


# KEYS: learned hash.  ARGV: ceiling rpm, ceiling tpm, start rpm.  The rates in force, by the
# one rule the other scripts use.
_IN_FORCE = _PRELUDE + """
local rpm, tpm = effective(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {rpm, tpm}
"""


@dataclass(frozen=True)
class BucketView:
    """One bucket as `producer limits` shows it."""

    scope: str  # the provider, or a backend with its own endpoint
    model: str
    ceiling: RateLimit
    learned: Learned
    in_force: tuple[int, int]  # rpm, tpm the limiter paces by now (0: unlimited)
    calls_last_minute: float
    refusals_last_minute: float


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
        self._in_force = redis.register_script(_IN_FORCE)

    def acquire(self, provider: str, model: str, tokens: int) -> Permit | float:
        """A Permit, or the seconds to wait (> 0) before capacity exists. Never sleeps."""
        limit = self._limit(provider, model)
        slot_id = uuid.uuid4().hex if limit.max_in_flight else None
        reply = self._acquire(
            keys=self._keys(provider, model),
            args=[
                limit.rpm or 0,
                limit.tpm or 0,
                max(tokens, 0),
                limit.max_in_flight or 0,
                slot_id or "",
                self._lease_ms,
                IN_FLIGHT_POLL_S * 1000,
                START_RPM,
            ],
        )
        if int(reply[0]) == 1:
            return Permit(provider, model, int(reply[1]), slot_id)
        counters.count(self._redis, "limiter_wait", provider)
        return int(reply[1]) / 1_000_000

    def release(self, permit: Permit, actual_tokens: int | None = None) -> None:
        """Frees the in-flight slot and charges (or refunds) actual − estimated tokens."""
        delta = actual_tokens - permit.tokens if actual_tokens is not None else 0
        if permit.slot_id is None and delta == 0:
            return
        state, slots, learned, _ = self._keys(permit.provider, permit.model)
        self._release(keys=[state, slots, learned],
                      args=[permit.slot_id or "", self._limit(permit.provider, permit.model).tpm or 0, delta])

    def block(self, provider: str, model: str, seconds: float, headers: Mapping[str, str] | None = None) -> None:
        """After a 429: every worker waits until now + seconds (the later of old and new), and
        the refusal's headers are learned from (without any, AIMD halves the rate)."""
        wait = seconds if seconds > 0 and math.isfinite(seconds) else 0.0
        self.observe(provider, model, headers or {}, refused=True, block_s=wait)

    def observe(self, provider: str, model: str, headers: Mapping[str, str], *, refused: bool = False,
                block_s: float = 0.0) -> None:
        """Learns from an answer's rate-limit headers (shared/learned_limits.py): the limits it
        states become the bucket's, within the ceilings; blocks while a quota is exhausted, and
        lowers our buckets to what the provider says is left. Bogus headers are counted, not used."""
        reading = read_quotas(headers)
        for header in reading.bogus:
            counters.count(self._redis, "bogus_limit_header", provider, header)
        waits = [w for q in reading.quotas.values() if (w := q.seconds_until_available()) is not None]
        block_ms = max([block_s, *waits]) * 1000
        remaining = [q.remaining if (q := reading.quotas.get(dim)) and q.remaining is not None else -1
                     for dim in ("requests", "tokens")]
        limit = self._limit(provider, model)
        state, _, learned, rate = self._keys(provider, model)
        self._observe(keys=[state, learned, rate], args=[
            block_ms, *remaining, limit.rpm or 0, limit.tpm or 0, START_RPM,
            *learn_args(reading, refused=refused, ceiling_rpm=limit.rpm)])

    def learned(self, provider: str, model: str) -> Learned:
        """What the fleet has learned of this bucket's limits."""
        return parse_learned(self._redis.hgetall(self._keys(provider, model)[2]))

    def buckets(self) -> list[BucketView]:
        """Every bucket the fleet has used or learned of (`producer limits`), by scope and model."""
        seconds, micros = self._redis.time()
        now_ms = seconds * 1000 + micros / 1000
        names = set()
        for key in self._redis.scan_iter(match=f"{self._prefix}:{{*}}:*", count=500):
            tag = key.decode()[len(self._prefix) + 2:].rsplit("}:", 1)[0]
            names.add(tuple(tag.split(":", 1)))
        views = []
        for scope, model in sorted(n for n in names if len(n) == 2):
            _, _, learned, rate = self._keys(scope, model)
            calls, refusals = last_minute(self._redis.hgetall(rate), now_ms)
            ceiling = self._limit(scope, model)
            rpm, tpm = self._in_force(keys=[learned], args=[ceiling.rpm or 0, ceiling.tpm or 0, START_RPM])
            views.append(BucketView(scope, model, ceiling, parse_learned(self._redis.hgetall(learned)),
                                    (int(rpm), int(tpm)), calls, refusals))
        return views

    def _limit(self, provider: str, model: str) -> RateLimit:
        key = (provider, model)
        if key not in self._limits:
            self._limits[key] = self._settings.limit_for(provider, model)
        return self._limits[key]

    def _keys(self, provider: str, model: str) -> list[str]:
        # The hash tag keeps a bucket's two keys in one slot, should Redis ever be a cluster.
        base = f"{self._prefix}:{{{provider}:{model}}}"
        return [base, f"{base}:slots", f"{base}:learned", f"{base}:rate"]
