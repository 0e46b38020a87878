"""Grading a `judge` task: one more paid call, to the `[judge]` backend, made after the job's
own answer is recorded (so a judge retry never pays for the answer again).

Only what is judge-specific lives here: the judge's request (shared.calls.judge_request) and
reading its grade. The call itself goes through worker/paid_call.py like the job's own: reserved
under its own key (`judge:<job id>`), paced, within the deadline, ledgered with operation
`judge` against the job (or journaled while the database is away), retried within the job's
attempts. A reply that is not a grade is still a paid call (ledgered without a job link),
retried, and in the end stored as an error saying so, never a silent 0."""

from __future__ import annotations

from typing import Any

from shared import lifecycle as jobs
from shared.budget import worst_case_cost
from shared.budget.recorded import call_key
from shared.calls import judge_request
from shared.config import get_settings
from shared.payments import Payment
from shared.providers import ChatResponse
from shared.scoring.judge import JudgeReplyError, read_judge_reply
from shared.tokens import estimate_prompt_tokens
from worker.paid_call import PaidCall, Recording, UnusableReply, pay

UNPARSEABLE = "JudgeUnparseable"


def budget_key(job_id: int) -> str:
    """The judge's reservation and settlement key, apart from the job's own call."""
    return call_key(job_id, "judge")


def grade(task: Any, job: jobs.ClaimedJob, suite_task: Any, answer: str) -> str:
    """Judge a recorded answer and store the grade; returns the job's status (or raises a
    Celery Retry)."""
    settings = get_settings()
    provider, request = judge_request(settings, job.agent, suite_task, answer)
    prompt_tokens = estimate_prompt_tokens(request.prompt, request.system)
    return pay(task, PaidCall(
        job=job, operation="judge", provider=provider, model=request.model, request=request,
        worst_case_usd=worst_case_cost(settings, request.model, prompt_tokens, request.max_tokens),
        tokens=prompt_tokens + request.max_tokens, result=_grade, what="judge call",
        limits=settings.limit_scope(settings.judge.backend, provider), pools=settings.key_pools(settings.judge.backend),
    )).status


def _grade(response: ChatResponse, payment: Payment) -> Recording:
    try:
        result = read_judge_reply(response.text)
    except JudgeReplyError as exc:
        raise UnusableReply(UNPARSEABLE, f"judge answer could not be parsed: {exc}", "judge answer unparseable") from None
    return Recording("judged", {"score": result.score, "detail": result.detail})
