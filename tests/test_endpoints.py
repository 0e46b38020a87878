"""Endpoints per backend: one run compares two OpenAI-wire backends on two endpoints (two
simulator instances of different quality), each with its own queue, key variable and rate
limits; and `submit` sends nothing to any provider endpoint (no probing)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.env import ROOT
from tests.support.http_server import serve_http
from tests.support.runs import producer, wait_until_reported

pytestmark = pytest.mark.integration

LIMIT = 12  # qa tasks per backend


def two_endpoint_config(url_a: str, url_b: str) -> str:
    return (ROOT / "config" / "genesis.toml").read_text() + f"""
[backends.local-a]
provider = "openai"
role = "baseline"
model = "local-model-a"
base_url = "{url_a}/v1"
api_key_env = "LOCAL_A_KEY"
enabled = false

[backends.local-b]
provider = "openai"
role = "candidate"
baseline = "local-a"
model = "local-model-b"
base_url = "{url_b}/v1"
api_key_env = "LOCAL_B_KEY"
enabled = false

[pricing."local-model-a"]
input_per_mtok = 0.1
output_per_mtok = 0.1

[pricing."local-model-b"]
input_per_mtok = 0.2
output_per_mtok = 0.2

[limits."local-a"]
max_in_flight = 4

[limits."local-b"]
max_in_flight = 1
"""


@pytest.fixture
def two_endpoints(genesis, monkeypatch, tmp_path):
    from shared.config import get_settings
    from shared.messaging import reconnect
    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    sim_a = start_simulator(SimulatorConfig(latency_ms=150, seed=3, quality={"*": 0.2}, default_quality=0.2))
    sim_b = start_simulator(SimulatorConfig(latency_ms=150, seed=3, quality={"*": 1.0}, default_quality=1.0))
    config = tmp_path / "two-endpoints.toml"
    config.write_text(two_endpoint_config(sim_a.url, sim_b.url))
    env = {"GENESIS_CONFIG": str(config), "LOCAL_A_KEY": "key-a-0123456789", "LOCAL_B_KEY": "key-b-0123456789"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
        genesis[key] = value
    get_settings.cache_clear()
    reconnect(get_settings())
    yield sim_a, sim_b
    sim_a.stop()
    sim_b.stop()


def test_one_run_compares_two_endpoints_each_with_its_own_queue_and_limits(two_endpoints, simulator, start_worker):
    sim_a, sim_b = two_endpoints
    worker = start_worker("w1", concurrency=8)
    result = producer("submit", "--agent", "qa", "--backend", "local-a", "--backend", "local-b",
                      "--limit", str(LIMIT), "--json")
    assert result.exit_code == 0, result.output
    snap = wait_until_reported(json.loads(result.stdout)["run_id"])
    assert snap["by_status"]["ok"] == 2 * LIMIT

    a, b = sim_a.stats(), sim_b.stats()
    assert a["requests_total"] == b["requests_total"] == LIMIT  # each backend's calls went to its endpoint
    assert simulator.stats()["requests_total"] == 0  # none to the provider's (OPENAI_BASE_URL)
    assert b["peak_in_flight"] == 1  # [limits."local-b"]
    assert 1 < a["peak_in_flight"] <= 4  # [limits."local-a"], not local-b's and not OpenAI's

    report = json.loads(open(snap["report"].replace("report.md", "report.json")).read())
    rows = {row["backend"]: row for row in report["by_backend"]}
    assert set(rows) == {"local-a", "local-b"} and rows["local-a"]["n"] == rows["local-b"]["n"] == LIMIT
    assert rows["local-b"]["accuracy"] > rows["local-a"]["accuracy"]  # quality 1.0 vs 0.2
    assert report["simulated"] is True and report["simulated_answers"] == 2 * LIMIT
    assert any(w.startswith(f"Simulated answers: {2 * LIMIT} of {2 * LIMIT}") for w in report["warnings"])

    from worker.app import app

    queues = app.control.inspect(destination=[worker.hostname], timeout=2).active_queues()[worker.hostname]
    assert {"openai@local-a", "openai@local-b", "openai", "reports"} <= {q["name"] for q in queues}


def test_submit_refuses_a_backend_whose_key_variable_is_missing(two_endpoints, monkeypatch):
    monkeypatch.delenv("LOCAL_B_KEY")
    result = producer("submit", "--agent", "qa", "--backend", "local-a", "--backend", "local-b", "--limit", "2")
    assert result.exit_code == 2
    assert "missing LOCAL_B_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1


class Recording(BaseHTTPRequestHandler):
    """Any request at all, recorded and refused."""

    seen: list[str] = []

    def _any(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _any

    def log_message(self, *_args) -> None:
        pass


def test_submit_sends_nothing_to_any_provider_endpoint(genesis, monkeypatch, simulator):
    server, url = serve_http(Recording)
    for variable, value in {"OPENAI_BASE_URL": f"{url}/v1", "ANTHROPIC_BASE_URL": url, "MISTRAL_BASE_URL": url}.items():
        monkeypatch.setenv(variable, value)
    simulator.reset()
    try:
        for args in (["--dry-run"], ["--dry-run", "--reuse"], []):
            result = producer("submit", "--all-agents", "--limit", "2", "--json", *args)
            assert result.exit_code == 0, result.output
    finally:
        server.shutdown()
    assert Recording.seen == []
    assert simulator.stats()["requests_total"] == 0


def test_wait_draws_its_progress_bars_on_stderr_and_keeps_stdout_for_data(genesis, start_worker):
    start_worker("w1", concurrency=4)
    result = producer("submit", "--agent", "qa", "--backend", "openai", "--limit", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert "ok 2 err 0 halted 0" in result.stderr  # the openai bar, drawn once done
    assert "halted 0" not in result.stdout and "report:" in result.stdout
