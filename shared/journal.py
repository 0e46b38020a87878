"""The paid-call journal: a provider's billed answer whose result could not be written to SQL
(database down, locked, out of connections) waits here until a worker replays it into SQL.
Every kind of paid call journals the same way (worker/paid_call.py): one entry per paid call,
under its call id, saying how it is recorded (`kind`, one of RECORDERS), for which job, what was
paid and the result. The job is never called again meanwhile: the recovery sweep leaves
journaled jobs alone, and a claim replays the job's entries before anything else.

Each entry is kept twice. First in this host's spool (`[recovery] journal_dir`, shared/spool.py:
fsync'ed before the payment is settled), so it survives Redis losing its data (a restart
without persistence, FLUSHDB, a failover to an empty replica) and Redis being down with the
database. Then in Redis (`genesis:journal`), so any host can replay it while this one lives.
Every worker replays its host's spool into SQL (at start and every half sweep interval) and
puts it back into Redis if Redis lost it; the sweep replays Redis' copy. Replay is idempotent
(unique paid call ids in the ledger, settle by call id), so both copies are safe.

Budget counters settle when the answer is journaled (member `call:<call id>`, as the replay's
settle and any rebuild from SQL name it), so the payment is counted once.

An entry that cannot be read (not JSON, an unknown kind, fields of another release) is moved to
quarantine (`genesis:journal:quarantine` in Redis, `quarantine/` in the spool), logged, counted
by `producer metrics` (genesis_journal_quarantined), and replay goes on without it."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

import redis

from shared import lifecycle
from shared.budget.recorded import paid_call_cost
from shared.config import get_settings
from shared.db import session_scope
from shared.lifecycle import ClaimedJob
from shared.numbers import is_cost
from shared.payments import PaidResult, Payment, record_payment
from shared.spool import Spool, name_of

log = logging.getLogger("genesis.journal")

JOURNAL_KEY = "genesis:journal"
QUARANTINE_KEY = "genesis:journal:quarantine"

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
# What each kind's `data` must hold for its recorder (raises on anything else): checked before
# any SQL is written, so an entry of another shape is quarantined, never half replayed.
SHAPES: dict[str, Callable[[dict], Any]] = {
    "answer": lambda data: (PaidResult(**data["result"]), _must(isinstance(data["final"], bool), "final")),
    "judged": lambda data: (_must(isinstance(data["score"], (int, float)), "score"),
                            _must(isinstance(data["detail"], str), "detail")),
    "unattached": lambda data: _must(isinstance(data.get("why"), (str, type(None))), "why"),
}
HOLDS_THE_JOB = ("answer", "judged")  # a job with such an entry pending is not run again


class Entry(NamedTuple):
    kind: str
    job: ClaimedJob
    key: str  # the budget's call key, for the settle
    payment: Payment
    data: dict


class Undecodable(ValueError):
    """A journal entry this release cannot replay."""


def write(client: redis.Redis, kind: str, job: ClaimedJob, key: str, payment: Payment, data: dict | None = None) -> None:
    """Journal a paid call's result: on this host's disk first, then in Redis. Raises only when
    neither copy could be written."""
    if kind not in RECORDERS:
        raise ValueError(f"no recorder for journal entries of kind {kind!r}")
    text = json.dumps({"kind": kind, "job": asdict(job), "key": key, "payment": asdict(payment), "data": data or {}})
    on_disk = _durable_copy(payment.call_id, text.encode())
    try:
        client.hset(JOURNAL_KEY, payment.call_id, text)
    except redis.RedisError as exc:
        if not on_disk:
            raise
        log.warning("job %s: Redis not answering (%s): the paid %s waits in this host's journal only",
                    job.id, type(exc).__name__, kind)


def pending_job_ids(client: redis.Redis) -> set[int]:
    """Jobs whose paid result waits in the journal (Redis' copy or this host's)."""
    pending = set()
    for stored in _gather(client, local_only=False).values():
        try:
            entry = decode(stored.raw)
        except Undecodable:
            continue  # the next replay quarantines it
        if entry.kind in HOLDS_THE_JOB:
            pending.add(entry.job.id)
    return pending


def mirror(client: redis.Redis) -> int:
    """Put this host's entries back into Redis where Redis lost them (so another host's sweep
    sees the job as journaled); returns how many."""
    restored = 0
    for _, raw in _spool().items():
        try:
            call_id = decode(raw).payment.call_id
        except Undecodable:
            continue
        restored += client.hsetnx(JOURNAL_KEY, call_id, raw)
    if restored:
        log.warning("%d journal entries of this host put back into Redis (Redis had lost them)", restored)
    return restored


class Replayed(NamedTuple):
    count: int
    needs_judge: list[ClaimedJob]  # jobs whose replayed answer waits for its judge


def replay(client: redis.Redis, settle: Callable[[str, float, str], None], *,
           job_id: int | None = None, local_only: bool = False) -> Replayed:
    """Write every journaled payment (or only `job_id`'s; only this host's with `local_only`)
    to SQL, then `settle(key, cost, call id)` (a no-op when the journaling already counted it).
    A payment that conflicts with one the job's ledger got meanwhile (a claim past the lease,
    `producer resume`) is written as an unattached entry, never dropped. An answer that waits for
    its judge, in a run cancelled meanwhile, is not judged (shared.lifecycle). An unreadable
    entry is quarantined. Stops at the first SQL failure (the database is still away): the rest
    waits."""
    count, needs_judge = 0, []
    for name, stored in _gather(client, local_only).items():
        try:
            entry = decode(stored.raw)
        except Undecodable as bad:
            _quarantine(client, name, stored, bad)
            continue
        job, payment = entry.job, entry.payment
        if job_id is not None and job.id != job_id:
            continue
        recorded = RECORDERS[entry.kind](job, payment, entry.data)
        if not recorded and not _already_ledgered(payment.call_id):
            log.warning("job %s: journaled %s payment ($%.6f) conflicts with one recorded since; ledgered "
                        "without a job link", job.id, payment.operation, payment.cost_usd)
            record_payment(payment.entry(job, attached=False, why="journaled; the job was paid again"))
        settle(entry.key, payment.cost_usd, payment.call_id)
        _forget(client, stored, payment.call_id)
        count += 1
        if recorded:
            log.info("job %s: journaled %s payment ($%.6f) written to SQL", job.id, entry.kind, payment.cost_usd)
        if recorded and entry.kind == "answer" and not entry.data["final"]:
            if lifecycle.end_unjudged_in_cancelled_run(job.id):
                log.warning("job %s: its run was cancelled; its replayed answer is kept, not judged", job.id)
            else:
                needs_judge.append(job)
    return Replayed(count, needs_judge)


def decode(raw: bytes | str) -> Entry:
    """A stored entry, checked whole before anything is written; Undecodable if it is not one."""
    try:
        stored = json.loads(raw)
        kind = stored["kind"]
        if kind not in RECORDERS:
            raise ValueError(f"no recorder for kind {kind!r}")
        entry = Entry(kind, ClaimedJob(**stored["job"]), str(stored["key"]), Payment(**stored["payment"]),
                      stored.get("data") or {})
        _must(isinstance(entry.job.id, int) and isinstance(entry.payment.call_id, str), "job id or call id")
        _must(is_cost(entry.payment.cost_usd), "cost_usd")
        SHAPES[kind](entry.data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise Undecodable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return entry


def quarantined(client: redis.Redis) -> int:
    """How many entries wait in quarantine (what metrics report)."""
    return client.hlen(QUARANTINE_KEY)


# --- where entries are kept ----------------------------------------------------------------


@dataclass
class _Stored:
    raw: bytes
    field: bytes | None = None  # its field in Redis' copy
    file: str | None = None  # its file in this host's spool


def _spool() -> Spool:
    return Spool(get_settings().recovery.journal_dir)


def _durable_copy(call_id: str, data: bytes) -> bool:
    try:
        _spool().put(call_id, data)
        return True
    except OSError as exc:  # a full or read-only disk: Redis' copy is all there is
        log.error("paid call %s: journal folder %s not writable (%s); kept in Redis only", call_id,
                  get_settings().recovery.journal_dir, exc)
        return False


def _gather(client: redis.Redis, local_only: bool) -> dict[str, _Stored]:
    """Both copies, one item per paid call (by its spool file name)."""
    found = {name: _Stored(raw, file=name) for name, raw in _spool().items()}
    if not local_only:
        for field, raw in client.hgetall(JOURNAL_KEY).items():
            found.setdefault(name_of(field.decode("utf-8", "surrogateescape")), _Stored(raw)).field = field
    return found


def _forget(client: redis.Redis, stored: _Stored, call_id: str) -> None:
    """Replayed: gone from both copies (this host's file first: Redis' copy, if left, replays
    as a no-op)."""
    if stored.file:
        _spool().remove(stored.file)
    client.hdel(JOURNAL_KEY, *{stored.field or call_id.encode(), call_id.encode()})


def _quarantine(client: redis.Redis, name: str, stored: _Stored, why: Undecodable) -> None:
    log.error("journal entry %s cannot be replayed (%s): quarantined (%s in Redis, %s/quarantine/), "
              "the replay goes on", name, why, QUARANTINE_KEY, get_settings().recovery.journal_dir)
    try:
        _spool().quarantine(name, None if stored.file else stored.raw)
    except OSError as exc:
        log.error("journal entry %s: no copy in the quarantine folder (%s)", name, exc)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(QUARANTINE_KEY, name, stored.raw)
        if stored.field is not None:
            pipe.hdel(JOURNAL_KEY, stored.field)
        pipe.execute()
    except redis.RedisError as exc:  # the disk copy is kept; counted once Redis answers
        log.warning("journal entry %s: quarantine not recorded in Redis (%s)", name, type(exc).__name__)


def _must(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"bad {what}")


def _already_ledgered(call_id: str) -> bool:
    with session_scope() as session:
        return bool(paid_call_cost(session, [call_id]))
