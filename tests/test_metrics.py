"""The one scrape target: `producer metrics` serves budget, limiter, provider-failure and
job figures that agree with SQL, Redis and what the simulator served, across worker processes."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func
from sqlmodel import select

from tests.support.runs import producer, submit, wait_until_reported


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_endpoint_reports_what_workers_did(monkeypatch, start_worker, simulator):
    from shared.budget.money import MICRO, to_micro
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.metrics import serve
    from shared.models import CostEntry, Job

    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "1")  # every injected 500 is final (a 429 is no failure)
    monkeypatch.setenv("GENESIS_LIMITS__OPENAI__MAX_IN_FLIGHT", "1")  # so the limiter makes calls wait
    get_settings.cache_clear()
    simulator.update(error_rates={500: 0.2, 429: 0.2}, latency_ms=50, rpm=100_000)  # limits stated, never reached
    start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)
    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--backend", "mistral-base",
                    "--limit", "5")
    wait_until_reported(run_id)

    server, _thread = serve(get_settings(), "127.0.0.1", 0)
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()

    with session_scope() as session:
        by_status = dict(session.exec(select(Job.status, func.count()).where(Job.run_id == run_id)
                                      .group_by(Job.status)).all())
        entries = session.exec(select(CostEntry.cost_usd)).all()
        errors_by_provider = dict(session.exec(select(Job.provider, func.count()).where(Job.status == "error")
                                               .group_by(Job.provider)).all())
    for status, n in by_status.items():
        assert samples[("genesis_jobs", (("run_id", run_id), ("status", status)))] == n
    # the guard counts each ledger entry in whole micro-dollars (shared.budget.money), so over a
    # dozen entries its total can differ from the float sum by more than a micro-dollar
    counted = sum(to_micro(cost) for cost in entries) / MICRO
    assert entries and samples[("genesis_spend_usd", ())] == pytest.approx(counted, abs=1e-9)
    assert samples[("genesis_budget_halted", ())] == 0
    assert samples[("genesis_budget_level", (("level", "ok"),))] == 1
    assert all(samples[(f"genesis_scrape_{part}_ok", ())] == 1 for part in ("budget", "worker_counters", "jobs"))

    served = {str(k): v for k, v in simulator.stats()["by_status"].items()}
    assert served.get("429", 0) > 0 and served.get("500", 0) > 0
    rate_limited = sum(v for (name, _), v in samples.items() if name == "genesis_provider_rate_limited_total")
    assert rate_limited == served["429"]
    errors = {dict(labels)["provider"]: 0.0 for (name, labels) in samples if name == "genesis_provider_errors_total"}
    for (name, labels), value in samples.items():
        if name == "genesis_provider_errors_total":
            errors[dict(labels)["provider"]] += value
    assert sum(errors.values()) == served["429"] + served["500"]  # every failed call, by kind
    assert sum(errors_by_provider.values()) == served["500"]  # only the 500s ended jobs
    assert samples[("genesis_limiter_waits_total", (("provider", "openai"),))] > 0
    assert samples[("genesis_scrape_limits_ok", ())] == 1
    # the limits the simulator stated, learned from its headers, as `producer limits` shows them
    limits = json.loads(producer("limits", "--json").stdout)
    stated = {(name, dict(labels)["model"], dict(labels)["kind"]): value for (name, labels), value in samples.items()
              if name == "genesis_rate_limit_learned" and dict(labels)["scope"] == "openai"}
    assert stated and set(stated.values()) >= {100_000}
    assert {v for (_, _, kind), v in stated.items() if kind == "rpm"} == {100_000}
    shown = {(row["scope"], row["model"]): row["stated"]["rpm"] for row in limits["buckets"]}
    assert {(scope, model): 100_000 for (_, model, kind) in stated if kind == "rpm" for scope in ["openai"]}.items() \
        <= shown.items()  # the metrics and `producer limits` say the same
    calls = sum(v for (name, labels), v in samples.items()
                if name == "genesis_rate_limit_last_minute" and dict(labels)["what"] == "calls")
    assert calls >= served.get("200", 0)  # every call of this (short) run fell within the last minute


@pytest.mark.sockets
def test_metrics_command_refuses_a_port_it_cannot_bind(genesis):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = producer("metrics", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2
    assert "cannot listen" in result.stderr and "Traceback" not in result.output
