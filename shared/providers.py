"""One adapter per provider over its official SDK, all behind `complete(provider, request)`.

Why this shape:
- Clients are built once per worker thread and reused: creating one costs ~35 ms of CPU, and
  one client shared by many threads contends on its connection pool (design §8).
- SDK retries are off (retries are ours: they must respect the global limiter and budget).
- Keys and base URLs are read from this process's environment only, never passed around.
- Every failure becomes a `ProviderError` with a `kind` the worker's retry policy understands.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

PROVIDER_ENV = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "mistral": ("MISTRAL_API_KEY", "MISTRAL_BASE_URL"),
}

RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection", "malformed"})


@dataclass(frozen=True)
class ChatRequest:
    model: str
    prompt: str
    system: str | None
    max_tokens: int
    timeout_s: float


@dataclass(frozen=True)
class ChatResponse:
    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    finish_reason: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


class ProviderError(Exception):
    """A failed call, classified: rate_limit | server | timeout | connection | malformed |
    client | auth | config. Only the first five are worth retrying."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.headers = dict(headers or {})
        self.error_type = error_type or kind

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def credentials(provider: str) -> tuple[str | None, str | None]:
    key_var, url_var = PROVIDER_ENV[provider]
    return os.environ.get(key_var) or None, os.environ.get(url_var) or None


# --- clients, one per (thread, provider, endpoint) -------------------------------------------

_local = threading.local()


def _client(provider: str, timeout_s: float) -> Any:
    key, base_url = credentials(provider)
    if not key:
        raise ProviderError("config", f"{PROVIDER_ENV[provider][0]} is not set in the worker's environment")
    cache: dict = _local.__dict__.setdefault("clients", {})
    cache_key = (provider, base_url, hash(key), timeout_s)
    client = cache.get(cache_key)
    if client is None:
        client = cache[cache_key] = _BUILDERS[provider](key, base_url, timeout_s)
    return client


def _build_openai(key: str, base_url: str | None, timeout_s: float) -> Any:
    import openai

    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)


def _build_anthropic(key: str, base_url: str | None, timeout_s: float) -> Any:
    import anthropic

    return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)


def _build_mistral(key: str, base_url: str | None, timeout_s: float) -> Any:
    from mistralai.client import Mistral

    return Mistral(api_key=key, server_url=base_url, timeout_ms=int(timeout_s * 1000))


_BUILDERS: dict[str, Callable[[str, str | None, float], Any]] = {
    "openai": _build_openai,
    "anthropic": _build_anthropic,
    "mistral": _build_mistral,
}


# --- calls ------------------------------------------------------------------------------------


def _messages(req: ChatRequest) -> list[dict[str, str]]:
    system = [{"role": "system", "content": req.system}] if req.system else []
    return [*system, {"role": "user", "content": req.prompt}]


def _call_openai(req: ChatRequest) -> ChatResponse:
    client = _client("openai", req.timeout_s)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=req.model, messages=_messages(req), max_tokens=req.max_tokens, temperature=0
    )
    latency_ms = (time.perf_counter() - started) * 1000
    completion = raw.parse()
    if not completion.choices:
        raise ProviderError("malformed", "OpenAI returned no choices")
    choice = completion.choices[0]
    usage = completion.usage
    return ChatResponse(
        text=choice.message.content or "",
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        latency_ms=latency_ms,
        finish_reason=choice.finish_reason,
        headers=dict(raw.headers),
    )


def _call_anthropic(req: ChatRequest) -> ChatResponse:
    client = _client("anthropic", req.timeout_s)
    kwargs: dict[str, Any] = {"system": req.system} if req.system else {}
    started = time.perf_counter()
    # No temperature: this SDK generation no longer takes one (current Claude models fix it).
    raw = client.messages.with_raw_response.create(
        model=req.model,
        max_tokens=req.max_tokens,
        messages=[{"role": "user", "content": req.prompt}],
        **kwargs,
    )
    latency_ms = (time.perf_counter() - started) * 1000
    message = raw.parse()
    text = "".join(getattr(block, "text", "") for block in message.content)
    return ChatResponse(
        text=text,
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        latency_ms=latency_ms,
        finish_reason=message.stop_reason,
        headers=dict(raw.headers),
    )


