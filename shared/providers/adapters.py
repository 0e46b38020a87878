"""One adapter per provider over its official SDK: a `ChatRequest` in, a `ChatResponse` out.
Each takes the (thread's) client, so building and caching clients stays in clients.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from shared.providers.clients import read_timeout_s
from shared.providers.errors import ProviderError
from shared.providers.params import Generation, anthropic_arguments, mistral_arguments, openai_arguments

# How a response says its allowance ran out (OpenAI and Mistral "length", Anthropic "max_tokens").
CUT_OFF_REASONS = frozenset({"length", "max_tokens"})
# The genesis simulator sends this header with every answer: how a job learns that its answer
# is simulated, with no request made to ask (simulator/server.py sets it).
SIMULATOR_HEADER = "x-genesis-simulator"


@dataclass(frozen=True)
class ChatRequest:
    model: str
    prompt: str
    system: str | None
    max_tokens: int  # the whole output allowance (reasoning or thinking included)
    timeout_s: float
    # The backend's own endpoint and key variable (its `base_url` / `api_key_env`); None: the
    # provider's (*_BASE_URL, else the provider's own; the provider's key variable).
    base_url: str | None = None
    key_env: str | None = None
    params: Generation = Generation()  # the backend's generation settings (shared.providers.params)


@dataclass(frozen=True)
class ChatResponse:
    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    finish_reason: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    usage_reported: bool = True  # False: the response had no usage block (some gateways); tokens are 0
    # Of output_tokens, those spent on reasoning or thinking (billed as output, never shown).
    reasoning_tokens: int = 0

    @property
    def truncated(self) -> bool:
        """Cut off by its allowance: the provider says so, or reasoning left no visible text."""
        return self.finish_reason in CUT_OFF_REASONS or (self.reasoning_tokens > 0 and not self.text.strip())

    @property
    def simulated(self) -> bool:
        """The answer came from the genesis simulator (it says so in a header)."""
        return any(name.lower() == SIMULATOR_HEADER for name in self.headers)


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
        model=req.model, messages=_messages(req), **openai_arguments(req.max_tokens, req.params)
    )
    latency_ms = (time.perf_counter() - started) * 1000
    completion = raw.parse()
    if not completion.choices:
        raise _billed_without_choices("OpenAI", completion.usage)
    choice = completion.choices[0]
    usage = completion.usage
    # completion_tokens already include the reasoning tokens: counted (and billed) once.
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    return ChatResponse(
        text=choice.message.content or "",
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        latency_ms=latency_ms,
        finish_reason=choice.finish_reason,
        headers=dict(raw.headers),
        usage_reported=usage is not None,
        reasoning_tokens=(getattr(details, "reasoning_tokens", None) or 0) if details else 0,
    )


def call_anthropic(client: Any, req: ChatRequest) -> ChatResponse:
    kwargs: dict[str, Any] = {"system": req.system} if req.system else {}
    started = time.perf_counter()
    raw = client.messages.with_raw_response.create(
        model=req.model,
        messages=[{"role": "user", "content": req.prompt}],
        **anthropic_arguments(req.max_tokens, req.params),
        **kwargs,
    )
    latency_ms = (time.perf_counter() - started) * 1000
    message = raw.parse()
    text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
    usage = getattr(message, "usage", None)  # the SDK builds responses without validating them
    return ChatResponse(
        text=text,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        latency_ms=latency_ms,
        finish_reason=message.stop_reason,
        headers=dict(raw.headers),
        usage_reported=usage is not None,
        reasoning_tokens=thinking_tokens(message.content, usage.output_tokens if usage else 0),
    )


def thinking_tokens(content: Any, output_tokens: int) -> int:
    """Anthropic bills thinking inside output_tokens without a count of its own: the thinking
    blocks' share, estimated from their text (a redacted block is counted whole as unknown, 0)."""
    from shared.tokens import estimate_tokens

    def field(block: Any, name: str) -> Any:  # the SDK's blocks, or a batch results line's dicts
        return block.get(name) if isinstance(block, dict) else getattr(block, name, None)

    thinking = "".join(field(block, "thinking") or "" for block in content if field(block, "type") == "thinking")
    return min(estimate_tokens(thinking), output_tokens) if thinking else 0


def _mistral_messages(req: ChatRequest) -> list[Any]:
    """Typed messages: given plain dicts, this SDK builds a pydantic model class per call to
    validate them (~1-2 ms of CPU per call here); its own message models skip that."""
    from mistralai.client import models

    system = [models.SystemMessage(content=req.system)] if req.system else []
    return [*system, models.UserMessage(content=req.prompt)]


def call_mistral(client: Any, req: ChatRequest) -> ChatResponse:
    from shared.providers.clients import last_response_headers

    started = time.perf_counter()
    response = client.chat.complete(
        model=req.model,
        messages=_mistral_messages(req),
        **mistral_arguments(req.max_tokens, req.params),
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
        headers=last_response_headers(client),
        usage_reported=usage is not None,
    )
