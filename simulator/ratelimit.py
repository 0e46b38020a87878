"""Rate limits modelled as Anthropic documents its own: a token bucket per (API key, model) for
requests and one for tokens (per organisation when keys are grouped into one; a key may have its
own requests per minute), full at start and refilled continuously at limit/60 per second.

A request is admitted only if both buckets can pay: 1 request, and its prompt tokens plus its
max_tokens (charged in full at admission and never refunded — simple, and the worst case a
client must plan for). A request larger than the whole token bucket can never pass; it gets 429
with the time until the bucket is full (at least 1 s), as a provider's "request too large" would."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True)
class LimitState:
    """One dimension's headers: the limit, what is left, and seconds until the bucket is full."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class Admission:
    allowed: bool
    retry_after_s: float
    requests: LimitState | None
    tokens: LimitState | None
    # Anthropic's separate input and output token limits (itpm / otpm), when set
    input_tokens: LimitState | None = None
    output_tokens: LimitState | None = None

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up and at least 1, as `retry-after` takes them."""
        return str(max(1, math.ceil(self.retry_after_s)))


UNLIMITED = Admission(allowed=True, retry_after_s=0.0, requests=None, tokens=None)


class TokenBucket:
    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / SECONDS_PER_MINUTE
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        target = min(amount, self.capacity)
        return max(0.0, (target - self.level) / self.rate)

    def state(self) -> LimitState:
        return LimitState(int(self.capacity), int(self.level), self.seconds_until(self.capacity))


class RateLimiter:
    """Thread-safe buckets keyed by (API key, model); None limits mean unlimited. `itpm` / `otpm`
    (input and output tokens per minute, Anthropic's) apply only to calls admitted with `split`:
    the prompt is charged to input, max_tokens to output."""

    def __init__(
        self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic,
        *, itpm: int | None = None, otpm: int | None = None, key_rpm: dict[str, int] | None = None,
        key_orgs: dict[str, str] | None = None,
    ) -> None:
        self.limits = {"requests": rpm, "tokens": tpm, "input_tokens": itpm, "output_tokens": otpm}
        self.key_rpm = dict(key_rpm or {})  # a key's own requests per minute, over `rpm`
        self.key_orgs = dict(key_orgs or {})  # keys of one organisation share its buckets
        self.clock = clock
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def admit(self, api_key: str, model: str, tokens: int, *, input_tokens: int | None = None) -> Admission:
        """`input_tokens` given (an Anthropic call): the split limits apply too."""
        charges = {"requests": 1, "tokens": tokens}
        if input_tokens is not None:
            charges.update(input_tokens=input_tokens, output_tokens=tokens - input_tokens)
        limits = {**self.limits, "requests": self.key_rpm.get(api_key, self.limits["requests"])}
        if all(limits[dim] is None for dim in charges):
            return UNLIMITED
        with self._lock:
            now = self.clock()
            owner = self.key_orgs.get(api_key, api_key)
            buckets = {dim: self._bucket(owner, model, dim, limits[dim], now) for dim in charges}
            waits = [bucket.seconds_until(charges[dim]) for dim, bucket in buckets.items()
                     if bucket is not None and bucket.level < charges[dim]]
            if not waits:
                for dim, bucket in buckets.items():
                    if bucket is not None:
                        bucket.level -= charges[dim]
            states = {dim: bucket.state() if bucket else None for dim, bucket in buckets.items()}
            return Admission(allowed=not waits, retry_after_s=max(waits, default=0.0), **states)

    def _bucket(
        self, api_key: str, model: str, kind: str, per_minute: int | None, now: float
    ) -> TokenBucket | None:
        if per_minute is None:
            return None
        bucket = self._buckets.setdefault((api_key, model, kind), TokenBucket(per_minute, now))
        bucket.refill(now)
        return bucket
