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
  as a full bucket, or it could never pass) and corrected by release() from the real usage. A
  bucket with separate input and output token limits (Anthropic's) charges the prompt's estimate
  to the one and the output allowance (max tokens) to the other, each corrected alike.
- A 429 or an exhausted provider quota sets a shared "blocked until" for the bucket.
- The rates in force are learned from the provider's own headers, within the configured
  ceilings (shared/learned_limits.py), read by each script from Redis: one answer re-paces
  every worker.
- Unlimited dimensions (None) are passed as 0 and skipped by the scripts: no keys, no work.
- Key pools (shared/keypools.py): each pool of a backend's keys is its own set of buckets (the
  pool's name in the bucket's key), learning its own limits; `[limits]` ceilings apply to each
  pool. acquire() tries every pool in one script and the one with the most headroom takes the
  call, on a key not refused this run: the choice is atomic, so the fleet never double-books one.
  A key refused is benched for the run (`bench`), in Redis, for every worker: a 401 for every
  model, a 403 for that (provider, model) only.
- The scripts' Lua lives in shared/limiter_scripts.py.
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
from shared.keypools import KeyPool
from shared.learned_limits import START_RPM, Learned, last_minute, learn_args, parse_learned
from shared.limiter_scripts import ACQUIRE, IN_FORCE, OBSERVE, RELEASE
from shared.retry import read_quotas

LEASE_MARGIN_S = 30.0  # a slot outlives the call timeout by this much before it is reclaimed
IN_FLIGHT_POLL_S = 0.2  # calls finish in ~seconds: when all slots are taken, look again soon
BENCHED_KEEP_S = 7 * 86_400  # a run's refused keys are remembered this long (runs take hours, not weeks)
POOL_MARK = "#"  # between a bucket's model and its pool in its key (pool names are plain names)
BENCH_MARK = "@"  # between a variable and the (provider, model) it is benched for (a 403)


@dataclass(frozen=True)
class BucketView:
    """One bucket as `producer limits` shows it."""

    scope: str  # the provider, or a backend with its own endpoint
    model: str
    pool: str  # the key pool ("": a backend's single key)
    ceiling: RateLimit
    learned: Learned
    in_force: tuple[int, int, int, int]  # rpm, tpm, itpm, otpm the limiter paces by now (0: unlimited)
    calls_last_minute: float
    refusals_last_minute: float


@dataclass(frozen=True)
class Permit:
    """What acquire() granted; only meaningful in the process that acquired it."""

    provider: str
    model: str
    tokens: int  # token units charged (the estimate, capped at the bucket's capacity)
    slot_id: str | None  # the in-flight lease, when max_in_flight is set
    pool: str = ""  # the key pool whose bucket granted it
    key_env: str | None = None  # the variable whose key makes the call (its name, never the key)
    input_tokens: int = 0  # input / output token units charged (each capped likewise)
    output_tokens: int = 0


