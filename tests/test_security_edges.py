"""Small but real security edges (issue 27, security): control characters of model answers never
reach a text report or a terminal line; Flower refuses to start without auth and listens on
127.0.0.1 unless told otherwise; the budget webhook speaks http(s) only and follows no redirect;
a backend's base_url reaches SQL without its credentials; api_key_env cannot name this
project's own settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.env import ROOT, genesis_env, use_config
from tests.support.http_server import serve_http
from tests.support.runs import producer
from tests.support.waiting import wait_for

# What a hostile answer may carry: terminal reset (ESC c), a DCS (ESC P ... ESC \), SO/SI,
# DECALN (ESC # 8), a C1 CSI (0x9b), BEL, DEL, NUL.
CONTROLS = ["\x1bc", "\x1bP1;2q\x1b\\", "\x0e\x0f", "\x1b#8", "\x9b31m", "\x07", "\x7f", "\x00"]


def _controls_in(text: str) -> list[str]:
    return [char for char in text if (ord(char) < 32 and char not in "\t\n\r") or 0x7f <= ord(char) <= 0x9f]


@pytest.mark.parametrize("hostile", CONTROLS, ids=lambda text: text.encode("unicode_escape").decode())
def test_control_characters_never_reach_a_text_report_or_a_terminal_line(hostile, capsys):
    """md() is the one escaping of report.md, the latest copy, the cost dashboard and compare's
    table; `shown` of the producer's lines that quote a model or a provider (bad_input, failure,
    the failed jobs of `submit --wait`)."""
    from producer.output import bad_input, shown
    from shared.report.markdown import md

    answer = f"before {hostile} after"
    for rendered in (md(answer), shown(answer)):
        assert _controls_in(rendered) == [] and "before" in rendered and "after" in rendered
        assert f"\\x{ord(hostile[0]):02x}" in rendered  # made visible, not silently dropped
    bad_input(f"model {answer!s} is unknown")
    assert _controls_in(capsys.readouterr().err) == []


def test_text_without_controls_is_left_as_it_is():
    from shared.terminal import without_controls

    text = "tab\there, line\nbreak, é, ✓, 10 $"
    assert without_controls(text) is text


# --- Flower ------------------------------------------------------------------------------------


def _free_port_of_ours() -> int:
    """A free port in 25000-25999 (the range this project's tests may open)."""
    for port in range(25000 + os.getpid() % 500, 26000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 25000-25999")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _flower(env: dict[str, str], port: int, log: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "worker.app", "flower", f"--port={port}", *options],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def flower_env(redis_url, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}
    env.pop("GENESIS_FLOWER_UNAUTHENTICATED", None)
    return {**env, **genesis_env(database_url=f"sqlite:///{tmp_path}/t.db", redis_url=redis_url,
                                 reports_dir=tmp_path / "reports", simulator_url=None)}


@pytest.mark.parametrize(("basic_auth", "auth", "environ", "refused"), [
    ([], "", {}, True),
    ([""], "", {}, True),  # FLOWER_BASIC_AUTH=''
    ([], "", {"GENESIS_FLOWER_UNAUTHENTICATED": "yes"}, True),  # only "1" says so
    (["admin:pw"], "", {}, False),
    ([], ".*@example\\.com", {}, False),  # OAuth
    ([], "", {"GENESIS_FLOWER_UNAUTHENTICATED": "1"}, False),
])
def test_what_counts_as_flower_auth(basic_auth, auth, environ, refused):
    from types import SimpleNamespace

    from worker.flower import refusal

    assert (refusal(SimpleNamespace(basic_auth=basic_auth, auth=auth), environ) is not None) is refused


@pytest.mark.processes
def test_flower_without_auth_refuses_to_start(flower_env, tmp_path):
    port = _free_port_of_ours()
    flower = _flower(flower_env, port, tmp_path / "flower.log")
    try:
        code = flower.wait(60)
    finally:
        if flower.poll() is None:
            os.killpg(flower.pid, signal.SIGTERM)
            flower.wait(20)
    said = (tmp_path / "flower.log").read_text()
    assert code == 2, said
    assert "error: Flower can shut workers down and send tasks, so it needs auth" in said
    assert "GENESIS_FLOWER_UNAUTHENTICATED=1" in said and "Traceback" not in said
    assert _listening_addresses(port) == set()


@pytest.mark.processes
@pytest.mark.sockets
@pytest.mark.parametrize("auth", [{"FLOWER_BASIC_AUTH": "admin:pw"}, {"GENESIS_FLOWER_UNAUTHENTICATED": "1"}],
                         ids=["basic auth", "explicitly unauthenticated"])
def test_flower_listens_on_loopback_only_unless_told(flower_env, tmp_path, auth):
    port = _free_port_of_ours()
    flower = _flower({**flower_env, **auth}, port, tmp_path / "flower.log")
    try:
        addresses = wait_for(lambda: _listening_addresses(port) or flower.poll() is not None, timeout=60,
                             interval=0.3, what="Flower to listen")
        assert addresses == {"0100007F"}, (tmp_path / "flower.log").read_text()  # 127.0.0.1 only
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(20)


# --- the budget webhook ----------------------------------------------------------------------


@pytest.mark.sockets
def test_the_webhook_follows_no_redirect():
    """A redirect turned the POST into a GET to wherever it pointed (an internal address too)."""
    from shared.budget.webhook import post_webhook
    from shared.models import BudgetEvent

    hits: list[tuple[str, str]] = []

    class Redirecting(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append((self.command, self.path))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(302 if self.path == "/hook" else 200)
            self.send_header("Location", "/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *_args) -> None:
            pass

    server, url = serve_http(Redirecting)
    try:
        post_webhook(f"{url}/hook", BudgetEvent(kind="warning", level="warning", spent_usd=1.0, limit_usd=4.0))
    finally:
        server.shutdown()
        server.server_close()
    assert hits == [("POST", "/hook")]


def test_the_webhook_opens_no_other_scheme(tmp_path, caplog):
    from shared.budget.webhook import post_webhook
    from shared.models import BudgetEvent

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    post_webhook(secret.as_uri(), BudgetEvent(kind="warning", level="warning", spent_usd=1.0, limit_usd=4.0))
    assert "unknown url type: file" in caplog.text


# --- config trust ------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "named"), [
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\napi_key_env = "GENESIS_DATABASE_URL"',
     "api_key_env may not name one of genesis-bench's own settings"),
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\napi_key_env = "genesis_redis_url"', "own settings"),
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\napi_key_env = "HOME"', "with KEY or TOKEN in its name"),
    ('[backends.x]\nprovider = "openai"\nmodel = "m"\napi_key_env = "DATABASE_URL"', "with KEY or TOKEN"),
    ('[budget]\nwebhook_url = "file:///etc/passwd"', "webhook_url must be an http:// or https:// URL"),
    ('[budget]\nwebhook_url = "ftp://hooks.example/x"', "webhook_url must be an http:// or https:// URL"),
    ('[budget]\nwebhook_url = "https:///no-host"', "with a host"),
], ids=lambda value: value.split("\n")[-1] if "\n" in value else None)
def test_untrustworthy_config_values_are_refused_in_one_line(monkeypatch, tmp_path, redis_url, table, named):
    use_config(monkeypatch, tmp_path, table, redis_url)
    result = producer("budget")
    assert result.exit_code == 2 and named in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_key_variables_that_look_like_keys_are_taken(monkeypatch, tmp_path, redis_url):
    from shared.config import load_settings

    use_config(monkeypatch, tmp_path, "".join(
        f'[backends.b{i}]\nprovider = "openai"\nmodel = "m"\napi_key_env = "{name}"\n'
        for i, name in enumerate(["VLLM_API_KEY", "LOCAL_KEY", "GATEWAY_TOKEN", "openai_key_2"])), redis_url)
    assert [b.api_key_env for b in load_settings().backends.values()] == [
        "VLLM_API_KEY", "LOCAL_KEY", "GATEWAY_TOKEN", "openai_key_2"]


def test_a_base_url_reaches_sql_without_its_credentials(monkeypatch, tmp_path, redis_client):
    """The run's config snapshot (run.config) names the endpoint, not its password or token."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Run
    from tests.support.env import SCRATCH_REDIS_URL

    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text() + """
[backends.gateway]
provider = "openai"
model = "gpt-5-mini"
base_url = "https://gw-user:gw-s3cret@gateway.example/v1?api_key=q-s3cret"
api_key_env = "GATEWAY_KEY"
""", SCRATCH_REDIS_URL)
    monkeypatch.setenv("GATEWAY_KEY", "not-used")
    result = producer("submit", "--agent", "qa", "--backend", "gateway", "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    with session_scope() as session:
        config = session.exec(select(Run.config)).one()
    stored = json.dumps(config)
    assert "s3cret" not in stored and "gw-user" not in stored
    assert config["backends"]["gateway"]["base_url"] == "https://***@gateway.example/v1?***"
