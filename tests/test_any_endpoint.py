"""A run works against any server that speaks a provider's API (a gateway, a local
OpenAI-compatible server), not only our simulator, and is then not reported as simulated."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.http_server import serve_http
from tests.support.runs import submit, wait_until_reported

pytestmark = pytest.mark.sockets  # an OpenAI-compatible server of its own


class OpenAICompatible(BaseHTTPRequestHandler):
    """Just enough of POST /v1/chat/completions; nothing else (no /_sim/stats)."""

    protocol_version = "HTTP/1.1"
    served: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        self.served.append(body["model"])
        self._send(200, {
            "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "I am not sure.", "refusal": None}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
        })

    def do_GET(self) -> None:  # noqa: N802
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args) -> None:
        pass


def test_a_run_against_another_openai_compatible_server(genesis, start_worker, monkeypatch):
    server, root = serve_http(OpenAICompatible)
    base_url = f"{root}/v1"
    genesis["OPENAI_BASE_URL"] = base_url  # the workers' environment
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)  # the producer's
    try:
        start_worker("w1", concurrency=4)
        snap = wait_until_reported(submit("--agent", "qa", "--backend", "openai", "--limit", "4"))
    finally:
        server.shutdown()
    assert snap["by_status"]["ok"] == 4
    assert OpenAICompatible.served == ["gpt-5-mini"] * 4
    report = json.loads(open(snap["report"].replace("report.md", "report.json")).read())
    assert report["simulated"] is False
    assert report["backends"][0]["input_tokens"] == 4 * 30
