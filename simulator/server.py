"""The provider simulator: one HTTP server on 127.0.0.1 speaking OpenAI, Mistral and Anthropic.

A stdlib ThreadingHTTPServer (a thread per connection, HTTP/1.1 keep-alive) is enough: every
request spends its time sleeping the simulated latency, so threads overlap freely and 64+
requests in flight cost nothing; no new dependency is needed.

Order of work for a chat request: parse (400) -> rate-limit admission (429, answered at once)
-> fault draw -> latency -> injected error, or the answer (held back `timeout_s` more for a
timeout fault, truncated to invalid JSON for a malformed one, never sent for a drop: the
connection is closed instead). A malformed or dropped answer is billed like a whole one."""

from __future__ import annotations

import json
import random
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from shared.providers.adapters import SIMULATOR_HEADER
from simulator.answers import Oracle
from simulator.batches import PREFIXES as BATCH_PREFIXES
from simulator.batches import BatchStore
from simulator.config import SimulatorConfig, one_line
from simulator.finetune import fine_tuning_route
from simulator.ratelimit import Admission, RateLimiter
from simulator.reasoning import reasoning_spend, refusal, thinking_text
from simulator.sampling import Sampler
from simulator.stats import ServedStats
from simulator.text import truncate_to_tokens
from simulator.wire import (
    Api,
    BadRequest,
    ChatRequest,
    Completion,
    completion_body,
    error_body,
    parse_chat_request,
    rate_limit_headers,
    request_id_header,
)

INJECTED_429_RETRY_AFTER = "1"
ANONYMOUS_KEY = "anonymous"


@dataclass
class Reply:
    """An HTTP answer plus what the counters need to know about it."""

    status: int
    body: bytes
    model: str = "unknown"
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int] | None = None
    fault: str | None = None


