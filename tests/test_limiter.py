"""The global limiter against real Redis (db 11, flushed per test).

`python -m tests.test_limiter` runs a micro-benchmark instead: acquire+release per second.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from shared.config import Settings
from shared import counters
from shared.learned_limits import START_RPM
from shared.limiter import IN_FLIGHT_POLL_S, Permit, RateLimiter
from tests.support.env import SCRATCH_REDIS_URL as REDIS_URL

@pytest.fixture
def r(redis_client) -> redis.Redis:
    return redis_client


@pytest.fixture
def make_limiter(r: redis.Redis, tmp_path, monkeypatch):
    """A limiter whose settings hold only the limits a test gives (not the shipped TOML's)."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("GENESIS_CONFIG", str(empty))

    def build(limits: dict[str, dict[str, Any]], **kwargs: Any) -> RateLimiter:
        return RateLimiter(r, Settings(limits=limits), **kwargs)

    return build


def test_burst_equals_limit_then_one_per_interval(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 60}})
    granted = [limiter.acquire("openai", "gpt-4o-mini", 10) for _ in range(60)]
    assert all(isinstance(p, Permit) for p in granted)

    wait = limiter.acquire("openai", "gpt-4o-mini", 10)
    assert isinstance(wait, float)
    assert 0.8 < wait <= 1.0

    time.sleep(wait)
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 10), Permit)
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 10), float)


def test_tokens_are_weighted_and_refunded(make_limiter) -> None:
    limiter = make_limiter({"mistral": {"tpm": 1000}})
    first = limiter.acquire("mistral", "m", 600)
    assert isinstance(first, Permit) and first.tokens == 600

    # 400 left, 600 needed: 200 tokens at 1000/min take 12 s to refill
    wait = limiter.acquire("mistral", "m", 600)
    assert isinstance(wait, float)
    assert 11.8 < wait <= 12.0

    limiter.release(first, actual_tokens=100)  # 500 refunded: 900 available
    assert isinstance(limiter.acquire("mistral", "m", 600), Permit)


def test_using_more_than_estimated_charges_the_difference(make_limiter) -> None:
    limiter = make_limiter({"mistral": {"tpm": 1000}})
    permit = limiter.acquire("mistral", "m", 100)
    assert isinstance(permit, Permit)
    assert isinstance(limiter.acquire("mistral", "m", 500), Permit)  # 400 left
    limiter.release(permit, actual_tokens=400)  # 300 more: 100 left

    wait = limiter.acquire("mistral", "m", 300)
    assert isinstance(wait, float)
    assert 11.8 < wait <= 12.0  # 200 tokens short


def test_request_larger_than_the_bucket_is_charged_as_a_full_bucket(make_limiter) -> None:
    limiter = make_limiter({"mistral": {"tpm": 1000}})
    permit = limiter.acquire("mistral", "m", 5000)
    assert isinstance(permit, Permit) and permit.tokens == 1000
    wait = limiter.acquire("mistral", "m", 5000)
    assert isinstance(wait, float) and 59.5 < wait <= 60.0


def _hammer(limit: dict[str, Any], config: str, start: Any, seconds: float, out: Any) -> None:
    """One worker process: acquire as fast as possible until the deadline, report grant times."""
    import os

    os.environ["GENESIS_CONFIG"] = config
    client = redis.Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, Settings(limits={"openai": limit}))
    start.wait()
    deadline = time.time() + seconds
    grants: list[float] = []
    while time.time() < deadline:
        result = limiter.acquire("openai", "gpt-4o-mini", 1)
        if isinstance(result, Permit):
            grants.append(time.time())
        else:
            time.sleep(min(result, 0.01))
    out.put(grants)


