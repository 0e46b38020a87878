"""Generation settings against today's models, end to end: real workers, the real SDKs and the
simulator, which refuses what OpenAI's reasoning models refuse, reports reasoning and thinking
tokens and cuts answers off at their allowance (simulator/reasoning.py)."""

from __future__ import annotations

import json

import pytest

from tests.support.env import ROOT
from tests.support.runs import ledger_rows, producer, run_jobs, submit, wait_until_reported

SHIPPED = (ROOT / "config" / "genesis.toml").read_text()
OPENAI_BLOCK = '''model = "gpt-5-mini"             # a reasoning model: no temperature but its default, max_completion_tokens
params = { reasoning_effort = "low", max_output_tokens = 1024 }   # room to reason before the answer
'''
ANTHROPIC_BLOCK = 'model = "claude-haiku-4-5"\n'


def use_toml(genesis, monkeypatch, tmp_path, text: str) -> None:
    """The producer and the workers started after this read `text` as their config."""
    from shared.config import get_settings

    assert OPENAI_BLOCK in SHIPPED and ANTHROPIC_BLOCK in SHIPPED  # the shipped config these tests edit
    path = tmp_path / "params.toml"
    path.write_text(text)
    genesis["GENESIS_CONFIG"] = str(path)
    monkeypatch.setenv("GENESIS_CONFIG", str(path))
    get_settings.cache_clear()


def by_backend(run_id: str) -> dict[str, list]:
    jobs: dict[str, list] = {}
    for job in run_jobs(run_id):
        jobs.setdefault(job.backend, []).append(job)
    return jobs


def test_a_reasoning_model_with_the_shipped_config_answers_and_its_reasoning_is_paid_once(
        genesis, start_worker, simulator):
    """gpt-5-mini with the shipped settings: no 400; each job's reasoning tokens are recorded
    apart, inside its output tokens (as OpenAI bills them), and the ledger holds exactly the
    tokens the provider served, at the output price."""
    from shared.budget import call_cost
    from shared.config import get_settings

    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "3")
    wait_until_reported(run_id)

    jobs = run_jobs(run_id)
    assert [job.status for job in jobs] == ["ok"] * 3, [job.error_message for job in jobs]
    assert simulator.stats()["by_status"] == {"200": 3}
    assert all(job.reasoning_tokens == 64 and job.output_tokens > 64 and job.truncated is False for job in jobs)
    entries = {entry.job_id: entry for entry in ledger_rows(run_id) if entry.operation == "inference"}
    settings = get_settings()
    for job in jobs:
        entry = entries[job.id]
        assert (entry.output_tokens, entry.reasoning_tokens) == (job.output_tokens, job.reasoning_tokens)
        assert entry.cost_usd == pytest.approx(call_cost(settings, "gpt-5-mini", job.input_tokens, job.output_tokens))
    served = simulator.stats()
    assert sum(e.output_tokens for e in entries.values()) == served["output_tokens"]  # counted once


def test_a_refused_setting_fails_its_backend_in_one_line_without_retries(
        genesis, start_worker, simulator, monkeypatch, tmp_path):
    """An OpenAI reasoning model given temperature 0: each of its jobs fails after one call with
    one line naming backend, model and setting; the other backend's jobs complete; `submit
    --wait` shows the line."""
    use_toml(genesis, monkeypatch, tmp_path, SHIPPED.replace(
        OPENAI_BLOCK, 'model = "gpt-5-mini"\nparams = { temperature = 0, max_output_tokens = 1024 }\n'))
    start_worker("w1", concurrency=4)
    result = producer("submit", "--agent", "qa", "--backend", "openai", "--backend", "mistral-base",
                      "--limit", "2", "--wait")
    run_id = result.stdout.split()[1].rstrip(":")

    jobs = by_backend(run_id)
    assert [job.status for job in jobs["mistral-base"]] == ["ok", "ok"]
    refused = jobs["openai"]
    assert [(job.status, job.attempts) for job in refused] == [("error", 1), ("error", 1)]
    line = refused[0].error_message
    assert "\n" not in line
    assert line.startswith("backend 'openai': model 'gpt-5-mini' refuses the setting 'temperature'")
    assert "Only the default (1) value is supported" in line
    assert simulator.stats()["by_model_status"]["gpt-5-mini"] == {"400": 2}  # one call each, no retry
    assert "2 job(s) failed" in result.stderr and "refuses the setting 'temperature'" in result.stderr
    print(result.stderr)  # the line as a user sees it (for the issue note)


