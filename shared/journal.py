"""The paid-call journal: a provider's billed answer whose result could not be written to SQL
(database down, locked, out of connections) waits here, in Redis, until a worker replays it
into the job's `ok` result and its `cost_entry`. The job is never called again meanwhile: the
recovery sweep leaves journaled jobs alone.

Budget counters settle when the answer is journaled (same member `job:<id>` as a normal
settle, so the replay and any rebuild from SQL count it once)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import redis

from shared import lifecycle
from shared.lifecycle import ClaimedJob, PaidResult

log = logging.getLogger("genesis.journal")

JOURNAL_KEY = "genesis:journal"


def write(client: redis.Redis, job: ClaimedJob, result: PaidResult) -> None:
    client.hset(JOURNAL_KEY, str(job.id), json.dumps({"job": asdict(job), "result": asdict(result)}))


def pending_job_ids(client: redis.Redis) -> set[int]:
    return {int(k) for k in client.hkeys(JOURNAL_KEY)}


def replay(client: redis.Redis, settle) -> int:
    """Write every journaled answer to SQL; `settle(job_id, cost)` re-settles the budget (a no-op
    when the journaling already did). Returns how many were replayed. Stops at the first SQL
    failure (the database is still away): the rest waits for the next sweep."""
    replayed = 0
    for field, raw in client.hgetall(JOURNAL_KEY).items():
        entry = json.loads(raw)
        job, result = ClaimedJob(**entry["job"]), PaidResult(**entry["result"])
        if not lifecycle.finish_ok(job, result):
            log.info("job %s: journaled answer already in the ledger", job.id)
        settle(job.id, result.cost_usd)
        client.hdel(JOURNAL_KEY, field)
        replayed += 1
        log.info("job %s: journaled answer ($%.6f) written to SQL", job.id, result.cost_usd)
    return replayed