@pytest.mark.processes
def test_limit_is_shared_across_processes(make_limiter, tmp_path) -> None:
    make_limiter({})  # only for the empty config it writes
    ctx = multiprocessing.get_context("spawn")  # fork would copy other tests' threads and locks
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(daemon=True, target=_hammer, args=({"rpm": 120}, str(tmp_path / "empty.toml"), start, 3.0, out))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    start.set()
    grants = sorted(t for _ in procs for t in out.get(timeout=20))
    for p in procs:
        p.join(timeout=10)

    elapsed = grants[-1] - grants[0]
    assert len(grants) <= 120 + 2 * elapsed + 1
    assert len(grants) >= 120 + 2 * 3.0 - 2
    assert sum(1 for t in grants if t - grants[0] < 0.5) >= 120  # the burst came at once


def test_in_flight_cap_and_release(make_limiter) -> None:
    limiter = make_limiter({"anthropic": {"max_in_flight": 2}})
    a = limiter.acquire("anthropic", "claude", 1)
    b = limiter.acquire("anthropic", "claude", 1)
    assert isinstance(a, Permit) and isinstance(b, Permit) and a.slot_id != b.slot_id

    wait = limiter.acquire("anthropic", "claude", 1)
    assert isinstance(wait, float) and 0 < wait <= IN_FLIGHT_POLL_S

    limiter.release(a)
    assert isinstance(limiter.acquire("anthropic", "claude", 1), Permit)
    assert isinstance(limiter.acquire("anthropic", "claude", 1), float)


def test_expired_lease_is_reclaimed(make_limiter) -> None:
    limiter = make_limiter({"anthropic": {"max_in_flight": 1}}, lease_s=0.3)
    assert isinstance(limiter.acquire("anthropic", "claude", 1), Permit)  # never released: the worker "died"
    assert isinstance(limiter.acquire("anthropic", "claude", 1), float)
    time.sleep(0.35)
    assert isinstance(limiter.acquire("anthropic", "claude", 1), Permit)


def test_block_makes_every_limiter_wait(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 600}})
    other_worker = make_limiter({"openai": {"rpm": 600}})
    limiter.block("openai", "gpt-4o-mini", 2.0)
    limiter.block("openai", "gpt-4o-mini", 0.5)  # a shorter block does not shorten the longer one

    wait = other_worker.acquire("openai", "gpt-4o-mini", 1)
    assert isinstance(wait, float) and 1.9 <= wait <= 2.0


def test_block_applies_even_without_configured_limits(make_limiter) -> None:
    limiter = make_limiter({})
    limiter.block("openai", "gpt-4o-mini", 1.0)
    wait = limiter.acquire("openai", "gpt-4o-mini", 1)
    assert isinstance(wait, float) and 0.9 <= wait <= 1.0


def test_observe_blocks_while_the_provider_has_nothing_left(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 600}})
    limiter.observe("openai", "gpt-4o-mini", {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    wait = limiter.acquire("openai", "gpt-4o-mini", 1)
    assert isinstance(wait, float) and 1.4 <= wait <= 1.5


def test_observe_with_known_limit_waits_for_one_unit_not_a_full_refill(make_limiter) -> None:
    # The provider's bucket of 60/min is empty and full again in 60 s: one request is back in 1 s.
    limiter = make_limiter({"openai": {"rpm": 60}})
    limiter.observe(
        "openai",
        "gpt-4o-mini",
        {"X-RateLimit-Limit-Requests": "60", "X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "1m0s"},
    )
    wait = limiter.acquire("openai", "gpt-4o-mini", 1)
    assert isinstance(wait, float) and 0.9 <= wait <= 1.0


def test_observe_reads_anthropic_rfc3339_resets(make_limiter) -> None:
    limiter = make_limiter({"anthropic": {"rpm": 50}})
    reset = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    limiter.observe(
        "anthropic", "claude", {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset}
    )
    wait = limiter.acquire("anthropic", "claude", 1)
    assert isinstance(wait, float) and 1.8 <= wait <= 2.0


def test_observe_lowers_our_bucket_to_the_providers_remaining(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 60, "tpm": 6000}})
    limiter.observe("openai", "gpt-4o-mini", {"x-ratelimit-remaining-requests": "5", "x-ratelimit-remaining-tokens": "50000"})
    assert all(isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), Permit) for _ in range(5))
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), float)

    # a provider that reports more than we have left does not raise our bucket
    limiter.observe("openai", "gpt-4o-mini", {"x-ratelimit-remaining-requests": "59"})
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), float)


