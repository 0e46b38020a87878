"""What a job sends to its provider, built in one place for the worker (which sends it) and
the producer (which keys it for reuse), and the key that says two requests are the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.budget import max_output_tokens
from shared.config import Settings
from shared.providers import TEMPERATURE, ChatRequest

# Bump when what goes into the key changes, so old keys stop matching instead of matching wrongly.
REQUEST_KEY_VERSION = 1


def job_request(settings: Settings, backend: str, model: str, task: Any) -> ChatRequest:
    """The chat request of one (backend, suite task) with the model the job was recorded with."""
    return ChatRequest(
        model=model, prompt=task.prompt, system=task.system,
        max_tokens=max_output_tokens(settings, backend, task.max_tokens), timeout_s=settings.retry.call_timeout_s,
    )


def request_key(provider: str, request: ChatRequest) -> str:
    """A hash of everything that changes the answer (the timeout does not): equal keys mean the
    provider would receive the same request, so at temperature 0 it gives (nearly) the same answer."""
    fields = {
        "v": REQUEST_KEY_VERSION, "provider": provider, "model": request.model, "system": request.system,
        "prompt": request.prompt, "max_tokens": request.max_tokens, "temperature": TEMPERATURE,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
