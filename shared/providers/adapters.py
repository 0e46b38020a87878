"""One adapter per provider over its official SDK: a `ChatRequest` in, a `ChatResponse` out.
Each takes the (thread's) client, so building and caching clients stays in clients.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from shared.providers.clients import read_timeout_s
from shared.providers.errors import ProviderError

# Every call asks for greedy decoding where the API takes it; reuse keys (shared.reuse) count on it.
TEMPERATURE = 0


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
    usage_reported: bool = True  # False: the response had no usage block (some gateways); tokens are 0



def _billed_without_choices(provider: str, usage: Any) -> ProviderError:
    """A 200 without choices was still billed: the error carries its usage (None when the body
    had none) so the paid call ledgers it before the retry."""
    billed = ((usage.prompt_tokens or 0), (usage.completion_tokens or 0)) if usage is not None else None
    return ProviderError("malformed", f"{provider} returned no choices (HTTP 200, billed)", billed=billed or (0, 0),
                         usage_reported=usage is not None)


def _messages(req: ChatRequest) -> list[dict[str, str]]:
    system = [{"role": "system", "content": req.system}] if req.system else []
    return [*system, {"role": "user", "content": req.prompt}]


def call_openai(client: Any, req: ChatRequest) -> ChatResponse:
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=req.model, messages=_messages(req), max_tokens=req.max_tokens, temperature=TEMPERATURE
    )
    latency_ms = (time.perf_counter() - started) * 1000
    completion = raw.parse()
    if not completion.choices:
        raise _billed_without_choices("OpenAI", completion.usage)
    choice = completion.choices[0]
    usage = completion.usage
    return ChatResponse(
        text=choice.message.content or "",
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        latency_ms=latency_ms,
        finish_reason=choice.finish_reason,
        headers=dict(raw.headers),
        usage_reported=usage is not None,
    )


def call_anthropic(client: Any, req: ChatRequest) -> ChatResponse:
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
    usage = getattr(message, "usage", None)  # the SDK builds responses without validating them
    return ChatResponse(
        text=text,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        latency_ms=latency_ms,
        finish_reason=message.stop_reason,
        headers=dict(raw.headers),
        usage_reported=usage is not None,
    )


def _mistral_messages(req: ChatRequest) -> list[Any]:
    """Typed messages: given plain dicts, this SDK builds a pydantic model class per call to
    validate them (~1-2 ms of CPU per call here); its own message models skip that."""
    from mistralai.client import models

    system = [models.SystemMessage(content=req.system)] if req.system else []
    return [*system, models.UserMessage(content=req.prompt)]


def call_mistral(client: Any, req: ChatRequest) -> ChatResponse:
    started = time.perf_counter()
    response = client.chat.complete(
        model=req.model,
        messages=_mistral_messages(req),
        max_tokens=req.max_tokens,
        temperature=TEMPERATURE,
        retries=None,
        timeout_ms=int(read_timeout_s(req.timeout_s) * 1000),
    )
    latency_ms = (time.perf_counter() - started) * 1000
    if response is None or not response.choices:
        raise _billed_without_choices("Mistral", response.usage if response is not None else None)
    choice = response.choices[0]
    content = choice.message.content if choice.message else ""
    if not isinstance(content, str):  # a list of content chunks
        content = "".join(getattr(chunk, "text", "") for chunk in content or [])
    usage = response.usage
    return ChatResponse(
        text=content,
        input_tokens=(usage.prompt_tokens or 0) if usage else 0,
        output_tokens=(usage.completion_tokens or 0) if usage else 0,
        latency_ms=latency_ms,
        finish_reason=str(choice.finish_reason) if choice.finish_reason else None,
        usage_reported=usage is not None,
    )