def test_observe_lowers_tokens_too(make_limiter) -> None:
    limiter = make_limiter({"mistral": {"tpm": 1000}})
    limiter.observe("mistral", "m", {"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "54s"})
    assert isinstance(limiter.acquire("mistral", "m", 100), Permit)
    wait = limiter.acquire("mistral", "m", 100)
    assert isinstance(wait, float) and 5.8 < wait <= 6.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "soon"},
        {"x-ratelimit-remaining-requests": "-3", "x-ratelimit-reset-requests": "1x2y"},
        {"anthropic-ratelimit-requests-remaining": "zero", "anthropic-ratelimit-requests-reset": "not-a-date"},
        {"x-ratelimit-remaining-tokens": "nan", "retry-after": "\x00"},
    ],
)
def test_garbled_headers_change_nothing(make_limiter, headers) -> None:
    limiter = make_limiter({"openai": {"rpm": 2}})
    limiter.observe("openai", "gpt-4o-mini", headers)
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), Permit)
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), Permit)


def test_providers_and_models_have_separate_buckets(make_limiter) -> None:
    limiter = make_limiter({"anthropic": {"rpm": 3}, "openai": {"rpm": 3}})
    for _ in range(3):
        assert isinstance(limiter.acquire("anthropic", "claude", 1), Permit)
    limiter.block("anthropic", "claude", 30)
    assert isinstance(limiter.acquire("anthropic", "claude", 1), float)

    assert all(isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), Permit) for _ in range(3))
    assert isinstance(limiter.acquire("anthropic", "other-claude", 1), Permit)


def test_model_override_merges_over_provider_limits(make_limiter) -> None:
    limiter = make_limiter({"mistral": {"rpm": 5, "max_in_flight": 10}, "mistral:ft:small": {"rpm": 2}})
    assert all(isinstance(limiter.acquire("mistral", "ft:small", 1), Permit) for _ in range(2))
    assert isinstance(limiter.acquire("mistral", "ft:small", 1), float)
    assert all(isinstance(limiter.acquire("mistral", "open-mistral-7b", 1), Permit) for _ in range(5))
    assert isinstance(limiter.acquire("mistral", "open-mistral-7b", 1), float)


def test_no_ceiling_and_nothing_heard_starts_at_start_rpm_and_a_silent_endpoint_is_unlimited(make_limiter, r) -> None:
    limiter = make_limiter({})
    granted = [limiter.acquire("openai", "gpt-4o-mini", 10**9) for _ in range(START_RPM)]
    assert all(isinstance(p, Permit) and p.slot_id is None for p in granted)
    assert isinstance(limiter.acquire("openai", "gpt-4o-mini", 1), float)  # conservative until told
    limiter.observe("openai", "gpt-4o-mini", {})  # an answer that states no limit: a gateway, a local server
    assert all(isinstance(limiter.acquire("openai", "gpt-4o-mini", 10**9), Permit) for _ in range(500))
    assert limiter.learned("openai", "gpt-4o-mini").silent
    assert all(r.pttl(key) > 0 for key in r.keys("genesis:rl:*"))  # nothing kept forever


def test_bucket_keys_expire_once_they_no_longer_matter(make_limiter, r) -> None:
    limiter = make_limiter({"openai": {"rpm": 600, "max_in_flight": 4}})
    permit = limiter.acquire("openai", "gpt-4o-mini", 1)
    assert isinstance(permit, Permit)
    ttls = [r.pttl(key) for key in r.keys("*")]
    assert len(ttls) == 3 and all(0 < ttl <= 180_000 for ttl in ttls)  # state, slots, calls per minute


def _admits_at_once(limiter: RateLimiter, provider: str, model: str, limit: int) -> bool:
    """The bucket admits `limit` calls right now, one after another, and no more than what it
    refilled meanwhile at that limit's pace (one more per 60/limit s, plus one of slack)."""
    started = time.monotonic()
    for n in range(limit * 2 + 10):
        if not isinstance(limiter.acquire(provider, model, 1), Permit):
            refilled = limit / 60 * (time.monotonic() - started)
            return limit <= n <= limit + refilled + 1
    return False


