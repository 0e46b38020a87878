from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from shared.retry import (
    BACK_PRESSURE_KEY,
    MAX_RETRY_AFTER_S,
    RETRY_AFTER_JITTER_MAX_S,
    BackPressureClock,
    Quota,
    Refusals,
    backoff_delay,
    is_back_pressure,
    quotas_from_headers,
    read_quotas,
    retry_after_from_headers,
    seconds_from_now,
)


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (3, 8.0)):
        delays = [backoff_delay(attempt, retry_after=None, base=1.0, cap=60.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling  # spread over the whole range


def test_backoff_is_capped_even_for_huge_attempts() -> None:
    rng = random.Random(2)
    delays = [backoff_delay(5000, retry_after=None, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= 60.0 for d in delays) and max(delays) > 50.0


def test_retry_after_is_a_floor_with_a_little_jitter_and_wins_over_cap() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(0, retry_after=30.0, base=1.0, cap=5.0, rng=rng) for _ in range(200)]
    assert all(30.0 <= d <= 30.0 + RETRY_AFTER_JITTER_MAX_S for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # workers do not all come back together


def test_retry_after_is_bounded_and_sanitised() -> None:
    rng = random.Random(4)
    huge = backoff_delay(0, retry_after=86_400.0, base=1.0, cap=60.0, rng=rng)
    assert MAX_RETRY_AFTER_S <= huge <= MAX_RETRY_AFTER_S + RETRY_AFTER_JITTER_MAX_S
    assert 0.0 <= backoff_delay(0, retry_after=-5.0, base=1.0, cap=60.0, rng=rng) <= 0.1
    assert 0.0 <= backoff_delay(2, retry_after=float("nan"), base=1.0, cap=60.0, rng=rng) <= 4.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # the precise one wins
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        (  # known limit: one request is back after reset / limit
            {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s"},
            1.0,
        ),
        (  # only the exhausted dimension counts
            {
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "50s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "250ms",
            },
            0.25,
        ),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}, None),
        ({}, None),
        ({"retry-after": "whenever", "retry-after-ms": "-1"}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_from_headers(headers) == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_as_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert retry_after_from_headers({"retry-after": format_datetime(when, usegmt=True)}) == pytest.approx(30, abs=1.5)


def test_anthropic_reset_as_rfc3339() -> None:
    reset = (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat().replace("+00:00", "Z")
    headers = {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": reset}
    assert retry_after_from_headers(headers) == pytest.approx(4, abs=0.5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", 1.0),
        ("250ms", 0.25),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.75", 0.75),
        (" 3 ", 3.0),
        ("2000-01-01T00:00:00Z", 0.0),  # the past means now
        ("1x", None),
        ("ms", None),
        ("", None),
        (None, None),
        ("inf", None),
    ],
)
def test_seconds_from_now(value: str | None, expected: float | None) -> None:
    assert seconds_from_now(value) == expected


def test_quotas_from_headers_reads_both_families() -> None:
    quotas = quotas_from_headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "anthropic-ratelimit-output-tokens-remaining": "12",
        }
    )
    assert quotas == {
        "requests": Quota(limit=500, remaining=499, reset_s=0.12),
        "output-tokens": Quota(limit=None, remaining=12, reset_s=None),
    }


def test_429_and_529_are_back_pressure_other_statuses_are_not() -> None:
    assert is_back_pressure(429) and is_back_pressure(529)
    assert not any(is_back_pressure(s) for s in (None, 400, 401, 403, 500, 502, 503, 504))


def test_refusals_are_bounded_by_time_not_by_count() -> None:
    from shared.config.tables import RetryConfig

    retry = RetryConfig(backoff_base_s=1.0, backoff_max_s=8.0)
    assert not Refusals(count=1000, elapsed_s=59.9).exhausted(60.0)
    assert Refusals(count=1, elapsed_s=60.0).exhausted(60.0)
    rng_delays = [Refusals(count=n, elapsed_s=0).next_delay(None, retry) for n in (1, 2, 10, 10, 10)]
    assert all(0 <= d <= 8.0 for d in rng_delays)
    assert 30.0 <= Refusals(count=1, elapsed_s=0).next_delay(30.0, retry) <= 32.0  # the provider's wait wins


def test_the_back_pressure_clock_counts_from_the_first_refusal_on_redis_time(redis_client) -> None:
    clock = BackPressureClock(redis_client, max_s=60.0)
    first = clock.note(7)
    time.sleep(0.3)
    second = clock.note(7)
    assert (first.count, second.count) == (1, 2)
    assert first.elapsed_s == 0.0 and 0.25 <= second.elapsed_s < 5.0
    assert 60_000 < redis_client.pttl(BACK_PRESSURE_KEY.format(job_id=7)) <= 660_000  # expires by itself
    assert clock.note(8).count == 1  # per job
    clock.forget(7)
    assert clock.note(7) == Refusals(1, 0.0)


def test_read_quotas_names_the_header_each_limit_came_from_and_mistrals_per_minute_family() -> None:
    reading = read_quotas({"X-RateLimit-Limit-Req-Minute": "720", "x-ratelimit-remaining-req-minute": "717",
                           "x-ratelimit-limit-tokens-minute": "5000000",
                           "x-ratelimit-remaining-tokens-minute": "4999911",
                           "x-ratelimit-limit-tokens-month": "4000000"})  # a monthly quota: not a rate
    assert reading.bogus == ()
    assert reading.quotas == {"requests": Quota(720, 717, None), "tokens": Quota(5000000, 4999911, None)}
    assert reading.quotas["requests"].source == "x-ratelimit-limit-req-minute"


@pytest.mark.parametrize(("headers", "bogus", "trusted"), [
    ({"x-ratelimit-limit-requests": "0"}, ("x-ratelimit-limit-requests",), set()),
    ({"x-ratelimit-limit-tokens": "many", "x-ratelimit-limit-requests": "60"}, ("x-ratelimit-limit-tokens",),
     {"requests"}),
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-reset-requests": "87600h"}, ("x-ratelimit-reset-requests",),
     set()),
    ({"anthropic-ratelimit-tokens-limit": "10", "anthropic-ratelimit-tokens-reset": "1999-01-01T00:00:00Z"},
     ("anthropic-ratelimit-tokens-reset",), set()),
    ({"anthropic-ratelimit-tokens-limit": "10", "anthropic-ratelimit-tokens-remaining": "11"},
     ("anthropic-ratelimit-tokens-remaining",), set()),
])
def test_read_quotas_leaves_out_a_dimension_with_any_bogus_value(headers, bogus, trusted) -> None:
    reading = read_quotas(headers)
    assert reading.bogus == bogus
    assert set(reading.quotas) == trusted