def test_an_allowance_spent_on_reasoning_is_recorded_as_truncated(
        genesis, start_worker, simulator, monkeypatch, tmp_path):
    """High effort within 100 tokens: the model reasons the whole allowance and says nothing;
    the job is `ok`, cut off, scored by its scorer (0 for an empty answer), paid in full, and the
    report counts it."""
    use_toml(genesis, monkeypatch, tmp_path, SHIPPED.replace(
        OPENAI_BLOCK, 'model = "gpt-5-mini"\nparams = { reasoning_effort = "high", max_output_tokens = 100 }\n'))
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "2")
    wait_until_reported(run_id)

    jobs = run_jobs(run_id)
    assert [(job.status, job.output, job.score, job.truncated) for job in jobs] == [("ok", "", 0.0, True)] * 2
    assert all(job.output_tokens == job.reasoning_tokens == 100 for job in jobs)
    assert all("cut off by its output allowance" in job.scorer_detail for job in jobs)
    report_json = json.loads(producer("report", run_id, "--json").stdout)["json"]
    report = json.loads(open(report_json).read())
    row = next(b for b in report["backends"] if b["backend"] == "openai")
    assert (row["truncated"], row["reasoning_tokens"]) == (2, 200)


def test_anthropic_thinking_is_sent_budgeted_and_paid_as_output(
        genesis, start_worker, simulator, monkeypatch, tmp_path):
    """reasoning_budget_tokens becomes Anthropic's thinking budget; the thinking block's tokens
    are recorded apart and its whole allowance (thinking included) is what the dry run reserves."""
    use_toml(genesis, monkeypatch, tmp_path, SHIPPED.replace(
        ANTHROPIC_BLOCK, 'model = "claude-haiku-4-5"\nparams = { reasoning_budget_tokens = 1024, '
                         'max_output_tokens = 2048 }\n'))
    dry = json.loads(producer("submit", "--agent", "qa", "--backend", "anthropic", "--limit", "2", "--dry-run",
                              "--json").stdout)
    assert dry["by_backend"]["anthropic"]["output_tokens"] == 2 * 2048
    assert dry["settings"]["anthropic"] == {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "anthropic", "--limit", "2")
    wait_until_reported(run_id)

    jobs = run_jobs(run_id)
    assert [job.status for job in jobs] == ["ok", "ok"], [job.error_message for job in jobs]
    assert all(job.reasoning_tokens == 128 and job.output_tokens > 128 for job in jobs)
    assert sum(e.reasoning_tokens for e in ledger_rows(run_id)) == 256


def test_check_sends_one_tiny_paid_request_per_backend(genesis, start_worker, simulator, monkeypatch, tmp_path):
    """`producer check`: one job per backend through the workers (ledgered like any call); it
    prints model, settings, latency and cost, and exits 1 naming a setting a model refuses."""
    start_worker("w1", concurrency=4)
    result = producer("check", "openai", "anthropic", "mistral-base", "--json")
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)
    rows = {row["backend"]: row for row in checked["backends"]}
    assert rows["openai"]["settings"] == {"max_completion_tokens": 1024, "reasoning_effort": "low"}
    assert all(row["status"] == "ok" and row["settings_accepted"] and row["cost_usd"] > 0 and row["latency_ms"] >= 0
               for row in rows.values())
    ledger = ledger_rows(checked["run_id"])
    assert sorted(e.backend for e in ledger) == ["anthropic", "mistral-base", "openai"]
    assert {e.backend: e.cost_usd for e in ledger} == {b: row["cost_usd"] for b, row in rows.items()}
    assert simulator.stats()["requests_total"] == 3
    print(result.stdout)


def test_check_names_a_setting_the_model_refuses(genesis, start_worker, simulator, monkeypatch, tmp_path):
    """An o-series model sent `max_tokens` (an older server's field): exit 1 and its one line."""
    use_toml(genesis, monkeypatch, tmp_path, SHIPPED.replace(
        OPENAI_BLOCK, 'model = "o4-mini"\nmax_tokens_field = "max_tokens"\n'
                      '[pricing."o4-mini"]\ninput_per_mtok = 1.10\noutput_per_mtok = 4.40\n'))
    start_worker("w1", concurrency=2)
    refused = producer("check", "openai")
    assert refused.exit_code == 1
    assert "openai: model o4-mini FAILED (max_tokens=\"each task's max_tokens\")" in refused.stderr
    assert "refuses the setting 'max_tokens'" in refused.stderr
    assert simulator.stats()["by_model_status"]["o4-mini"] == {"400": 1}
    print(refused.stdout, refused.stderr)


def test_check_without_a_worker_says_so_and_cancels_its_run(genesis, simulator):
    """No worker consumes the queue: after --timeout, `check` says no worker took the request and
    cancels its run, so a worker started later pays for nothing."""
    from shared.progress import run_snapshot

    result = producer("check", "openai", "--timeout", "1", "--json")
    assert result.exit_code == 1
    row = json.loads(result.stdout)["backends"][0]
    assert (row["status"], row["settings_accepted"], row["cost_usd"]) == ("queued", None, None)
    assert run_snapshot(json.loads(result.stdout)["run_id"])["status"] == "cancelled"
    assert simulator.stats()["requests_total"] == 0
