"""The three providers' wire formats: reading chat requests and writing the bodies and headers
the official SDKs validate strictly (OpenAI and Mistral chat completions, Anthropic messages)."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from simulator.ratelimit import Admission, LimitState
from simulator.text import count_prompt_tokens


class Api(StrEnum):
    OPENAI = "openai"
    MISTRAL = "mistral"
    ANTHROPIC = "anthropic"


class BadRequest(Exception):
    """A request the provider would refuse with 400; the message goes back to the client."""


@dataclass(frozen=True)
class ChatRequest:
    api: Api
    model: str
    last_user_text: str
    prompt_tokens: int
    max_tokens: int | None
    # As the SDK sent them (None: absent, the provider's default applies; simulator.sampling).
    temperature: float | None = None
    seed: int | None = None  # OpenAI `seed`, Mistral `random_seed`
    # The generation settings as sent (simulator/reasoning.py judges them): the request's own
    # keys among temperature, top_p, max_tokens, max_completion_tokens, reasoning_effort, thinking.
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int  # reasoning or thinking included, as the providers bill them
    truncated: bool
    reasoning_tokens: int = 0
    thinking: str = ""  # an Anthropic thinking block's text


def text_of(content: object) -> str:
    """Text of a message's content: a string, or a list of parts with `text` (other parts ignored)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def parse_chat_request(api: Api, body: object) -> ChatRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: a non-empty list of message objects is required")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if api is Api.ANTHROPIC and max_tokens is None:
        raise BadRequest("max_tokens: field required")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("max_tokens: must be a positive integer")
    temperature, seed = body.get("temperature"), body.get("seed", body.get("random_seed"))
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise BadRequest("temperature: must be a number between 0 and 2")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed: must be an integer")
    texts = [text_of(message.get("content")) for message in messages]
    if api is Api.ANTHROPIC and body.get("system"):
        texts.insert(0, text_of(body["system"]))
    user_texts = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return ChatRequest(
        api=api,
        model=model,
        last_user_text=user_texts[-1] if user_texts else "",
        prompt_tokens=count_prompt_tokens(texts),
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        seed=seed,
        settings={key: body[key] for key in SETTINGS if key in body},
    )


SETTINGS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "reasoning_effort", "thinking")


def completion_body(request: ChatRequest, completion: Completion) -> dict:
    if request.api is Api.ANTHROPIC:
        thinking = ([{"type": "thinking", "thinking": completion.thinking, "signature": uuid.uuid4().hex}]
                    if completion.thinking else [])
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "content": [*thinking, {"type": "text", "text": completion.text}],
            "model": request.model,
            "stop_reason": "max_tokens" if completion.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens},
        }
    prefix = "chatcmpl-" if request.api is Api.OPENAI else ""
    return {
        "id": f"{prefix}{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": "length" if completion.truncated else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
            **({"completion_tokens_details": {"reasoning_tokens": completion.reasoning_tokens}}
               if completion.reasoning_tokens else {}),
        },
    }


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
MISTRAL_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_body(api: Api, status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    if api is Api.ANTHROPIC:
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    if api is Api.MISTRAL:
        kind = MISTRAL_ERROR_TYPES.get(status, fallback)
        return {"object": "error", "message": message, "type": kind, "param": param, "code": code or str(status)}
    kind = OPENAI_ERROR_TYPES.get(status, fallback)
    code = code or ("rate_limit_exceeded" if status == 429 else None)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def request_id_header(api: Api) -> dict[str, str]:
    name = "request-id" if api is Api.ANTHROPIC else "x-request-id"
    prefix = "req_" if api is Api.ANTHROPIC else ""
    return {name: f"{prefix}{uuid.uuid4().hex}"}


def rate_limit_headers(api: Api, admission: Admission) -> dict[str, str]:
    """The provider's own rate-limit headers for each limited dimension (none when unlimited):
    OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens}; Anthropic's
    anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset};
    Mistral's x-ratelimit-{limit,remaining}-{req,tokens}-minute (it sends no reset)."""
    headers: dict[str, str] = {}
    dimensions = [("requests", admission.requests), ("tokens", admission.tokens)]
    if api is Api.ANTHROPIC:
        dimensions += [("input-tokens", admission.input_tokens), ("output-tokens", admission.output_tokens)]
    for dimension, state in dimensions:
        if state is not None:
            headers.update(_dimension_headers(api, dimension, state))
    if api is Api.ANTHROPIC and admission.tokens is None and (admission.input_tokens or admission.output_tokens):
        # its documented `tokens-*`: the most restrictive of the token limits in force
        tightest = min((s for s in (admission.input_tokens, admission.output_tokens) if s is not None),
                       key=lambda s: s.remaining)
        headers.update(_dimension_headers(api, "tokens", tightest))
    return headers


def _dimension_headers(api: Api, dimension: str, state: LimitState) -> dict[str, str]:
    if api is Api.ANTHROPIC:
        reset_at = datetime.fromtimestamp(math.ceil(time.time() + state.reset_s), UTC)
        prefix = f"anthropic-ratelimit-{dimension}"
        return {
            f"{prefix}-limit": str(state.limit),
            f"{prefix}-remaining": str(state.remaining),
            f"{prefix}-reset": reset_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
    if api is Api.MISTRAL:
        name = "req" if dimension == "requests" else dimension
        return {
            f"x-ratelimit-limit-{name}-minute": str(state.limit),
            f"x-ratelimit-remaining-{name}-minute": str(state.remaining),
        }
    return {
        f"x-ratelimit-limit-{dimension}": str(state.limit),
        f"x-ratelimit-remaining-{dimension}": str(state.remaining),
        f"x-ratelimit-reset-{dimension}": format_duration(state.reset_s),
    }


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: "250ms", "1s", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text
