"""The budget guard (design §7): the strict cap every worker on every host shares, and the
ledger operations around it.

Redis holds the live counters (each check-and-reserve is one Lua script: shared/budget/lua.py);
SQL stays the source of truth: the CostEntry ledger, the BudgetEvent log and the jobs SQL says
are running hold everything needed to rebuild the counters, and to reconcile them with SQL
when a worker died between its call and its settle.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import redis
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from shared.config import Settings
from shared.db import get_engine, session_scope
from shared.lifecycle import mark_runs_halted
from shared.models import FINE_TUNING, CostEntry
from shared.numbers import MAX_USD, is_limit
from shared.payments import cost_row, write_cost_row

from shared.budget import lua
from shared.budget.events import level_of, record_event
from shared.budget.reconcile import Reconciled, reconcile
from shared.budget.money import threshold, to_micro, to_usd
from shared.budget.recorded import (
    TIERS,
    ledger_id,
    ledger_members,
    recorded_budget_state,
    reservation_field,
    running_reservations,
    settled_member,
)

log = logging.getLogger("genesis.budget")

STAGED_TTL_S = 300
RECONCILE_EVERY_S = 2.0  # fleet-wide, at most one reconciliation per this long (`maybe_reconcile`)


def redis_time(micros: int) -> datetime:
    """A time the budget scripts read from Redis (`TIME`, in µs): halt, limit and resume events
    are stamped with it, so their order never depends on which host wrote them."""
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc)


class BudgetDenied(Exception):
    """A reservation not granted, with the figures the guard decided on."""

    verdict = "denied"
    why = ""

    def __init__(self, *, amount_usd: float, spent_usd: float, reserved_usd: float, limit_usd: float) -> None:
        self.amount_usd = amount_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        super().__init__(
            f"budget {self.verdict} ${amount_usd:.6f}: spent ${spent_usd:.6f} + reserved "
            f"${reserved_usd:.6f} of limit ${limit_usd:.2f}{self.why}"
        )

    @staticmethod
    def spent_in(message: str) -> float | None:
        """The settled spend a refusal saw, read back from its message (a halt event's, a job's)."""
        found = re.search(r"^budget \w+ \$[0-9.]+: spent \$([0-9.]+)", message)
        return float(found.group(1)) if found else None


class BudgetRefused(BudgetDenied):
    """The settled ledger leaves no room for this call's worst case (or a halt stands). The halt
    flag is already set; the caller stores the job as halted and calls `guard.halt(...)`."""

    verdict = "refused"
    why = " (the settled spend leaves no room for this call's worst case under the emergency threshold)"


class BudgetWait(BudgetDenied):
    """Only the reservations of calls in flight hold the room: the caller gives the job back
    with a short countdown (no call, not an attempt); no halt."""

    verdict = "wait"
    why = " (calls in flight hold the rest until they settle)"


class BudgetGuard:
    """The strict cap shared by every worker, plus the ledger operations around it."""

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        database_url: str | None = None,
        prefix: str = "genesis:budget",
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.database_url = database_url or settings.database_url
        self.keys = lua.BudgetKeys.under(prefix)
        self.state_key = self.keys.state
        self.reconcile_lock_key = f"{prefix}:reconcile-lock"
        self._scripts = {name: redis.register_script(getattr(lua, name))
                         for name in ("RESERVE", "SETTLE", "RELEASE", "HALT", "RESUME", "INSTALL",
                                                                 "NAME_KEY")}
        self._ledger_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "BudgetGuard":
        return cls(redis.Redis.from_url(settings.redis_url), settings)

    # --- the cap ---------------------------------------------------------------------

    def reserve(self, key: int | str, amount_usd: float, *, run_id: str | None = None, call_id: str | None = None,
                holder: str = "") -> str:
        """Grant the call's worst case under its call key and return the reservation's id (the
        paid call's id: pass it to `settle`/`release`), or raise BudgetWait / BudgetRefused.
        `holder` (`<incarnation>|<model>`, shared.fleet) lets reconcile ledger the call if that
        process dies mid-call.
        `run_id` is accepted for the caller's symmetry with halt(); the cap is global."""
        if amount_usd < 0:
            raise ValueError(f"a reservation cannot be negative (got {amount_usd})")
        call_id = call_id or uuid.uuid4().hex
        args = [key, to_micro(amount_usd), self._config_limit_micro(), self.settings.budget.emergency, call_id, holder]
        verdict, spent, reserved, limit = (int(v) for v in self._run("RESERVE", args))
        if verdict == lua.GRANTED:
            return call_id
        denied = BudgetWait if verdict == lua.WAIT else BudgetRefused
        raise denied(amount_usd=amount_usd, spent_usd=to_usd(spent), reserved_usd=to_usd(reserved),
                     limit_usd=to_usd(limit))

    def name_key(self, key: int | str, call_id: str, key_env: str) -> None:
        """The reservation names the key variable its call was given (`<holder>|<variable>`), once
        the limiter chose one (after the reservation): never the key. A reservation already
        settled or released is left gone."""
        self._scripts["NAME_KEY"](keys=[self.keys.reservation_holders], args=[reservation_field(key, call_id), key_env])

    def settle(self, key: int | str, actual_usd: float, call_id: str = "", replaced_usd: float | None = None) -> None:
        """Called after the call's CostEntry is committed (or journaled), at its real cost (even
        above what was reserved). With `call_id`: counted once per paid call, dropping only that
        call's reservation; without: once per call key, dropping every reservation of the key.
        `replaced_usd`: the ledger row was the call's `outcome unknown` one, at this worst case,
        which spent already counts: spent moves by the difference, once."""
        self._add_spend(f"call:{call_id}" if call_id else f"job:{key}", key, actual_usd, call_id, replaced_usd)

    def release(self, key: int | str, call_id: str = "") -> bool:
        """The call was not made, or failed unbilled: its worst case no longer holds budget back.
        With `call_id`, only that reservation (never one another delivery holds)."""
        # A missing state needs nothing: a rebuilt state holds only the running jobs' reservations.
        return int(self._scripts["RELEASE"](keys=self.keys.all(), args=[key, call_id])) == 1

    # --- status and halt -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The figures `producer budget` shows; once halted the level is `emergency`, with why."""
        fields = self._read_state("spent", "reserved", "limit", "halted", "waits", "overruns", "overrun")
        spent, reserved, limit, halted, waits, overruns, overrun = fields
        cap = threshold(limit, self.settings.budget.emergency)
        return {
            "limit_usd": to_usd(limit),
            "spent_usd": to_usd(spent),
            "reserved_usd": to_usd(reserved),
            "level": level_of(self.settings.budget, spent, limit, halted=bool(halted)),
            "halted": bool(halted),
            "halt_reason": self._halt_reason(spent > cap) if halted else None,
            "emergency_usd": to_usd(cap),
            "remaining_usd": to_usd(max(0, cap - spent - reserved)),
            "waits": waits,
            "overruns": overruns,
            "overrun_usd": to_usd(overrun),
        }

    def is_halted(self) -> bool:
        return bool(self._read_state("halted")[0])

    def halt(self, *, run_id: str | None, reason: str, refused_usd: float | None = None,
             on_first: Callable[[], None] | None = None) -> bool | None:
        """True for exactly one caller per halt: that one records the event and stops the queues.
        `refused_usd` (a refused call's worst case) is checked again if a resume cleared the flag
        since the refusal: None when it fits the current limit (nothing halted; the caller hands
        its job back). `on_first` (stopping the consumers) runs before the SQL writes."""
        args = ["" if refused_usd is None else to_micro(refused_usd), self._config_limit_micro(),
                self.settings.budget.emergency]
        verdict, at_us = (int(v) for v in self._run("HALT", args))
        if verdict == 2:
            return None
        newly = verdict == 1
        if newly and on_first is not None:
            try:
                on_first()
            except Exception:  # noqa: BLE001 - the event must be recorded whatever happened here
                log.exception("stopping the provider consumers failed; reservations stay refused")
        mark_runs_halted(self.database_url)
        if newly:
            self._best_effort_reconcile()  # the event's figures count every cost SQL holds
            spent, limit = self._read_state("spent", "limit")
            record_event(self.settings, self.database_url, "halt", spent=spent, limit=limit, run_id=run_id,
                         message=reason, level="emergency", at=redis_time(at_us))
        return newly

    def resume(self, *, limit_usd: float | None = None) -> None:
        """A new limit is written as a `limit` event, so a rebuild after Redis loss keeps it. Both
        events carry the Redis time of the RESUME step, the clock halts are stamped with too."""
        if limit_usd is not None and not is_limit(limit_usd):
            raise ValueError(f"a budget limit must be a finite amount above 0, at most ${MAX_USD:,} (got {limit_usd})")
        new_limit = "" if limit_usd is None else str(to_micro(limit_usd))
        _, at_us = (int(v) for v in self._run("RESUME", [new_limit]))
        spent, limit = self._read_state("spent", "limit")
        if limit_usd is not None:
            self._event("limit", spent, limit, f"limit set to ${limit_usd:.2f}", at=redis_time(at_us))
        self._event("resume", spent, limit, "budget halt lifted", at=redis_time(at_us))
        self._fire_tiers(spent, limit)

    # --- the ledger ------------------------------------------------------------------

    def log_manual(
        self,
        *,
        agent: str | None,
        operation: str,
        cost_usd: float,
        backend: str | None = None,
        note: str = "",
    ) -> CostEntry:
        """Spend made outside the workers; `note` goes to the log (CostEntry has no column for it)."""
        if cost_usd < 0 or len(operation.split()) != 1:
            raise ValueError(f"a manual entry needs a cost >= 0 and a one-word operation (got {cost_usd}, {operation!r})")
        entry = CostEntry(agent=agent, backend=backend, operation=operation.strip(), cost_usd=cost_usd, source="manual")
        log.info("manual ledger entry: $%.6f %s %s", cost_usd, operation, note)
        return self.record_entry(entry)

    def record_entry(self, entry: CostEntry, *, key: int | str = "") -> CostEntry:
        """A ledger entry not tied to a job's result (manual, a fine-tuning job, or a paid call
        whose result could not be stored): written to SQL, then counted once under its paid
        call's id (or its entry id), dropping that call's reservation under `key`. A fine-tuning
        job already in the ledger is not added again (SQL refuses a second entry): the one there
        is returned, not `entry`, and counted in case its writer died first.
        A paid call already ledgered is not written twice either: its real cost replaces an
        `outcome unknown` row of the same call (spent moves by the difference), and an `outcome
        unknown` entry for a call whose real row is there is that row."""
        replaced = None
        try:
            with get_engine(self.database_url).begin() as conn:
                entry.id, replaced = write_cost_row(conn, cost_row(entry))
        except IntegrityError:
            existing = self._same_paid_call(entry) or self._same_fine_tuning_job(entry)
            if existing is None:
                raise
            entry = existing
        member = settled_member(entry.id, None, entry.operation, entry.call_id)
        self._add_spend(member, key if entry.call_id else "", entry.cost_usd, entry.call_id or "", replaced)
        return entry

    def _same_paid_call(self, entry: CostEntry) -> CostEntry | None:
        return self._first(CostEntry.call_id == entry.call_id) if entry.call_id else None

    def _same_fine_tuning_job(self, entry: CostEntry) -> CostEntry | None:
        if entry.operation != FINE_TUNING:
            return None
        return self._first(CostEntry.operation == FINE_TUNING, CostEntry.source == entry.source)

    def _first(self, *where) -> CostEntry | None:
        with session_scope(self.database_url) as session:
            return session.exec(select(CostEntry).where(*where)).first()

    # --- rebuild and reconciliation against SQL ----------------------------------------

    def rebuild(self) -> None:
        """Counters from SQL: the ledger's spend, the recorded limit, halt and tiers, and a
        reservation for every job SQL says is running, under its paid call's id and holder
        (recorded.running_reservations). Safe to race: the first state wins."""
        with session_scope(self.database_url) as session:
            spent, members = ledger_members(session)
            recorded = recorded_budget_state(session)
            ledger = ledger_id(session)
            held = running_reservations(session, self.settings)
        limit_override = str(to_micro(recorded.limit_usd)) if recorded.limit_usd is not None else ""

        token = uuid.uuid4().hex
        staged = [f"{key}:staged:{token}" for key in (self.keys.settled, self.keys.tiers, self.keys.reservations,
                                                       self.keys.reservation_holders)]
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(members), 1000):
            pipe.sadd(staged[0], *members[start : start + 1000])
        if recorded.fired:
            pipe.sadd(staged[1], *recorded.fired)
        if held:
            pipe.hset(staged[2], mapping={field: amount for field, (amount, _) in held.items()})
            pipe.hset(staged[3], mapping={field: holder for field, (_, holder) in held.items()})
        for key in staged:
            pipe.expire(key, STAGED_TTL_S)
        pipe.execute()
        self._scripts["INSTALL"](
            keys=[*self.keys.all(), *staged], args=[spent, limit_override, "1" if recorded.halted else "", ledger]
        )

    def reconcile(self, dead_nodes: set[str] = frozenset()) -> Reconciled:
        """Repair what a dead worker or a stray redelivery left (shared/budget/reconcile.py);
        `dead_nodes` are the workers the recovery sweep believes dead."""
        return reconcile(self, dead_nodes)

    def maybe_reconcile(self, every_s: float = RECONCILE_EVERY_S) -> Reconciled | None:
        """`reconcile`, at most once per `every_s` across the fleet (many waiting jobs poll)."""
        if not self.redis.set(self.reconcile_lock_key, "1", nx=True, px=int(every_s * 1000)):
            return None
        return self.reconcile()

    # --- internals -------------------------------------------------------------------

    def _best_effort_reconcile(self) -> None:
        try:
            self.reconcile()
        except Exception:  # noqa: BLE001 - a repair; the halt is recorded either way
            log.exception("budget reconciliation failed")

    def _check_ledger(self) -> None:
        """Once per guard: Redis counters left by another database (a reused Redis db, a
        deleted genesis.db) would cap this ledger with someone else's spend; rebuild instead."""
        if self._ledger_checked:
            return
        with session_scope(self.database_url) as session:
            ours = ledger_id(session)
        theirs = self.redis.hget(self.keys.state, "ledger")
        if theirs is not None and theirs.decode() != ours:
            log.warning("budget counters in Redis belong to another ledger: rebuilding them from SQL")
            self.redis.delete(*self.keys.all())
        self._ledger_checked = True

    def _run(self, script: str, args: list) -> Any:
        """Run a script; if Redis lost the counters, rebuild them from SQL and run it again."""
        self._check_ledger()
        result = self._scripts[script](keys=self.keys.all(), args=args)
        if lua.needs_rebuild(result):
            self.rebuild()
            result = self._scripts[script](keys=self.keys.all(), args=args)
        return result

    def _read_state(self, *names: str) -> list[int]:
        """State fields as integers (micro-dollars, counts; a flag is 1 or 0), rebuilt if lost."""
        self._check_ledger()
        fields = self.redis.hmget(self.keys.state, "spent", *names)
        if fields[0] is None:
            self.rebuild()
            fields = self.redis.hmget(self.keys.state, "spent", *names)
        values = dict(zip(names, fields[1:]))
        if values.get("limit") is None and "limit" in values:
            values["limit"] = self._config_limit_micro()
        return [int(values[name] or 0) for name in names]

    def _halt_reason(self, past_cap: bool) -> str:
        """The recorded halt's reason; a settle past the cap sets the flag before any event."""
        with session_scope(self.database_url) as session:
            recorded = recorded_budget_state(session).halt_reason
        if recorded:
            return recorded
        return "settled spend passed the emergency threshold" if past_cap else "halted by an operator"

    def _add_spend(self, member: str, job_id: int | str, amount_usd: float, call_id: str = "",
                   replaced_usd: float | None = None) -> None:
        args = [job_id, call_id, member, to_micro(amount_usd), self._config_limit_micro(),
                self.settings.budget.emergency, "" if replaced_usd is None else to_micro(replaced_usd)]
        _, spent, limit, counted, reserved = (int(v) for v in self._run("SETTLE", args))
        if counted and 0 <= reserved < to_micro(amount_usd):
            log.warning("job %s cost $%.6f, more than the $%.6f it reserved: settled at its real cost",
                        job_id, amount_usd, to_usd(reserved))
        self._fire_tiers(spent, limit)

    def _fire_tiers(self, spent: int, limit: int) -> None:
        ratios = {"warning": self.settings.budget.warning, "critical": self.settings.budget.critical}
        for tier in TIERS:
            if spent >= threshold(limit, ratios[tier]) and self.redis.sadd(self.keys.tiers, tier) == 1:
                self._event(tier, spent, limit, f"spend crossed {ratios[tier]:.0%} of the budget")

    def _event(self, kind: str, spent: int, limit: int, message: str, at: datetime | None = None) -> None:
        record_event(self.settings, self.database_url, kind, spent=spent, limit=limit, message=message, at=at)

    def _config_limit_micro(self) -> int:
        return to_micro(self.settings.budget.limit_usd)
