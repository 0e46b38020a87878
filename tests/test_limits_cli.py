"""`producer limits`: what the fleet learned, read back from Redis after a real run (real
workers, the real SDKs against the simulator's headers)."""

from __future__ import annotations

import json

from tests.support.runs import producer, submit, wait_until_reported


def test_limits_shows_the_stated_limit_its_header_the_ceiling_below_it_and_the_429s(
    monkeypatch, start_worker, simulator
):
    from shared.config import get_settings

    monkeypatch.setenv("GENESIS_LIMITS__OPENAI__RPM", "300")  # a ceiling below the 600 the key gets
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.1")
    get_settings.cache_clear()  # this process (the producer) reads the ceiling too
    simulator.update(rpm=600, error_rates={429: 0.3})
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "6")
    wait_until_reported(run_id, timeout=60)

    result = producer("limits", "--json")
    assert result.exit_code == 0, result.output
    (row,) = [b for b in json.loads(result.stdout)["buckets"] if b["scope"] == "openai"]
    assert row["model"] == "gpt-5-mini"  # the shipped openai backend's model
    assert (row["stated"]["rpm"], row["stated"]["rpm_header"]) == (600, "x-ratelimit-limit-requests")
    assert row["stated"]["rpm_at"].endswith("+00:00")
    assert row["ceiling"]["rpm"] == 300 and row["in_force"]["rpm"] == 300
    refused = simulator.stats()["by_status"].get("429", 0)
    assert refused > 0 and round(row["rate_limited_last_minute"]) == refused
    assert round(row["calls_last_minute"]) == simulator.stats()["requests_total"]
    assert any("ceiling rpm = 300 is below the 600 the provider allows" in note for note in row["notes"])

    table = producer("limits")
    assert table.exit_code == 0
    assert "x-ratelimit-limit-requests" in table.stdout and "below the 600 the provider allows" in table.stdout