class Simulator:
    """The simulator's state and behaviour, independent of HTTP so it can be reconfigured live."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = ServedStats()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._oracle = Oracle(config.suite)
        self._limiter = limiter_for(config)
        self._rng = random.Random(config.seed)
        self._sampler = Sampler()
        self.batches = BatchStore(self)

    def update(self, **knobs: Any) -> SimulatorConfig:
        """Change knobs live; limits or seed changes start fresh buckets or a fresh fault RNG."""
        new = self.config.merged(**knobs)
        oracle = Oracle(new.suite) if new.suite != self.config.suite else self._oracle
        with self._lock:
            old, self.config, self._oracle = self.config, new, oracle
            if limits_of(new) != limits_of(old):  # a provider changing its limits mid-run
                self._limiter = limiter_for(new)
            if new.seed != old.seed:
                self._rng = random.Random(new.seed)
        return new

    def reset(self) -> None:
        """Zero the counters, refill every rate-limit bucket, restart the fault RNG and forget every batch."""
        with self._lock:
            self._limiter = limiter_for(self.config)
            self._rng = random.Random(self.config.seed)
        self._sampler.reset()
        self.stats.reset()
        self.batches.reset()

    def stats_snapshot(self) -> dict:
        """What was served: realtime calls, and under `batch` what the batch APIs took and billed."""
        return {**self.stats.snapshot(), "batch": self.batches.stats()}

    def chat(self, api: Api, headers: dict[str, str], raw_body: bytes) -> Reply:
        config, oracle, limiter = self.config, self._oracle, self._limiter
        try:
            request = parse_chat_request(api, json.loads(raw_body or b"null"))
        except (ValueError, BadRequest) as error:
            return error_reply(api, 400, str(error))
        if (refused := refusal(request)) is not None:  # a setting the model does not take
            return error_reply(api, 400, refused[0], request.model, **refused[1])
        if api_key(headers) in config.revoked_keys and self.stats.requests_total >= config.revoke_after:
            return error_reply(api, 401, "Incorrect API key provided: the key was revoked.", request.model,
                               code="invalid_api_key")
        if request.model in config.forbidden_models.get(api_key(headers), ()):
            return error_reply(api, 403, f"Your organization must be verified to use the model {request.model}.",
                               request.model, code="model_not_found")
        max_tokens = request.max_tokens or config.default_max_tokens
        admission = limiter.admit(api_key(headers), request.model, request.prompt_tokens + max_tokens,
                                  input_tokens=request.prompt_tokens if api is Api.ANTHROPIC else None)
        limit_headers = rate_limit_headers(api, admission)
        if not admission.allowed:
            return self._rate_limited(request, admission, limit_headers)

        fault = self._draw_fault(config)
        self.stopping.wait(self._latency_s(config))
        if fault is not None and fault.isdigit():
            return injected_error_reply(request, int(fault), limit_headers)

        body_dict, completion = self.completion(request, config, oracle)
        if self._omits_usage(config):
            body_dict.pop("usage")
        if fault == "empty":  # billed all the same: its usage is counted below
            body_dict["choices" if "choices" in body_dict else "content"] = []
        body = json.dumps(body_dict).encode()
        reply = Reply(200, body, request.model, {**limit_headers, **request_id_header(api)}, fault=fault)
        if fault == "timeout":
            self.stopping.wait(config.timeout_s)
            return reply
        if fault == "malformed":
            reply.body = body[: len(body) // 2]
        reply.usage = (completion.input_tokens, completion.output_tokens)  # billed, whatever reaches the client
        return reply

    def completion(self, request: ChatRequest, config: SimulatorConfig | None = None,
                   oracle: Oracle | None = None) -> tuple[dict, Completion]:
        """The answer to a request and its body: one logic for realtime calls and batch requests,
        so both give the same answer for the same seed, model and prompt (at temperature 0)."""
        config, oracle = config or self.config, oracle or self._oracle
        max_tokens = request.max_tokens or config.default_max_tokens
        answer = oracle.answer(request.last_user_text, request.model, config.quality_for(request.model), config.seed,
                               judge_garbage=self._judge_garbage(config), fixed=config.answer_for(request.model),
                               sample=self._sampler.draw_key(request, config.sampling))
        reasoning = reasoning_spend(request, config.reasoning_tokens, max_tokens)
        text, output_tokens, truncated = truncate_to_tokens(answer, max_tokens - reasoning)
        scale = config.usage_scale
        completion = Completion(text, round(request.prompt_tokens * scale), round((reasoning + output_tokens) * scale),
                                truncated or reasoning >= max_tokens, reasoning_tokens=round(reasoning * scale),
                                thinking=thinking_text(reasoning) if request.api is Api.ANTHROPIC else "")
        return completion_body(request, completion), completion

    def _rate_limited(self, request: ChatRequest, admission: Admission, limit_headers: dict[str, str]) -> Reply:
        message = f"Rate limit exceeded for model {request.model}; retry after {admission.retry_after_header} s."
        reply = error_reply(request.api, 429, message, request.model)
        reply.headers.update(limit_headers)
        reply.headers["retry-after"] = admission.retry_after_header
        return reply

    def _draw_fault(self, config: SimulatorConfig) -> str | None:
        """One seeded draw against the cumulative fault rates (arrival order matters here)."""
        with self._lock:
            draw = self._rng.random()
        threshold = 0.0
        for fault, rate in config.fault_rates():
            threshold += rate
            if draw < threshold:
                return fault
        return None

    def _omits_usage(self, config: SimulatorConfig) -> bool:
        """Drawn only when the knob is set, so the fault draws of other configs are unchanged."""
        if not config.omit_usage_rate:
            return False
        with self._lock:
            return self._rng.random() < config.omit_usage_rate

    def _judge_garbage(self, config: SimulatorConfig) -> bool:
        """Whether a judge prompt gets an unparseable reply (drawn only when the knob is set)."""
        if not config.judge_garbage_rate:
            return False
        with self._lock:
            return self._rng.random() < config.judge_garbage_rate

    def _latency_s(self, config: SimulatorConfig) -> float:
        with self._lock:
            return draw_latency_s(config, self._rng)


def draw_latency_s(config: SimulatorConfig, rng: random.Random) -> float:
    """The fixed latency plus uniform jitter in [-jitter, +jitter], never below zero."""
    if not config.latency_jitter_ms:
        return config.latency_ms / 1000
    jitter = rng.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
    return max(0.0, config.latency_ms + jitter) / 1000


def limits_of(config: SimulatorConfig) -> tuple:
    return config.rpm, config.tpm, config.itpm, config.otpm, config.key_rpm, config.key_orgs


def limiter_for(config: SimulatorConfig) -> RateLimiter:
    return RateLimiter(config.rpm, config.tpm, itpm=config.itpm, otpm=config.otpm, key_rpm=config.key_rpm,
                       key_orgs=config.key_orgs)


def injected_error_reply(request: ChatRequest, status: int, limit_headers: dict[str, str]) -> Reply:
    reply = error_reply(request.api, status, f"Injected {status} error from the simulator.", request.model)
    reply.headers.update(limit_headers)
    if status == 429:
        reply.headers["retry-after"] = INJECTED_429_RETRY_AFTER
    reply.fault = str(status)
    return reply


def api_key(headers: dict[str, str]) -> str:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get("x-api-key") or ANONYMOUS_KEY


def error_reply(api: Api, status: int, message: str, model: str = "unknown", **fields: str) -> Reply:
    """`fields`: the error object's own `param` and `code` (OpenAI's and Mistral's bodies)."""
    body = json.dumps(error_body(api, status, message, **fields)).encode()
    return Reply(status, body, model, request_id_header(api))


