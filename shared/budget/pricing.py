"""What a call costs: at the usage the provider reported, at its worst case (what a worker
reserves before calling), or from its text when the response carried no usage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import ConfigError, Settings
from shared.tokens import estimate_prompt_tokens, estimate_tokens

from shared.budget.money import MICRO

if TYPE_CHECKING:
    from shared.suite import SuiteTask

USAGE_ESTIMATED = "estimate (response had no usage)"  # CostEntry.source of such a call


def call_cost(settings: Settings, model: str, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
    """At the model's price; `batch`: a request answered through the provider's batch API, at
    the model's `batch_discount` of it (design §11)."""
    price = settings.price_for(model)
    cost = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / MICRO
    return cost * price.batch_discount if batch else cost


def training_cost(settings: Settings, base_model: str, trained_tokens: int) -> float | None:
    """A fine-tuning job's cost from its trained tokens at the base model's `training_per_mtok`
    (None when the model has no price or no training price: the cost must come from elsewhere)."""
    try:
        price = settings.price_for(base_model).training_per_mtok
    except ConfigError:
        return None
    return None if price is None else trained_tokens * price / MICRO


def worst_case_cost(settings: Settings, model: str, input_tokens: int, max_tokens: int, *,
                    batch: bool = False) -> float:
    """What a call can cost at most: its whole output allowance is billed."""
    return call_cost(settings, model, input_tokens, max_tokens, batch=batch)


def max_output_tokens(settings: Settings, backend: str, task_max_tokens: int) -> int:
    """A call's whole output allowance (reasoning or thinking included, all billed as output):
    the backend's `params.max_output_tokens` when set (it wins: a task's max_tokens is sized for
    a visible answer), else the task's max_tokens capped by the backend's `max_tokens`."""
    config = settings.backends[backend]
    if config.params.max_output_tokens is not None:
        return config.params.max_output_tokens
    cap = config.max_tokens
    return min(task_max_tokens, cap) if cap else task_max_tokens


def task_worst_case(settings: Settings, task: "SuiteTask", backend: str, model: str) -> float:
    """The reservation of one job (at the batch price on a batch backend): the worker or the
    batch submitter reserves it, a rebuild after Redis loss restores it."""
    input_tokens = estimate_prompt_tokens(task.prompt, task.system)
    return worst_case_cost(settings, model, input_tokens, max_output_tokens(settings, backend, task.max_tokens),
                           batch=settings.is_batch(backend))


def estimated_usage(task: "SuiteTask", output_text: str) -> tuple[int, int]:
    """(input, output) tokens of a call whose response had no usage block: the same generous
    character estimate the reservation used, so such a call is never costed at $0."""
    return estimate_prompt_tokens(task.prompt, task.system), estimate_tokens(output_text)


def billed_usage(task: Any, input_tokens: int, output_tokens: int, usage_reported: bool,
                 output_text: str) -> tuple[int, int, str]:
    """(input, output, ledger source) of a billed answer: the usage the provider reported, or,
    when it reported none, the estimate of `estimated_usage`, flagged. `task`: anything with
    `prompt` and `system` (a suite task, a request)."""
    if usage_reported:
        return input_tokens, output_tokens, "api"
    return (*estimated_usage(task, output_text), USAGE_ESTIMATED)
