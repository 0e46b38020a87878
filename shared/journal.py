"""The paid-call journal: a provider's billed answer whose result could not be written to SQL
(database down, locked, out of connections) waits here, in Redis, until a worker replays it
into SQL. Every kind of paid call journals the same way (worker/paid_call.py): one entry per
paid call, under its call id, saying how it is recorded (`kind`, one of RECORDERS), for which
job, what was paid and the result. The job is never called again meanwhile: the recovery sweep
leaves journaled jobs alone, and a claim replays the job's entries before anything else.

Budget counters settle when the answer is journaled (member `call:<call id>`, as the replay's
settle and any rebuild from SQL name it), so the payment is counted once."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Callable, NamedTuple

import redis

from shared import lifecycle
from shared.budget.recorded import paid_call_cost
from shared.db import session_scope
from shared.lifecycle import ClaimedJob
from shared.payments import PaidResult, Payment, record_payment

log = logging.getLogger("genesis.journal")

JOURNAL_KEY = "genesis:journal"

# How each kind of paid call's result reaches SQL: (job, payment, data) -> False when the job's
# ledger already holds a payment for this call (another delivery's), True once written.
RECORDERS: dict[str, Callable[[ClaimedJob, Payment, dict], bool]] = {
    # the job's answer; `final` False: it waits for its judge
    "answer": lambda job, payment, data: lifecycle.finish_ok(
        job, PaidResult(**data["result"]), final=data["final"], call_id=payment.call_id),
    # the judge's grade of the job's answer
    "judged": lambda job, payment, data: lifecycle.finish_judged(
        job, payment.entry(job), score=data["score"], detail=data["detail"]),
    # a paid call that is not the job's result (late, unusable, duplicate): its cost alone
    "unattached": lambda job, payment, data: record_payment(
        payment.entry(job, attached=False, why=data.get("why"))),
}
HOLDS_THE_JOB = ("answer", "judged")  # a job with such an entry pending is not run again


def write(client: redis.Redis, kind: str, job: ClaimedJob, key: str, payment: Payment, data: dict | None = None) -> None:
    if kind not in RECORDERS:
        raise ValueError(f"no recorder for journal entries of kind {kind!r}")
    entry = {"kind": kind, "job": asdict(job), "key": key, "payment": asdict(payment), "data": data or {}}
    client.hset(JOURNAL_KEY, payment.call_id, json.dumps(entry))


def _entries(client: redis.Redis) -> list[tuple[bytes, dict]]:
    return [(field, json.loads(raw)) for field, raw in client.hgetall(JOURNAL_KEY).items()]


def pending_job_ids(client: redis.Redis) -> set[int]:
    return {entry["job"]["id"] for _, entry in _entries(client) if entry["kind"] in HOLDS_THE_JOB}


class Replayed(NamedTuple):
    count: int
    needs_judge: list[ClaimedJob]  # jobs whose replayed answer waits for its judge


def replay(client: redis.Redis, settle: Callable[[str, float, str], None], *,
           job_id: int | None = None) -> Replayed:
    """Write every journaled payment (or only `job_id`'s) to SQL, then `settle(key, cost, call
    id)` (a no-op when the journaling already counted it). A payment that conflicts with one the
    job's ledger got meanwhile (a claim past the lease, `producer resume`) is written as an
    unattached entry, never dropped. Stops at the first SQL failure (the database is still away): the rest waits."""
    count, needs_judge = 0, []
    for field, entry in _entries(client):
        job, payment, kind = ClaimedJob(**entry["job"]), Payment(**entry["payment"]), entry["kind"]
        if job_id is not None and job.id != job_id:
            continue
        recorded = RECORDERS[kind](job, payment, entry["data"])
        if not recorded and not _already_ledgered(payment.call_id):
            log.warning("job %s: journaled %s payment ($%.6f) conflicts with one recorded since; ledgered "
                        "without a job link", job.id, payment.operation, payment.cost_usd)
            record_payment(payment.entry(job, attached=False, why="journaled; the job was paid again"))
        settle(entry["key"], payment.cost_usd, payment.call_id)
        client.hdel(JOURNAL_KEY, field)
        count += 1
        if recorded and kind == "answer" and not entry["data"]["final"]:
            needs_judge.append(job)
        log.info("job %s: journaled %s payment ($%.6f) written to SQL", job.id, kind, payment.cost_usd)
    return Replayed(count, needs_judge)


def _already_ledgered(call_id: str) -> bool:
    with session_scope() as session:
        return bool(paid_call_cost(session, [call_id]))