# Each provider's headers as its documentation shows them (OpenAI: platform.openai.com/docs/guides/
# rate-limits; Anthropic: docs.anthropic.com/en/api/rate-limits; Mistral: what api.mistral.ai sends).
OPENAI_HEADERS = {"x-ratelimit-limit-requests": "120", "x-ratelimit-limit-tokens": "150000",
                  "x-ratelimit-remaining-requests": "120", "x-ratelimit-remaining-tokens": "150000",
                  "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
MISTRAL_HEADERS = {"x-ratelimit-limit-req-minute": "120", "x-ratelimit-remaining-req-minute": "120",
                   "x-ratelimit-limit-tokens-minute": "500000", "x-ratelimit-remaining-tokens-minute": "500000",
                   "x-ratelimit-limit-tokens-month": "4000000", "x-ratelimit-remaining-tokens-month": "3950246",
                   "x-ratelimit-tokens-query-cost": "52"}


def anthropic_headers(rpm: int = 120) -> dict[str, str]:
    reset = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"anthropic-ratelimit-requests-limit": str(rpm), "anthropic-ratelimit-requests-remaining": str(rpm),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "40000",
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "8000",
            "anthropic-ratelimit-output-tokens-reset": reset}


@pytest.mark.parametrize(("provider", "headers", "rpm_source", "tpm", "tpm_source", "split"), [
    ("openai", OPENAI_HEADERS, "x-ratelimit-limit-requests", 150000, "x-ratelimit-limit-tokens", (None, None)),
    ("mistral", MISTRAL_HEADERS, "x-ratelimit-limit-req-minute", 500000, "x-ratelimit-limit-tokens-minute",
     (None, None)),
    ("anthropic", None, "anthropic-ratelimit-requests-limit", None, "", (40000, 8000)),  # input, output apart
])
def test_each_providers_headers_set_the_bucket_for_every_limiter(make_limiter, provider, headers, rpm_source,
                                                                 tpm, tpm_source, split) -> None:
    """One answer, observed by one worker's limiter, paces another worker's (two instances)."""
    seen_by, other = make_limiter({}), make_limiter({})
    seen_by.observe(provider, "m", headers or anthropic_headers())
    learned = other.learned(provider, "m")
    assert (learned.rpm, learned.rpm_source, learned.tpm, learned.tpm_source) == (120, rpm_source, tpm, tpm_source)
    assert (learned.input_tpm, learned.output_tpm) == split
    assert _admits_at_once(other, provider, "m", 120)  # not START_RPM: the provider's own limit


def test_a_stated_limit_moves_the_bucket_up_and_down(make_limiter) -> None:
    limiter = make_limiter({})
    limiter.observe("openai", "up", {"x-ratelimit-limit-requests": "600"})
    assert _admits_at_once(limiter, "openai", "up", 600)
    limiter.observe("openai", "down", {"x-ratelimit-limit-requests": "600"})
    limiter.observe("openai", "down", {"x-ratelimit-limit-requests": "30"})  # the provider lowered it
    assert _admits_at_once(limiter, "openai", "down", 30)
    wait = limiter.acquire("openai", "down", 1)
    assert isinstance(wait, float) and 1.9 < wait <= 2.0  # one call per 2 s, the new limit's pace


def test_a_new_limit_keeps_the_calls_already_made(make_limiter) -> None:
    """START_RPM calls made, then the first answer says 60: 10 more at once (what the provider
    has left), not a fresh burst of 60 nor a wait for a bucket drawn at the old pace."""
    limiter = make_limiter({})
    assert all(isinstance(limiter.acquire("openai", "m", 1), Permit) for _ in range(START_RPM))
    limiter.observe("openai", "m", {"x-ratelimit-limit-requests": "60"})
    assert _admits_at_once(limiter, "openai", "m", 60 - START_RPM)


