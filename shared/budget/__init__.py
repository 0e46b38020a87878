"""The budget: one job per module.

- lua: the atomic steps in Redis (reserve, settle, release, halt, resume, install)
- guard: BudgetGuard, the cap every worker shares, its rebuild and its reconciliation with SQL
- recorded: what SQL says (budget events replayed, ledger identity, reservations in flight)
- events: levels and budget events; webhook: their POST
- pricing: what a call costs; estimate: the dry-run estimate of a run
"""

from shared.budget.estimate import estimate_run_cost
from shared.budget.guard import BudgetDenied, BudgetGuard, BudgetRefused, BudgetWait, Reconciled
from shared.budget.money import MICRO, to_micro, to_usd
from shared.budget.pricing import (
    USAGE_ESTIMATED,
    billed_usage,
    call_cost,
    estimated_usage,
    max_output_tokens,
    task_worst_case,
    worst_case_cost,
)
from shared.budget.recorded import RecordedBudgetState, ledger_id, recorded_budget_state
from shared.budget.webhook import post_webhook

__all__ = [
    "MICRO", "USAGE_ESTIMATED", "BudgetDenied", "BudgetGuard", "BudgetRefused", "BudgetWait", "Reconciled",
    "RecordedBudgetState", "billed_usage", "call_cost", "estimate_run_cost", "estimated_usage", "ledger_id",
    "max_output_tokens", "post_webhook", "recorded_budget_state", "task_worst_case", "to_micro", "to_usd",
    "worst_case_cost",
]
