"""What a job sends to its provider, built in one place for the worker (which sends it) and
the producer (which keys it for reuse), and the key that says two requests are the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.budget import max_output_tokens
from shared.config import Settings
from shared.providers import ChatRequest

# Bump when what goes into the key changes, so old keys stop matching instead of matching wrongly.
REQUEST_KEY_VERSION = 1


def job_request(settings: Settings, backend: str, model: str, task: Any) -> ChatRequest:
    """The chat request of one (backend, suite task) with the model the job was recorded with."""
    config = settings.backends[backend]
    return ChatRequest(
        model=model, prompt=task.prompt, system=task.system,
        max_tokens=max_output_tokens(settings, backend, task.max_tokens), timeout_s=settings.retry.call_timeout_s,
        base_url=config.base_url, key_env=settings.key_variables(backend)[0], params=settings.generation(backend),
    )


def backend_settings(settings: Settings, backend: str) -> dict[str, Any]:
    """What each request of a backend sends besides its messages, in the provider's own names
    (`submit --dry-run`, `producer check`): its output allowance is a number when the backend
    sets `max_output_tokens`, else "each task's max_tokens" (capped by the backend's)."""
    from shared.providers.params import sent

    config = settings.backends[backend]
    arguments = sent(config.provider, 0, settings.generation(backend))
    allowance_field = next(iter(arguments))  # every mapping puts the allowance first
    if config.params.max_output_tokens is not None:
        arguments[allowance_field] = config.params.max_output_tokens
    else:
        cap = f", at most {config.max_tokens}" if config.max_tokens else ""
        arguments[allowance_field] = f"each task's max_tokens{cap}"
    return arguments


def judge_request(settings: Settings, agent: str, task: Any, answer: str) -> tuple[str, ChatRequest]:
    """(provider, request) of the judge call that grades `answer` to a `judge` task."""
    from shared.scoring.judge import JUDGE_SYSTEM

    provider, model = settings.judge_model(agent)
    config = settings.backends[settings.judge.backend]
    return provider, ChatRequest(
        model=model, prompt=task.scorer.prompt(task.prompt, answer), system=JUDGE_SYSTEM,
        max_tokens=config.params.max_output_tokens or settings.judge.max_tokens, timeout_s=settings.retry.call_timeout_s,
        base_url=config.base_url, key_env=settings.key_variables(settings.judge.backend)[0],
        params=settings.generation(settings.judge.backend),
    )


def judge_worst_case(settings: Settings, selection: Any) -> dict[str, Any]:
    """For the dry run: one judge call per judged job (each epoch's), each graded answer as long as its max_tokens."""
    from shared.budget import worst_case_cost
    from shared.tokens import estimate_prompt_tokens

    calls, cost = 0, 0.0
    for agent in selection.agents:
        for task in selection.suite.tasks_for(agent, selection.limit):
            if task.scorer.local:
                continue
            for backend in selection.backends:
                longest = " ".join(["word"] * max_output_tokens(settings, backend, task.max_tokens))
                _, request = judge_request(settings, agent, task, longest)
                calls += selection.epochs
                cost += selection.epochs * worst_case_cost(
                    settings, request.model, estimate_prompt_tokens(request.prompt, request.system), request.max_tokens)
    return {"calls": calls, "cost_usd": round(cost, 6)}


def request_key(provider: str, request: ChatRequest, epoch: int = 1) -> str:
    """A hash of everything that changes the answer (the timeout does not): equal keys mean the
    provider would receive the same request, so at temperature 0 it gives (nearly) the same answer.
    A backend's own endpoint is part of it (a local server's model is not the hosted one, even
    under the same name); the provider's default endpoint is not, so older keys still match.
    So is the repeated trial past the first (submit --epochs): a re-run reuses epoch i for epoch
    i, and the epochs of one run never take each other's answer (each is its own draw).
    Every generation setting given is part of it; `temperature` is None when none is sent (the
    provider's default), and a request at temperature 0 alone keys as before settings existed."""
    settings = request.params.set_values()
    temperature = settings.pop("temperature", None)
    fields = {
        "v": REQUEST_KEY_VERSION, "provider": provider, "model": request.model, "system": request.system,
        "prompt": request.prompt, "max_tokens": request.max_tokens,
        "temperature": int(temperature) if temperature is not None and float(temperature).is_integer() else temperature,
    }
    if settings:
        fields["params"] = settings
    if request.base_url:
        fields["endpoint"] = request.base_url
    if epoch != 1:
        fields["epoch"] = epoch
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