@dataclass(frozen=True)
class Refused:
    """acquire()'s answer when every key of the call's pools was refused (401/403) this run."""

    reason: str
    error_type: str  # the first refusal's (the SDK's error class)


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
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._observe = redis.register_script(OBSERVE)
        self._in_force = redis.register_script(IN_FORCE)

    def acquire(self, provider: str, model: str, tokens: int, pools: tuple[KeyPool, ...] = (),
                run_id: str = "", output_tokens: int = 0) -> Permit | float | Refused:
        """A Permit (naming the pool and key variable chosen), the seconds to wait (> 0) before
        any pool has capacity, or Refused when every key of `pools` was refused in `run_id`.
        `output_tokens`: the part of `tokens` that is the output allowance (max tokens), for a
        bucket with separate input/output limits. No pools: the provider's one bucket, with no key
        named. Never sleeps."""
        limit = self._limit(provider, model)
        slot_id = uuid.uuid4().hex if limit.max_in_flight else None
        pools = pools or (KeyPool("", ("",)),)
        keys, per_pool = [self._benched_key(run_id)], []
        for pool in pools:
            keys += self._keys(provider, model, pool.name)
            per_pool += [len(pool.variables), *pool.variables]
        reply = self._acquire(keys=keys, args=[
            limit.rpm or 0, limit.tpm or 0, max(tokens, 0), limit.max_in_flight or 0, slot_id or "",
            self._lease_ms, IN_FLIGHT_POLL_S * 1000, START_RPM, len(pools), max(output_tokens, 0),
            limit.itpm or 0, limit.otpm or 0, _for_model("", provider, model), *per_pool])
        verdict = int(reply[0])
        if verdict == 1:
            variable = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
            return Permit(provider, model, int(reply[1]), slot_id, pools[int(reply[2]) - 1].name, variable or None,
                          int(reply[4]), int(reply[5]))
        if verdict == -1:
            return self.refused(run_id, [v for pool in pools for v in pool.variables], provider, model)
        counters.count(self._redis, "limiter_wait", provider)
        return int(reply[1]) / 1_000_000

    def bench(self, run_id: str, variable: str, why: str, scope: tuple[str, str] | None = None) -> bool:
        """A key refused: none of this run's calls use `variable` again, on any worker; with
        `scope` (provider, model), only that model's calls (a 403 is often one model's, a 401 the
        key's). True for the first to bench it (the one that says so in the log)."""
        key = self._benched_key(run_id)
        first = bool(self._redis.hsetnx(key, _for_model(variable, *scope) if scope else variable, why))
        self._redis.expire(key, BENCHED_KEEP_S)
        return first

    def benched(self, run_id: str, provider: str, model: str) -> dict[str, str]:
        """The variables refused in a run for (provider, model)'s calls, with why: those benched
        for the whole run and those benched for that model alone."""
        raw = {k.decode(): v.decode() for k, v in self._redis.hgetall(self._benched_key(run_id)).items()}
        suffix = _for_model("", provider, model)
        return {name.removesuffix(suffix): why for name, why in raw.items()
                if BENCH_MARK not in name or name.endswith(suffix)}

    def refused(self, run_id: str, variables: list[str], provider: str, model: str) -> Refused:
        """Why a call has no key left: each variable's refusal (`<error type>, <kind> <status>`)."""
        why = self.benched(run_id, provider, model)
        reason = "every key refused: " + "; ".join(f"{v} ({why.get(v, 'refused')})" for v in variables)
        return Refused(reason, next((why[v].split(",")[0] for v in variables if v in why), "auth"))

    def release(self, permit: Permit, actual_tokens: int | None = None, actual_output: int | None = None) -> None:
        """Frees the in-flight slot and charges (or refunds) actual − estimated tokens: in all,
        and input and output apart (`actual_output` of `actual_tokens`; unknown: all input)."""
        delta = actual_tokens - permit.tokens if actual_tokens is not None else 0
        out_delta = actual_output - permit.output_tokens if actual_output is not None else 0
        in_delta = delta if actual_output is None else actual_tokens - actual_output - permit.input_tokens
        if permit.slot_id is None and delta == in_delta == out_delta == 0:
            return
        state, slots, learned, _ = self._keys(permit.provider, permit.model, permit.pool)
        limit = self._limit(permit.provider, permit.model)
        self._release(keys=[state, slots, learned], args=[
            permit.slot_id or "", limit.tpm or 0, delta, limit.itpm or 0, limit.otpm or 0, in_delta, out_delta])

    def block(self, provider: str, model: str, seconds: float, headers: Mapping[str, str] | None = None,
              pool: str = "") -> None:
        """After a 429: every worker waits until now + seconds (the later of old and new), and
        the refusal's headers are learned from (without any, AIMD halves the rate); one pool's."""
        wait = seconds if seconds > 0 and math.isfinite(seconds) else 0.0
        self.observe(provider, model, headers or {}, refused=True, block_s=wait, pool=pool)

    def observe(self, provider: str, model: str, headers: Mapping[str, str], *, refused: bool = False,
                block_s: float = 0.0, pool: str = "") -> None:
        """Learns from an answer's rate-limit headers (shared/learned_limits.py): the limits it
        states become the bucket's, within the ceilings; blocks while a quota is exhausted, and
        lowers our buckets to what the provider says is left. Bogus headers are counted, not used."""
        reading = read_quotas(headers)
        for header in reading.bogus:
            counters.count(self._redis, "bogus_limit_header", provider, header)
        waits = [w for q in reading.quotas.values() if (w := q.seconds_until_available()) is not None]
        block_ms = max([block_s, *waits]) * 1000
        remaining = [q.remaining if (q := reading.quotas.get(dim)) and q.remaining is not None else -1
                     for dim in ("requests", "tokens", "input-tokens", "output-tokens")]
        limit = self._limit(provider, model)
        state, _, learned, rate = self._keys(provider, model, pool)
        self._observe(keys=[state, learned, rate], args=[
            block_ms, *remaining[:2], limit.rpm or 0, limit.tpm or 0, START_RPM,
            *learn_args(reading, refused=refused, ceiling_rpm=limit.rpm), *remaining[2:], limit.itpm or 0,
            limit.otpm or 0])

    def learned(self, provider: str, model: str, pool: str = "") -> Learned:
        """What the fleet has learned of this bucket's limits."""
        return parse_learned(self._redis.hgetall(self._keys(provider, model, pool)[2]))

    def buckets(self) -> list[BucketView]:
        """Every bucket the fleet has used or learned of (`producer limits`), by scope and model."""
        seconds, micros = self._redis.time()
        now_ms = seconds * 1000 + micros / 1000
        names = set()
        for key in self._redis.scan_iter(match=f"{self._prefix}:{{*}}:*", count=500):
            tag = key.decode()[len(self._prefix) + 2:].rsplit("}:", 1)[0]
            bucket, _, pool = tag.partition(POOL_MARK)
            names.add((*bucket.split(":", 1), pool))
        views = []
        for scope, model, pool in sorted(n for n in names if len(n) == 3):
            _, _, learned, rate = self._keys(scope, model, pool)
            calls, refusals = last_minute(self._redis.hgetall(rate), now_ms)
            ceiling = self._limit(scope, model)
            in_force = self._in_force(keys=[learned], args=[ceiling.rpm or 0, ceiling.tpm or 0, START_RPM,
                                                            ceiling.itpm or 0, ceiling.otpm or 0])
            views.append(BucketView(scope, model, pool, ceiling, parse_learned(self._redis.hgetall(learned)),
                                    tuple(int(r) for r in in_force), calls, refusals))
        return views

    def _limit(self, provider: str, model: str) -> RateLimit:
        key = (provider, model)
        if key not in self._limits:
            self._limits[key] = self._settings.limit_for(provider, model)
        return self._limits[key]

    def _keys(self, provider: str, model: str, pool: str = "") -> list[str]:
        # The hash tag keeps a bucket's keys in one slot, should Redis ever be a cluster (a call
        # choosing among pools touches several buckets: pools want one Redis, as the fleet has).
        base = f"{self._prefix}:{{{provider}:{model}{POOL_MARK + pool if pool else ''}}}"
        return [base, f"{base}:slots", f"{base}:learned", f"{base}:rate"]

    def _benched_key(self, run_id: str) -> str:
        return f"{self._prefix}:benched:{run_id}"


def _for_model(variable: str, provider: str, model: str) -> str:
    """A benched variable's field when it is refused for one (provider, model) only."""
    return f"{variable}{BENCH_MARK}{provider}:{model}"