def test_a_lowered_limit_leaves_the_bucket_at_most_empty(make_limiter) -> None:
    """60 calls at 60 rpm, then the provider says 15: the next call waits one interval of the
    new limit (4 s), not four minutes of the old calls repaid at the new pace."""
    limiter = make_limiter({})
    limiter.observe("openai", "m", {"x-ratelimit-limit-requests": "60"})
    assert all(isinstance(limiter.acquire("openai", "m", 1), Permit) for _ in range(60))
    limiter.observe("openai", "m", {"x-ratelimit-limit-requests": "15"})
    wait = limiter.acquire("openai", "m", 1)
    assert isinstance(wait, float) and 3.0 < wait <= 4.0


def test_a_configured_limit_is_a_ceiling_the_stated_one_never_passes(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 60}})
    limiter.observe("openai", "m", {"x-ratelimit-limit-requests": "600"})
    assert limiter.learned("openai", "m").rpm == 600  # learned, shown
    assert _admits_at_once(limiter, "openai", "m", 60)  # but the ceiling holds
    limiter.observe("openai", "low", {"x-ratelimit-limit-requests": "20"})
    assert _admits_at_once(limiter, "openai", "low", 20)  # below the ceiling: the provider's


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-limit-requests": "0"},
    {"x-ratelimit-limit-requests": "lots"},
    {"x-ratelimit-limit-requests": "nan"},
    {"x-ratelimit-limit-requests": "-5"},
    {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "9000"},
    {"x-ratelimit-limit-requests": "600", "x-ratelimit-reset-requests": "87600h"},  # ten years away
    {"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-reset": "2020-01-01T00:00:00Z"},
    {"x-ratelimit-limit-req-minute": "0", "x-ratelimit-remaining-req-minute": "0"},  # Mistral, no allowance
])
def test_bogus_headers_are_counted_never_trusted(make_limiter, r, headers) -> None:
    limiter = make_limiter({})
    limiter.observe("openai", "m", headers)
    learned = limiter.learned("openai", "m")
    assert learned.rpm is None and not learned.silent
    assert _admits_at_once(limiter, "openai", "m", START_RPM)  # nothing learned, nothing blocked
    bogus = {tuple(labels): n for event, labels, n in counters.read(r) if event == "bogus_limit_header"}
    assert sum(bogus.values()) >= 1 and all(provider == "openai" and header in headers
                                            for provider, header in bogus)


def test_without_headers_a_refusal_halves_the_rate_and_successes_add_back(make_limiter) -> None:
    limiter = make_limiter({"openai": {"rpm": 1000}})  # a ceiling above what the gateway takes
    limiter.observe("openai", "gw", {})
    assert all(isinstance(limiter.acquire("openai", "gw", 1), Permit) for _ in range(400))
    limiter.block("openai", "gw", 0.0, {"retry-after": "1"})  # a 429 stating no limit
    learned = limiter.learned("openai", "gw")
    assert learned.silent and learned.rpm is None and 190 <= learned.aimd_rpm <= 200  # half of the last minute's
    for _ in range(5):
        limiter.observe("openai", "gw", {})
    assert limiter.learned("openai", "gw").aimd_rpm == learned.aimd_rpm + 5
    limiter.observe("openai", "gw", {"x-ratelimit-limit-requests": "300"})  # it speaks after all
    assert (limiter.learned("openai", "gw").rpm, limiter.learned("openai", "gw").aimd_rpm) == (300, None)


def _benchmark(seconds: float = 3.0) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    settings = Settings(limits={"openai": {"rpm": 10**9, "tpm": 10**12, "max_in_flight": 1000}})
    limiter = RateLimiter(client, settings)
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        permit = limiter.acquire("openai", "gpt-4o-mini", 500)
        assert isinstance(permit, Permit)
        limiter.release(permit, actual_tokens=300)
        done += 1
    client.flushdb()
    print(f"{done / seconds:,.0f} acquire+release pairs/s (rpm, tpm and in-flight all limited)")


if __name__ == "__main__":
    _benchmark()


