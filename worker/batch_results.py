"""What a provider batch's results do to its jobs and to the budget (design §11), written per
job exactly as a realtime job's: output, score, tokens, cost (at the batch price) and its ledger
entry in one transaction, then the budget settled; a `judge` task's answer is recorded and the
job goes back to its queue, where run_job grades it through the normal judge path.

`BatchMoney` is the one place a batch's money goes through, on the primitives of the guarded
paid-call path (worker/paid_call.py): each job's worst case reserved by call id before the batch
is sent, each answer recorded by the journal's `answer` recorder (or journaled while the
database is away) and settled by that id, each unanswered job's reservation released by it.
`pay()` itself makes one job's call and records it at once; a batch is one submission whose
answers arrive later, in another task, so it uses the same steps without `pay()`'s call.
Reservations carry no holder: a batch, not a worker, answers for them, so the sweep's
reconciliation never takes a dead submitter's batch for a call lost in flight."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import datetime

from shared import batches as sql
from shared import journal
from shared import lifecycle as jobs
from shared.budget import BudgetDenied, BudgetGuard, billed_usage, call_cost, task_worst_case
from shared.budget.reconcile import OUTCOME_UNKNOWN
from shared.budget.recorded import call_key
from shared.config import get_settings
from shared.messaging import publish_jobs
from shared.lifecycle import ClaimedJob
from shared.payments import PaidResult, Payment, record_payment
from shared.providers.batch_api import UNREADABLE, Result
from shared.providers.batch_names import OurBatch
from worker.paid_call import DATABASE_AWAY
from worker.base import score_answer, suite_task_of

log = logging.getLogger("genesis.batches")


class BatchMoney:
    """Reserve, settle and release a batch's jobs under their own budget keys (the job ids, as
    realtime calls use): a rebuild after Redis loss restores them from the running jobs at the
    batch price, and reconciliation leaves them alone while their jobs wait in the batch."""

    def __init__(self, budget: BudgetGuard, batch_id: int, key_env: str | None = None) -> None:
        self.budget, self.batch_id = budget, batch_id
        self.key_env = key_env  # the variable whose key sent the batch, for the ledger (never the key)

    def call_id(self, job_id: int) -> str:
        """One job's paid call in this batch: the same id for its reservation, its ledger row and
        its settle, so re-reading the batch's results never counts an answer twice."""
        return f"batch{self.batch_id}-job{job_id}"

    def reserve_in_order(self, amounts: list[tuple[int, float]], run_id: str) -> tuple[int, float, BudgetDenied | None]:
        """Each job's worst case in turn until the guard says wait or refuses: returns how many
        were reserved, their sum, and the denial that stopped it (None: all reserved). A batch
        is sent with the jobs that fit, as that many realtime calls would have been."""
        total = 0.0
        for reserved, (job_id, amount) in enumerate(amounts):
            try:
                self.budget.reserve(call_key(job_id), amount, run_id=run_id, call_id=self.call_id(job_id))
            except BudgetDenied as denied:
                return reserved, total, denied
            total += amount
        return len(amounts), total, None

    def release(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            try:
                self.budget.release(call_key(job_id), self.call_id(job_id))
            except Exception:  # noqa: BLE001 - reconciliation releases it when the job is final
                log.warning("job %s: releasing its batch reservation failed", job_id, exc_info=True)

    def record(self, job: ClaimedJob, result: PaidResult, *, final: bool) -> bool:
        """The answer and its ledger row (one transaction, the journal's `answer` recorder), then
        the settle by call id; journaled when the database is away. False when this job's answer
        was already recorded (the batch's results read again): it is the same payment, not a
        second one."""
        key, call_id = call_key(job.id), self.call_id(job.id)
        payment = Payment(call_id, "inference", job.model, result.input_tokens, result.output_tokens,
                          result.cost_usd, result.source, key_env=self.key_env)
        data = {"result": asdict(result), "final": final}
        try:
            recorded = journal.RECORDERS["answer"](job, payment, data)
        except DATABASE_AWAY:
            journal.write(self.budget.redis, "answer", job, key, payment, data)
            log.warning("job %s: database away; its batch answer is journaled (replayed by the sweep)", job.id)
            recorded = True
        self.budget.settle(key, result.cost_usd, call_id)  # counted once per call id, whatever happened
        return recorded

    def record_unknown(self, job: ClaimedJob, worst_usd: float, reason: str) -> None:
        """A request the provider ran (and billed) whose result cannot be read: its worst case is
        ledgered as outcome unknown (design §12), settled by its call id, and the job ends
        `error`; not sent again, which could pay it twice. Written once whatever the re-reads."""
        key, call_id = call_key(job.id), self.call_id(job.id)
        record_payment(Payment(call_id, "inference", job.model, 0, 0, worst_usd,
                               f"{OUTCOME_UNKNOWN} (batch result unreadable)", key_env=self.key_env).entry(job))
        self.budget.settle(key, worst_usd, call_id)
        jobs.finish_error(job, "BatchResultUnreadable", reason)


def write_results(batch, results: list[Result], now: datetime, budget: BudgetGuard) -> dict[str, int]:
    """Every waiting job of the batch gets its outcome; returns counts by outcome."""
    settings = get_settings()
    key_env = settings.batch_key_variable(batch.backend, batch.provider)
    money, ours = BatchMoney(budget, batch.id, key_env), OurBatch(sql.deployment_id(), batch.id)
    by_job = {ours.job_of(r.custom_id): r for r in results}
    # an unreadable line that names none of its requests may be any job's that has no result
    unnamed = next((r for r in results if r.kind == UNREADABLE and ours.job_of(r.custom_id) is None), None)
    waited_ms = max(0.0, (now - batch.submitted_at).total_seconds() * 1000) if batch.submitted_at else 0.0
    counts: Counter[str] = Counter()
    judge_next: list[ClaimedJob] = []
    failed: list[tuple[ClaimedJob, str, str]] = []
    for job in sql.jobs_of(batch.id):
        result = by_job.get(job.id, unnamed)
        if result is not None and result.kind == UNREADABLE:
            money.record_unknown(job, task_worst_case(settings, suite_task_of(job), job.backend, job.model),
                                 f"provider batch {batch.provider_batch_id}: {result.error}; ledgered at its worst "
                                 f"case (the provider billed it)"[:500])
            counts["unreadable"] += 1
            continue
        if result is not None and result.kind == "succeeded" and result.response is not None:
            suite_task = suite_task_of(job)
            response = result.response
            *tokens, source = billed_usage(suite_task, response.input_tokens, response.output_tokens,
                                           response.usage_reported, response.text)
            cost = call_cost(settings, job.model, *tokens, batch=True)
            scored = score_answer(suite_task, response.text)
            paid = PaidResult(output=response.text, score=scored.score, detail=scored.detail, latency_ms=waited_ms,
                              input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost,
                              source=f"{source} (batch)", simulated=response.simulated,
                              reasoning_tokens=response.reasoning_tokens, truncated=response.truncated,
                              key_env=key_env)
            money.record(job, paid, final=suite_task.scorer.local)
            if not suite_task.scorer.local:  # recorded now or by an earlier read of these results
                judge_next.append(job)
            counts["succeeded"] += 1
            continue
        money.release([job.id])
        if batch.cancel_requested and (result is None or result.kind in ("canceled", "expired")):
            jobs.finish_halted(job, f"provider batch {batch.provider_batch_id} cancelled by the budget halt")
            counts["halted"] += 1
            continue
        counts["errored"] += 1
        kind = result.kind if result is not None else "missing"
        failed.append((job, f"Batch{kind.capitalize()}",
                       result.error if result is not None and result.error else f"no result ({kind})"))
    send_back_or_fail(batch, failed)
    requeue(batch.id, judge_next)  # answered and ledgered: graded by run_job's judge path
    return dict(counts)


def end_without_results(batch, error_type: str, reason: str, budget: BudgetGuard) -> dict[str, int]:
    """An expired or failed batch answered nothing: its jobs go back or end `error` (or
    `halted`, when a budget halt cancelled it)."""
    money = BatchMoney(budget, batch.id)
    counts: Counter[str] = Counter()
    failed: list[tuple[ClaimedJob, str, str]] = []
    for job in sql.jobs_of(batch.id):
        money.release([job.id])
        if batch.cancel_requested:
            jobs.finish_halted(job, f"provider batch {batch.provider_batch_id} cancelled by the budget halt")
            counts["halted"] += 1
        else:
            failed.append((job, error_type, reason))
            counts["errored"] += 1
    send_back_or_fail(batch, failed)
    return dict(counts)


def send_back_or_fail(batch, failed: list[tuple[ClaimedJob, str, str]]) -> None:
    """(job, error type, the provider's reason) each: bounded, a job claimed `[batch]
    max_attempts` times ends `error` with the reason; the others go back, one requeue (an
    UPDATE and a publish per run) for all those with the same reason, not one per job."""
    max_attempts = get_settings().batch.max_attempts
    back: dict[tuple[str, str], list[ClaimedJob]] = defaultdict(list)
    for job, error_type, reason in failed:
        detail = f"provider batch {batch.provider_batch_id or batch.id}: {reason}"[:500]
        if job.attempts < max_attempts:
            back[(error_type, detail)].append(job)
        else:
            jobs.finish_error(job, error_type, f"after {job.attempts} attempt(s): {detail}")
    for (error_type, detail), claimed in back.items():
        requeue(batch.id, claimed, error_type, detail)


def requeue(batch_id: int, claimed: list[ClaimedJob], error_type: str | None = None,
            detail: str | None = None) -> None:
    """Out of the batch and back to the queue: recorded first (queued, unlinked), then published."""
    moved = sql.leave([job.id for job in claimed], batch_id, error_type=error_type, error_message=detail)
    by_run: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for run_id, job_id, provider, backend in moved:
        by_run[run_id].append((job_id, provider, backend))
    for run_id, pending in by_run.items():
        publish_jobs(run_id, pending)