def _call_mistral(req: ChatRequest) -> ChatResponse:
    client = _client("mistral", req.timeout_s)
    started = time.perf_counter()
    response = client.chat.complete(
        model=req.model,
        messages=_messages(req),
        max_tokens=req.max_tokens,
        temperature=0,
        retries=None,
        timeout_ms=int(req.timeout_s * 1000),
    )
    latency_ms = (time.perf_counter() - started) * 1000
    if response is None or not response.choices:
        raise ProviderError("malformed", "Mistral returned no choices")
    choice = response.choices[0]
    content = choice.message.content if choice.message else ""
    if not isinstance(content, str):  # a list of content chunks
        content = "".join(getattr(chunk, "text", "") for chunk in content or [])
    usage = response.usage
    return ChatResponse(
        text=content,
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        latency_ms=latency_ms,
        finish_reason=str(choice.finish_reason) if choice.finish_reason else None,
    )


_CALLS: dict[str, Callable[[ChatRequest], ChatResponse]] = {
    "openai": _call_openai,
    "anthropic": _call_anthropic,
    "mistral": _call_mistral,
}


def complete(provider: str, req: ChatRequest, *, on_late: Callable[[ChatResponse], None] | None = None) -> ChatResponse:
    """Make one call within a total deadline of `req.timeout_s` (the SDK timeout bounds each
    read only); any failure comes out as a classified ProviderError. An answer that arrives
    after the deadline is handed to `on_late` (it was billed), from the caller's thread."""
    caller = _caller()
    answer = caller.submit(lambda: _complete_here(provider, req))
    try:
        return answer.result(timeout=req.timeout_s)
    except FutureTimeout:
        _local.caller = None  # this one stays busy with the abandoned call; the next gets a fresh one
        if on_late is not None:
            answer.add_done_callback(lambda done: done.exception() is None and on_late(done.result()))
        raise ProviderError("timeout", f"no complete answer within the {req.timeout_s:g}s deadline",
                            error_type="DeadlineExceeded") from None


def _complete_here(provider: str, req: ChatRequest) -> ChatResponse:
    try:
        return _CALLS[provider](req)
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ProviderError
        # `from None`: the SDK's own exception (whose text may echo a key) is not chained
        # under the scrubbed one, so no traceback prints it.
        raise classify(exc) from None


class _Caller:
    """One long-lived daemon thread per worker thread, which makes the calls (so SDK clients,
    cached per thread, are reused) while the worker thread waits with a deadline."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="genesis-call", daemon=True).start()

    def submit(self, call: Callable[[], ChatResponse]) -> Future:
        future: Future = Future()
        self._work.put((call, future))
        return future

    def _serve(self) -> None:
        while True:
            call, future = self._work.get()
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)


def _caller() -> _Caller:
    caller = getattr(_local, "caller", None)
    if caller is None:
        caller = _local.caller = _Caller()
    return caller


# --- error classification ---------------------------------------------------------------------


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status in (408, 409) or status >= 500:  # 529 = Anthropic overloaded
        return "server"
    return "client"


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}")  # OpenAI/Anthropic key shapes, masked or not


def scrub_secrets(text: str) -> str:
    """Error bodies can echo a (masked) key; keys never reach SQL, logs or reports."""
    for key_var, _ in PROVIDER_ENV.values():
        value = os.environ.get(key_var)
        if value and len(value) >= 12:  # real keys are long; short dummies would mangle words
            text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", "[redacted]", text)
    return _KEY_LIKE.sub("[redacted]", text)


def classify(exc: BaseException) -> ProviderError:
    """Map any SDK or transport exception to a ProviderError, without importing SDKs eagerly."""
    name = type(exc).__name__
    message = scrub_secrets(str(exc) or name)
    if len(message) > 500:
        message = message[:500] + "…"

    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None) or getattr(exc, "raw_response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    headers = {}
    if response is not None and getattr(response, "headers", None) is not None:
        headers = {k.lower(): v for k, v in dict(response.headers).items()}
    elif getattr(exc, "headers", None) is not None:
        headers = {k.lower(): v for k, v in dict(exc.headers).items()}

    if isinstance(status, int) and status >= 400:
        return ProviderError(_kind_for_status(status), message, status=status, headers=headers, error_type=name)
    lowered = name.lower()
    if "timeout" in lowered:
        return ProviderError("timeout", message, error_type=name)
    if "connect" in lowered or "network" in lowered or "remoteprotocol" in lowered or "noresponse" in lowered:
        return ProviderError("connection", message, error_type=name)
    if "validation" in lowered or "decode" in lowered:
        return ProviderError("malformed", message, error_type=name)
    if "transport" in lowered or "protocol" in lowered:
        return ProviderError("connection", message, error_type=name)
    return ProviderError("client", message, error_type=name)