def _split_headers(itpm: int, otpm: int) -> dict[str, str]:
    reset = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"anthropic-ratelimit-requests-limit": "10000", "anthropic-ratelimit-requests-remaining": "10000",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": str(itpm),
            "anthropic-ratelimit-input-tokens-remaining": str(itpm), "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": str(otpm),
            "anthropic-ratelimit-output-tokens-remaining": str(otpm), "anthropic-ratelimit-output-tokens-reset": reset,
            # Anthropic's `tokens`: the tighter of the two; the split buckets pace tokens, not it
            "anthropic-ratelimit-tokens-limit": str(min(itpm, otpm)),
            "anthropic-ratelimit-tokens-remaining": str(min(itpm, otpm)), "anthropic-ratelimit-tokens-reset": reset}


def _grant_until_refused(limiter: RateLimiter, model: str, prompt: int, max_tokens: int) -> tuple[list[Permit], float]:
    """Permits for calls of `prompt` input tokens and a `max_tokens` output allowance, one after
    another until the first wait; and the seconds that took (for the refill allowance)."""
    started, granted = time.monotonic(), []
    for _ in range(1000):
        permit = limiter.acquire("anthropic", model, prompt + max_tokens, output_tokens=max_tokens)
        if not isinstance(permit, Permit):
            return granted, time.monotonic() - started
        granted.append(permit)
    raise AssertionError("never refused")


@pytest.mark.parametrize(("prompt", "max_tokens", "bound_by"), [
    (1000, 10, "input"),  # input-heavy: 6 calls fill ITPM 6000; OTPM 600 would take 60 of them
    (10, 100, "output"),  # output-heavy: 6 calls fill OTPM 600; ITPM 6000 would take 600
])
def test_input_and_output_tokens_are_paced_by_their_own_limits(make_limiter, prompt, max_tokens, bound_by) -> None:
    """Anthropic's ITPM high and OTPM low: a stream runs at the limit it uses up, never over either
    (one token rate at the tighter limit would admit a single 1010-token call)."""
    itpm, otpm = 6000, 600
    limiter = make_limiter({})
    limiter.observe("anthropic", "m", _split_headers(itpm, otpm))
    granted, took = _grant_until_refused(limiter, "m", prompt, max_tokens)
    input_in, output_in = sum(p.input_tokens for p in granted), sum(p.output_tokens for p in granted)
    assert (input_in, output_in) == (prompt * len(granted), max_tokens * len(granted))
    # never over either limit (plus what refilled meanwhile) ...
    assert input_in <= itpm + itpm / 60 * took and output_in <= otpm + otpm / 60 * took
    # ... and up to the one this stream uses up: the next call would pass it
    used, limit, per_call = (input_in, itpm, prompt) if bound_by == "input" else (output_in, otpm, max_tokens)
    assert used + per_call > limit
    assert len(granted) >= 6


def test_release_corrects_input_and_output_buckets_apart(make_limiter) -> None:
    limiter = make_limiter({})
    limiter.observe("anthropic", "m", _split_headers(6000, 600))
    granted, _ = _grant_until_refused(limiter, "m", 10, 100)  # output-bound: 6 x 100 reserved
    assert len(granted) >= 6
    for permit in granted:  # each answer used 10 of its 100 output tokens: 90 back each
        limiter.release(permit, 10 + 10, 10)
    more, _ = _grant_until_refused(limiter, "m", 10, 100)
    assert len(more) >= 5  # the 540 refunded output tokens admit five more


def test_itpm_and_otpm_ceilings_cap_the_learned_split(make_limiter) -> None:
    limiter = make_limiter({"anthropic": {"itpm": 3000}})
    limiter.observe("anthropic", "m", _split_headers(6000, 600))
    granted, took = _grant_until_refused(limiter, "m", 1000, 10)
    assert 3 <= len(granted) <= 3 + 3000 / 60 * took / 1000
    (view,) = limiter.buckets()
    assert view.in_force[2:] == (3000, 600) and view.in_force[1] == 0  # no single token rate
