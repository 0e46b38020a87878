"""The dry-run estimate of a run (`producer submit --dry-run`): its worst case per backend
against what the budget has left."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.tokens import estimate_prompt_tokens

from shared.budget.money import threshold, to_micro, to_usd
from shared.budget.pricing import max_output_tokens, worst_case_cost

if TYPE_CHECKING:
    from shared.budget.guard import BudgetGuard
    from shared.suite import Suite


def estimate_run_cost(
    settings: Settings,
    suite: "Suite",
    agents: list[str],
    backends: list[str],
    limit: int | None,
    *,
    guard: "BudgetGuard | None" = None,
    epochs: int = 1,
) -> dict[str, Any]:
    """Batch backends at their batch price. An unpriced model raises ConfigError. With a guard, `remaining_usd` is what the live
    budget has left, else the configured allowance. `epochs`: every job runs that many times, each a paid call."""
    by_backend = {name: {"jobs": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0} for name in backends}
    for agent in agents:
        tasks = suite.tasks_for(agent, limit)
        for backend in backends:
            model = settings.model_for(backend, agent)
            row = by_backend[backend]
            for task in tasks:
                input_tokens = estimate_prompt_tokens(task.prompt, task.system)
                output_tokens = max_output_tokens(settings, backend, task.max_tokens)
                row["jobs"] += epochs
                row["input_tokens"] += input_tokens * epochs
                row["output_tokens"] += output_tokens * epochs
                row["cost_usd"] += epochs * worst_case_cost(settings, model, input_tokens, output_tokens,
                                                            batch=settings.is_batch(backend))
    for row in by_backend.values():
        row["cost_usd"] = round(row["cost_usd"], 6)
    cost = round(sum(row["cost_usd"] for row in by_backend.values()), 6)
    if guard is not None:
        remaining = guard.status()["remaining_usd"]
    else:  # no live counters at hand: the whole configured allowance
        remaining = to_usd(threshold(to_micro(settings.budget.limit_usd), settings.budget.emergency))
    return {
        "jobs": sum(row["jobs"] for row in by_backend.values()),
        "estimated_input_tokens": sum(row["input_tokens"] for row in by_backend.values()),
        "estimated_output_tokens": sum(row["output_tokens"] for row in by_backend.values()),
        "estimated_cost_usd": cost,
        "by_backend": by_backend,
        "remaining_usd": remaining,
        "within_budget": cost <= remaining,
    }