def chat_api(path: str, user_agent: str) -> Api | None:
    """Which provider a chat request speaks: Mistral and OpenAI share a path, not a user agent."""
    if path == "/v1/messages":
        return Api.ANTHROPIC
    if path == "/v1/chat/completions":
        return Api.MISTRAL if "mistral" in user_agent.lower() else Api.OPENAI
    return None


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately; Nagle would add ~40 ms
    server: SimulatorHTTPServer

    def do_GET(self) -> None:
        if self.path == "/_sim/stats":
            self._send_json(200, self.server.simulator.stats_snapshot())
        elif self.path == "/_sim/config":
            self._send_json(200, self.server.simulator.config.model_dump(mode="json"))
        elif (answer := fine_tuning_route(self.server.simulator.config.fine_tunes, self.path)) is not None:
            self._send_json(*answer)
        elif not self._serve_batch(b""):
            self._send_not_found()

    def do_POST(self) -> None:
        raw_body = self.rfile.read(int(self.headers.get("content-length") or 0))
        simulator = self.server.simulator
        api = chat_api(self.path, self.headers.get("user-agent", ""))
        if api is not None:
            self._serve_chat(simulator, api, raw_body)
        elif self.path == "/_sim/reset":
            simulator.reset()
            self._send_json(200, simulator.stats.snapshot())
        elif self.path == "/_sim/config":
            self._update_config(simulator, raw_body)
        elif not self._serve_batch(raw_body):
            self._send_not_found()

    def _serve_batch(self, raw_body: bytes) -> bool:
        """The batch and file routes (simulator/batches.py); False when the path is not one."""
        if not self.path.startswith(BATCH_PREFIXES):
            return False
        answer = self.server.simulator.batches.handle(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw_body)
        if answer is None:
            return False
        if answer.dropped:  # closed unanswered: the client sees the connection end, no reply
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        self._send(answer.status, answer.body, {}, answer.content_type)
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: thousands of requests a minute would drown the console."""

    def _serve_chat(self, simulator: Simulator, api: Api, raw_body: bytes) -> None:
        simulator.stats.started()
        try:
            reply = simulator.chat(api, {k.lower(): v for k, v in self.headers.items()}, raw_body)
        except Exception:  # a simulator bug still answers, as a provider's 500 would, and shows
            traceback.print_exc()
            reply = error_reply(api, 500, "The simulator failed to answer.")
        # counted before sending, so a client holding its answer always finds it in the stats
        simulator.stats.finished(api, reply.model, reply.status, reply.usage, reply.fault)
        if reply.fault == "drop":  # served and billed, then the connection goes before any reply
            self.close_connection = True
            return
        self._send(reply.status, reply.body, reply.headers)

    def _update_config(self, simulator: Simulator, raw_body: bytes) -> None:
        try:
            knobs = json.loads(raw_body or b"{}")
            if not isinstance(knobs, dict):
                raise ValueError("the config body must be a JSON object")
            config = simulator.update(**knobs)
        except ValidationError as error:
            self._send_json(400, {"error": {"message": one_line(error)}})
        except ValueError as error:  # also a ConfigError from a suite that cannot be loaded
            self._send_json(400, {"error": {"message": str(error)}})
        else:
            self._send_json(200, config.model_dump(mode="json"))

    def _send_not_found(self) -> None:
        self._send_json(404, {"error": {"message": f"no route for {self.command} {self.path}"}})

    def _send_json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), {})

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.send_header(SIMULATOR_HEADER, "genesis-bench")  # what marks a job's answer as simulated
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. a timeout fault); nothing to do


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for connections kept alive by clients
    request_queue_size = 512  # bursts of hundreds of connects must not hit a full backlog
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, SimulatorHandler)


@dataclass
class SimulatorHandle:
    """A simulator running in a background thread of this process."""

    server: SimulatorHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.port}"

    @property
    def config(self) -> SimulatorConfig:
        return self.server.simulator.config

    def stats(self) -> dict:
        return self.server.simulator.stats_snapshot()

    def reset(self) -> None:
        self.server.simulator.reset()

    def update(self, **knobs: Any) -> SimulatorConfig:
        return self.server.simulator.update(**knobs)

    def stop(self) -> None:
        self.server.simulator.stopping.set()  # wakes handlers sleeping latency or a timeout fault
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_simulator(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> SimulatorHandle:
    """Bind (port 0 picks a free port) and serve in a daemon thread; ready when this returns."""
    server = SimulatorHTTPServer((host, port), Simulator(config))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="simulator", daemon=True
    )
    thread.start()
    return SimulatorHandle(server, thread)


def serve_forever(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 8900,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the calling thread until interrupted; `on_ready` gets the URL once bound."""
    with SimulatorHTTPServer((host, port), Simulator(config)) as server:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.server_address[1]}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.simulator.stopping.set()
