"""Clean edges (issue 8, item 7): every command on a fresh database or with Redis or the
database away says so in one line with an exit code; unknown TOML keys are refused by name;
no secret reaches a message or a traceback."""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import replace

import pytest

from tests.support.env import ROOT
from tests.support.runs import one_line_error, producer

SECRET = "hunter2-s3cret"
COMMANDS = [
    ["status", "some-run"], ["report", "some-run"], ["resume", "some-run"], ["cancel", "some-run"], ["runs"],
    ["submit", "--agent", "qa", "--backend", "openai", "--limit", "1"], ["budget"], ["budget", "report"],
    ["budget", "resume"],
]


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    from shared.config import get_settings

    def point(database_url: str, redis_url: str, config: str | None = None) -> None:
        monkeypatch.setenv("GENESIS_CONFIG", config or str(ROOT / "config" / "genesis.toml"))
        monkeypatch.setenv("GENESIS_DATABASE_URL", database_url)
        monkeypatch.setenv("GENESIS_REDIS_URL", redis_url)
        monkeypatch.setenv("GENESIS_REPORTS_DIR", str(tmp_path / "reports"))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()




@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] in ("status", "report", "resume", "cancel")])
def test_an_unknown_run_on_a_fresh_database_is_bad_input(cli_env, redis_url, tmp_path, command):
    cli_env(f"sqlite:///{tmp_path / 'fresh.db'}", redis_url)
    assert "unknown run 'some-run'" in one_line_error(producer(*command), 2)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.sockets
def test_redis_away_is_one_line_without_its_password(cli_env, tmp_path, command):
    cli_env(f"sqlite:///{tmp_path / 'fresh.db'}", f"redis://:{SECRET}@127.0.0.1:1/0")
    result = producer(*command)
    if command == ["runs"]:  # SQL only: works without Redis
        assert result.exit_code == 0 and "no runs yet" in result.stdout
        return
    if command[0] in ("status", "report", "cancel"):  # SQL only: the run is unknown, Redis not needed
        assert "unknown run" in one_line_error(result, 2)
        return
    line = one_line_error(result, 1)
    assert "Redis is not answering" in line and SECRET not in line and ":***@127.0.0.1:1/0" in line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.sockets
def test_the_database_away_is_one_line_without_its_password(cli_env, redis_url, command):
    cli_env(f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/nowhere", redis_url)
    line = one_line_error(producer(*command), 1)
    assert "the database at" in line and SECRET not in line


@pytest.mark.parametrize(("table", "line", "named"), [
    ("[budget]", "limit = 5", "unknown key budget.limit"),
    ("[limits.openai]", "requests_per_minute = 5", "unknown key limits.openai.requests_per_minute"),
    ("", "[bugdet]\nlimit_usd = 5", "unknown key(s) bugdet"),
])
def test_unknown_toml_keys_are_refused_by_name(cli_env, redis_url, tmp_path, table, line, named):
    config = tmp_path / "genesis.toml"
    shipped = (ROOT / "config" / "genesis.toml").read_text()
    config.write_text(shipped.replace(f"{table}\n", f"{table}\n{line}\n", 1) if table else f"{shipped}\n{line}\n")
    cli_env(f"sqlite:///{tmp_path / 'fresh.db'}", redis_url, str(config))
    assert named in one_line_error(producer("runs"), 2)


def test_a_provider_exception_is_not_chained_under_the_scrubbed_one(monkeypatch):
    from shared import providers

    key = "sk-live-abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def leaky(_client, _request):
        raise RuntimeError(f"invalid key {key} for this project")

    monkeypatch.setitem(providers.PROVIDERS, "openai", replace(providers.PROVIDERS["openai"], call=leaky))
    request = providers.ChatRequest(model="m", prompt="p", system=None, max_tokens=5, timeout_s=5)
    with pytest.raises(providers.ProviderError) as caught:
        providers.complete("openai", request)
    printed = "".join(traceback.format_exception(caught.value))
    assert key not in printed and "[redacted]" in printed


def test_a_call_past_its_deadline_is_abandoned_and_its_late_answer_still_reported(monkeypatch):
    from shared import providers

    monkeypatch.setenv("OPENAI_API_KEY", "sk-sim")  # the client is built before the (patched) call
    release, late = threading.Event(), []
    answer = providers.ChatResponse(text="late", input_tokens=3, output_tokens=2, latency_ms=1, finish_reason="stop")

    def slow(_client, _request):
        release.wait(10)
        return answer

    monkeypatch.setitem(providers.PROVIDERS, "openai", replace(providers.PROVIDERS["openai"], call=slow))
    request = providers.ChatRequest(model="m", prompt="p", system=None, max_tokens=5, timeout_s=0.2)
    arrived = threading.Event()
    with pytest.raises(providers.ProviderError) as caught:
        providers.complete("openai", request, on_late=lambda r: (late.append(r), arrived.set()))
    assert caught.value.kind == "timeout" and not release.is_set()  # raised while the call still hung
    release.set()
    assert arrived.wait(5) and late == [answer]


@pytest.mark.sockets
def test_a_failing_webhook_is_logged_without_its_url(caplog):
    from shared.budget import post_webhook
    from shared.models import BudgetEvent

    event = BudgetEvent(kind="warning", level="warning", spent_usd=1.0, limit_usd=2.0)
    with caplog.at_level(logging.WARNING, logger="genesis.budget"):
        post_webhook(f"http://127.0.0.1:1/hook?token={SECRET}", event)
    assert "webhook failed" in caplog.text and SECRET not in caplog.text


@pytest.mark.sockets
def test_limits_with_redis_away_is_one_line_without_its_password(cli_env, tmp_path):
    cli_env(f"sqlite:///{tmp_path / 'fresh.db'}", f"redis://:{SECRET}@127.0.0.1:1/0")
    line = one_line_error(producer("limits"), 1)
    assert "Redis is not answering" in line and SECRET not in line
