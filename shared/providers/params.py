"""Generation settings: one vocabulary of our own (`params = {...}` on a backend), and the one
mapping of it to what each provider's API takes. Config validation (shared.config), the request
(shared.calls), the adapters, the reuse key and `submit --dry-run` all read it from here.

    ours                      OpenAI chat.completions       Anthropic messages              Mistral chat.complete
    temperature               temperature                   temperature                     temperature
    top_p                     top_p                         top_p                           top_p
    seed                      seed                          (none: refused at load)         random_seed
    reasoning_effort          reasoning_effort              (none: refused at load)         (none: refused at load)
    reasoning_budget_tokens   (none: refused at load)       thinking={type: enabled,        (none: refused at load)
                                                              budget_tokens: N}
    the output allowance      max_completion_tokens         max_tokens                      max_tokens
                              (max_tokens when the backend
                               says max_tokens_field)

Unset settings are not sent: the provider's default applies (OpenAI's reasoning models accept
only their default temperature). The output allowance is one number for every provider: the
backend's `max_output_tokens` when set (it then wins over the task's `max_tokens`: it is the
whole allowance, reasoning or thinking included, which a task sized for a visible answer cannot
know), else the task's `max_tokens` capped by the backend's `max_tokens` (shared.budget)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# OpenAI's documented values for `reasoning_effort` (GPT-5 family and o-series).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
# Anthropic: "budget_tokens must be ≥ 1024 and less than max_tokens" (extended thinking docs).
MIN_THINKING_BUDGET = 1024
ALLOWANCE_FIELDS = ("max_completion_tokens", "max_tokens")

# Which of our settings each provider's API has: any other is refused at config load.
ACCEPTED: dict[str, frozenset[str]] = {
    "openai": frozenset({"temperature", "top_p", "seed", "reasoning_effort"}),
    "anthropic": frozenset({"temperature", "top_p", "reasoning_budget_tokens"}),
    "mistral": frozenset({"temperature", "top_p", "seed"}),
}


@dataclass(frozen=True)
class Generation:
    """A backend's generation settings as a request carries them (None: not sent)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    reasoning_effort: str | None = None
    reasoning_budget_tokens: int | None = None
    # OpenAI wire format only: the allowance's field name (an older OpenAI-compatible server
    # takes only `max_tokens`); None: max_completion_tokens.
    allowance_field: str | None = None

    def set_values(self) -> dict[str, Any]:
        """The settings given (for the reuse key and the dry run); the allowance field's name
        is left out: it changes no answer."""
        return {name: value for name, value in asdict(self).items()
                if value is not None and name != "allowance_field"}


def problems(provider: str, params: dict[str, Any], max_output_tokens: int | None) -> list[str]:
    """What is wrong with a backend's settings for its provider, one phrase each (config load)."""
    given = {name for name, value in params.items() if value is not None}
    found = [f"{name} is not a setting the {provider} API takes (it takes: {', '.join(sorted(ACCEPTED[provider]))})"
             for name in sorted(given - ACCEPTED[provider])]
    budget = params.get("reasoning_budget_tokens")
    if budget is not None:
        if max_output_tokens is None or budget >= max_output_tokens:
            found.append(f"reasoning_budget_tokens ({budget}) must be less than max_output_tokens "
                         f"({max_output_tokens}), which includes it")
        changed = sorted(name for name in ("temperature", "top_p") if params.get(name) is not None)
        if changed:
            found.append(f"reasoning_budget_tokens (Anthropic's extended thinking) does not work with {', '.join(changed)}")
    return found


def openai_arguments(allowance: int, params: Generation) -> dict[str, Any]:
    """chat.completions.create keyword arguments besides model and messages."""
    arguments: dict[str, Any] = {params.allowance_field or "max_completion_tokens": allowance}
    for name in ("temperature", "top_p", "seed", "reasoning_effort"):
        if (value := getattr(params, name)) is not None:
            arguments[name] = value
    return arguments


def anthropic_arguments(allowance: int, params: Generation) -> dict[str, Any]:
    """messages.create keyword arguments besides model, messages and system."""
    arguments: dict[str, Any] = {"max_tokens": allowance}
    for name in ("temperature", "top_p"):
        if (value := getattr(params, name)) is not None:
            arguments[name] = value
    if params.reasoning_budget_tokens is not None:
        arguments["thinking"] = {"type": "enabled", "budget_tokens": params.reasoning_budget_tokens}
    return arguments


def mistral_arguments(allowance: int, params: Generation) -> dict[str, Any]:
    """chat.complete keyword arguments besides model, messages, retries and timeout."""
    arguments: dict[str, Any] = {"max_tokens": allowance}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "random_seed")):
        if (value := getattr(params, ours)) is not None:
            arguments[theirs] = value
    return arguments


ARGUMENTS = {"openai": openai_arguments, "anthropic": anthropic_arguments, "mistral": mistral_arguments}


def sent(provider: str, allowance: int, params: Generation) -> dict[str, Any]:
    """What a request of this backend sends besides its messages (`submit --dry-run`, `check`)."""
    return ARGUMENTS[provider](allowance, params)
