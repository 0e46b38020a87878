"""The budget guard and the cost ledger (design §7).

Redis holds the live counters so that every worker on every host shares one strict cap:
each check-and-reserve is a single Lua script, so no interleaving of workers can push
settled + reserved past emergency × limit. Amounts are integer micro-dollars (no float drift
in Lua). SQL stays the source of truth: the CostEntry ledger and the BudgetEvent log hold
everything needed to rebuild the counters when Redis has lost them.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import redis
from sqlalchemy import update
from sqlmodel import Session, col, select

from shared.config import ConfigError, Settings
from shared.db import session_scope
from shared.lifecycle import mark_runs_halted
from shared.models import BudgetEvent, CostEntry, Run, RunStatus
from shared.tokens import estimate_prompt_tokens

if TYPE_CHECKING:
    from shared.suite import Suite

log = logging.getLogger("genesis.budget")

MICRO = 1_000_000
WEBHOOK_TIMEOUT_S = 3.0
TIERS = ("warning", "critical")  # fired once each; the emergency tier is the halt itself
NEEDS_REBUILD = -1

# KEYS: state, reservations | ARGV: job, amount, config limit, emergency ratio
# Refusing at the cap sets the halt flag in the same step, so no later reservation slips in.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[3])
local previous = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local amount = tonumber(ARGV[2])
local cap = math.floor(limit * tonumber(ARGV[4]) + 0.5)
if redis.call('HEXISTS', KEYS[1], 'halted') == 1 or spent + reserved - previous + amount > cap then
  if previous > 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    reserved = redis.call('HINCRBY', KEYS[1], 'reserved', -previous)
  end
  redis.call('HSET', KEYS[1], 'halted', '1')
  return {0, spent, reserved, limit}
end
redis.call('HSET', KEYS[2], ARGV[1], amount)
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount - previous)
return {1, spent, reserved, limit}
"""

# KEYS: state, reservations, settled | ARGV: job ('' for none), ledger member, amount, config limit,
# emergency ratio. Spend past the cap (an under-estimate, a manual entry) sets the halt flag.
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local previous = redis.call('HGET', KEYS[2], ARGV[1])
if previous then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(previous))
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
if redis.call('SADD', KEYS[3], ARGV[2]) == 1 then
  spent = redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[3]))
end
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[4])
if spent > math.floor(limit * tonumber(ARGV[5]) + 0.5) then redis.call('HSET', KEYS[1], 'halted', '1') end
return {1, spent, limit}
"""

# KEYS: state | The flag, plus `announced` so exactly one caller records each halt.
_HALT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'halted', '1')
return redis.call('HSETNX', KEYS[1], 'announced', '1')
"""

# KEYS: state, tiers | ARGV: new limit ('' to keep it). A new limit starts the tiers afresh.
_RESUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[1], 'halted', 'announced')
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'limit', ARGV[1])
  redis.call('DEL', KEYS[2])
end
return 1
"""

# KEYS: state, reservations | ARGV: job
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local previous = redis.call('HGET', KEYS[2], ARGV[1])
if previous then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(previous))
end
return 1
"""

# KEYS: state, reservations, settled, tiers, staged settled, staged tiers
# ARGV: spent, limit override ('' for none), halted ('1' or '')
# Installs a rebuilt state only if no other process installed one first.
_INSTALL = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[5], KEYS[6])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'limit', ARGV[2]) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'halted', '1', 'announced', '1') end
redis.call('HSET', KEYS[1], 'ledger', ARGV[4])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[3])
  redis.call('PERSIST', KEYS[3])
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('RENAME', KEYS[6], KEYS[4])
  redis.call('PERSIST', KEYS[4])
end
return 1
"""


def to_micro(usd: float) -> int:
    return math.floor(usd * MICRO + 0.5)


def to_usd(micro: int) -> float:
    return round(micro / MICRO, 6)


class BudgetRefused(Exception):
    """A reservation the cap (or a standing halt) does not allow. The halt flag is already set;
    the caller stores the job as halted and calls `guard.halt(...)`, which records the halt once."""

    def __init__(self, *, amount_usd: float, spent_usd: float, reserved_usd: float, limit_usd: float) -> None:
        self.amount_usd = amount_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        super().__init__(
            f"budget refused ${amount_usd:.6f}: spent ${spent_usd:.6f} + reserved "
            f"${reserved_usd:.6f} of limit ${limit_usd:.2f}"
        )


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
        self.state_key = f"{prefix}:state"
        self.reservations_key = f"{prefix}:reservations"
        self.settled_key = f"{prefix}:settled"
        self.tiers_key = f"{prefix}:tiers"
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._release = redis.register_script(_RELEASE)
        self._halt = redis.register_script(_HALT)
        self._resume = redis.register_script(_RESUME)
        self._install = redis.register_script(_INSTALL)
        self._ledger_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "BudgetGuard":
        return cls(redis.Redis.from_url(settings.redis_url), settings)

    # --- the cap ---------------------------------------------------------------------

    def reserve(self, job_id: int, amount_usd: float, *, run_id: str | None = None) -> None:
        """`run_id` is accepted for the caller's symmetry with halt(); the cap is global."""
        if amount_usd < 0:
            raise ValueError(f"a reservation cannot be negative (got {amount_usd})")
        args = [job_id, to_micro(amount_usd), self._config_limit_micro(), self.settings.budget.emergency]
        result = self._with_state(lambda: self._reserve(keys=[self.state_key, self.reservations_key], args=args))
        granted, spent, reserved, limit = (int(v) for v in result)
        if not granted:
            raise BudgetRefused(
                amount_usd=amount_usd, spent_usd=to_usd(spent), reserved_usd=to_usd(reserved), limit_usd=to_usd(limit)
            )

    def settle(self, job_id: int, actual_usd: float) -> None:
        """Called after the job's CostEntry is committed; a second settle only drops a stray reservation."""
        self._add_spend(f"job:{job_id}", job_id, actual_usd)

    def release(self, job_id: int) -> None:
        """The call failed or will be retried: its worst case no longer holds budget back."""
        # A missing state needs nothing: a rebuilt state starts with no reservations.
        self._release(keys=[self.state_key, self.reservations_key], args=[job_id])

    # --- status and halt -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        spent, reserved, limit, halted = self._read_state()
        cap = self._cap(limit)
        return {
            "limit_usd": to_usd(limit),
            "spent_usd": to_usd(spent),
            "reserved_usd": to_usd(reserved),
            "level": self._level(spent, limit),
            "halted": halted,
            "emergency_usd": to_usd(cap),
            "remaining_usd": to_usd(max(0, cap - spent - reserved)),
        }

    def is_halted(self) -> bool:
        return self._read_state()[3]

    def halt(self, *, run_id: str | None, reason: str, on_first: Callable[[], None] | None = None) -> bool:
        """True for exactly one caller per halt: that one records the event and stops the queues.
        `on_first` (stopping the consumers) runs before the SQL writes, so workers stop sooner."""
        newly = int(self._with_state(lambda: self._halt(keys=[self.state_key]))) == 1
        if newly and on_first is not None:
            try:
                on_first()
            except Exception:  # noqa: BLE001 - the event must be recorded whatever happened here
                log.exception("stopping the provider consumers failed; reservations stay refused")
        mark_runs_halted(self.database_url)
        if newly:
            spent, _, limit, _ = self._read_state()
            self._record_event("halt", spent=spent, limit=limit, run_id=run_id, message=reason, level="emergency")
        return newly

    def resume(self, *, limit_usd: float | None = None) -> None:
        """A new limit is written as a `limit` event, so a rebuild after Redis loss keeps it."""
        if limit_usd is not None and not limit_usd > 0:
            raise ConfigError(f"--limit must be > 0 (got {limit_usd})")
        new_limit = "" if limit_usd is None else str(to_micro(limit_usd))
        self._with_state(lambda: self._resume(keys=[self.state_key, self.tiers_key], args=[new_limit]))
        spent, _, limit, _ = self._read_state()
        if limit_usd is not None:
            self._record_event("limit", spent=spent, limit=limit, message=f"limit set to ${limit_usd:.2f}")
        self._record_event("resume", spent=spent, limit=limit, message="budget halt lifted")
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
        if cost_usd < 0:
            raise ConfigError(f"--cost must be >= 0 (got {cost_usd})")
        if len(operation.split()) != 1:
            raise ConfigError(f"--operation must be one word (got {operation!r})")
        entry = CostEntry(agent=agent, backend=backend, operation=operation.strip(), cost_usd=cost_usd, source="manual")
        log.info("manual ledger entry: $%.6f %s %s", cost_usd, operation, note)
        return self.record_entry(entry)

    def record_entry(self, entry: CostEntry) -> CostEntry:
        """A ledger entry not tied to a job's result (manual, or a paid call whose result could
        not be stored): written to SQL, then counted once under its own entry id."""
        with session_scope(self.database_url) as session:
            session.add(entry)
        self._add_spend(f"entry:{entry.id}", "", entry.cost_usd)
        return entry

    def rebuild(self) -> None:
        """Counters from SQL; safe to race: only the first rebuilt state is installed."""
        with session_scope(self.database_url) as session:
            entries = session.exec(select(CostEntry.id, CostEntry.job_id, CostEntry.cost_usd)).all()
            recorded = recorded_budget_state(session)
            ledger = ledger_id(session)
        limit_override = str(to_micro(recorded.limit_usd)) if recorded.limit_usd is not None else ""
        halted, fired = recorded.halted, set(recorded.fired)

        token = uuid.uuid4().hex
        staged_settled = f"{self.settled_key}:staged:{token}"
        staged_tiers = f"{self.tiers_key}:staged:{token}"
        # Summed per entry in micro-dollars, exactly as the settle script adds them.
        spent = sum(to_micro(cost) for _, _, cost in entries)
        members = [f"job:{job_id}" if job_id is not None else f"entry:{id_}" for id_, job_id, _ in entries]
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(members), 1000):
            pipe.sadd(staged_settled, *members[start : start + 1000])
        if fired:
            pipe.sadd(staged_tiers, *fired)
        pipe.expire(staged_settled, 300)
        pipe.expire(staged_tiers, 300)
        pipe.execute()
        self._install(
            keys=[self.state_key, self.reservations_key, self.settled_key, self.tiers_key,
                  staged_settled, staged_tiers],
            args=[spent, limit_override, "1" if halted else "", ledger],
        )

    # --- internals -------------------------------------------------------------------

    def _check_ledger(self) -> None:
        """Once per guard: Redis counters left by another database (a reused Redis db, a
        deleted genesis.db) would cap this ledger with someone else's spend; rebuild instead."""
        if self._ledger_checked:
            return
        with session_scope(self.database_url) as session:
            ours = ledger_id(session)
        theirs = self.redis.hget(self.state_key, "ledger")
        if theirs is not None and theirs.decode() != ours:
            log.warning("budget counters in Redis belong to another ledger: rebuilding them from SQL")
            self.redis.delete(self.state_key, self.reservations_key, self.settled_key, self.tiers_key)
        self._ledger_checked = True

    def _with_state(self, call: Callable[[], Any]) -> Any:
        """Run a script; if Redis lost the counters, rebuild them from SQL and run it again."""
        self._check_ledger()
        result = call()
        if _needs_rebuild(result):
            self.rebuild()
            result = call()
        return result

    def _read_state(self) -> tuple[int, int, int, bool]:
        """(spent, reserved, limit) in micro-dollars and the halt flag."""
        self._check_ledger()
        fields = self.redis.hmget(self.state_key, "spent", "reserved", "limit", "halted")
        if fields[0] is None:
            self.rebuild()
            fields = self.redis.hmget(self.state_key, "spent", "reserved", "limit", "halted")
        spent, reserved, limit, halted = fields
        return (
            int(spent),
            int(reserved),
            int(limit) if limit is not None else self._config_limit_micro(),
            halted is not None,
        )

    def _add_spend(self, member: str, job_id: int | str, amount_usd: float) -> None:
        args = [job_id, member, to_micro(amount_usd), self._config_limit_micro(), self.settings.budget.emergency]
        result = self._with_state(
            lambda: self._settle(keys=[self.state_key, self.reservations_key, self.settled_key], args=args)
        )
        _, spent, limit = (int(v) for v in result)
        self._fire_tiers(spent, limit)

    def _fire_tiers(self, spent: int, limit: int) -> None:
        ratios = {"warning": self.settings.budget.warning, "critical": self.settings.budget.critical}
        for tier in TIERS:
            if spent >= _threshold(limit, ratios[tier]) and self.redis.sadd(self.tiers_key, tier) == 1:
                self._record_event(
                    tier, spent=spent, limit=limit, message=f"spend crossed {ratios[tier]:.0%} of the budget"
                )

    def _mark_runs_halted(self) -> None:
        """Every run in flight waits on the halted queues, not only the one that hit the cap."""
        with session_scope(self.database_url) as session:
            session.exec(
                update(Run)
                .where(col(Run.status).in_([RunStatus.queued, RunStatus.running]))
                .values(status=RunStatus.halted)
            )

    def _record_event(
        self,
        kind: str,
        *,
        spent: int,
        limit: int,
        message: str,
        run_id: str | None = None,
        level: str | None = None,
    ) -> None:
        event = BudgetEvent(
            kind=kind, level=level or self._level(spent, limit), spent_usd=to_usd(spent),
            limit_usd=to_usd(limit), run_id=run_id, message=message,
        )
        with session_scope(self.database_url) as session:
            session.add(event)
        log_level = logging.INFO if kind in ("resume", "limit") else logging.WARNING
        if kind in ("critical", "halt"):
            log_level = logging.ERROR
        log.log(log_level, "budget %s: spent $%.2f of $%.2f — %s", kind, event.spent_usd, event.limit_usd, message)
        if self.settings.budget.webhook_url:
            post_webhook(self.settings.budget.webhook_url, event)

    def _level(self, spent: int, limit: int) -> str:
        budget = self.settings.budget
        if spent >= self._cap(limit):
            return "emergency"
        if spent >= _threshold(limit, budget.critical):
            return "critical"
        if spent >= _threshold(limit, budget.warning):
            return "warning"
        return "ok"

    def _cap(self, limit: int) -> int:
        return _threshold(limit, self.settings.budget.emergency)

    def _config_limit_micro(self) -> int:
        return to_micro(self.settings.budget.limit_usd)


def _threshold(limit: int, ratio: float) -> int:
    """Rounded like the Lua scripts round the cap, so Python and Redis agree to the micro-dollar."""
    return math.floor(limit * ratio + 0.5)


def _needs_rebuild(result: Any) -> bool:
    first = result[0] if isinstance(result, list) else result
    return int(first) == NEEDS_REBUILD


@dataclass(frozen=True)
class RecordedBudgetState:
    """What the budget events in SQL say: the limit set by `budget resume --limit` (None: the
    config's), whether the queues are halted, and the tiers fired since the last limit change."""

    limit_usd: float | None
    halted: bool
    fired: frozenset[str]


def ledger_id(session: Session) -> str:
    """This database's ledger identity (its first `ledger` event), created on first use, so
    Redis counters can tell which ledger they were built from."""
    first = select(BudgetEvent.message).where(BudgetEvent.kind == "ledger").order_by(col(BudgetEvent.id)).limit(1)
    found = session.exec(first).first()
    if found is None:
        session.add(BudgetEvent(kind="ledger", level="ok", spent_usd=0.0, limit_usd=0.0, message=uuid.uuid4().hex))
        session.commit()
        found = session.exec(first).first()
    return found


def recorded_budget_state(session: Session) -> RecordedBudgetState:
    events = session.exec(select(BudgetEvent.kind, BudgetEvent.limit_usd).order_by(col(BudgetEvent.id))).all()
    limit_usd: float | None = None
    halted = False
    fired: set[str] = set()
    for kind, event_limit in events:
        if kind == "limit":
            limit_usd, fired = event_limit, set()
        elif kind in ("halt", "resume"):
            halted = kind == "halt"
        elif kind in TIERS:
            fired.add(kind)
    return RecordedBudgetState(limit_usd, halted, frozenset(fired))


def post_webhook(url: str, event: BudgetEvent) -> None:
    """Best effort with a short timeout: a slow or broken hook never stalls or fails a worker."""
    body = json.dumps({
        "kind": event.kind, "level": event.level, "spent_usd": event.spent_usd,
        "limit_usd": event.limit_usd, "run_id": event.run_id, "message": event.message,
        "at": event.at.isoformat(),
    }).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except Exception as exc:  # noqa: BLE001 — any failure is logged, never raised
        log.warning("budget webhook failed (URL not logged: it may hold a token): %s", exc)


# --- pricing ----------------------------------------------------------------------------


def call_cost(settings: Settings, model: str, input_tokens: int, output_tokens: int) -> float:
    price = settings.price_for(model)
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / MICRO


def worst_case_cost(settings: Settings, model: str, input_tokens: int, max_tokens: int) -> float:
    """What a call can cost at most: its whole output allowance is billed."""
    return call_cost(settings, model, input_tokens, max_tokens)


def max_output_tokens(settings: Settings, backend: str, task_max_tokens: int) -> int:
    """The task's max_tokens, capped by the backend's when it sets one."""
    cap = settings.backends[backend].max_tokens
    return min(task_max_tokens, cap) if cap else task_max_tokens


def estimate_run_cost(
    settings: Settings,
    suite: "Suite",
    agents: list[str],
    backends: list[str],
    limit: int | None,
    *,
    guard: BudgetGuard | None = None,
) -> dict[str, Any]:
    """The worst case of a run, for `submit --dry-run`; an unpriced model raises ConfigError.
    With a guard, `remaining_usd` is what the live budget has left, else the configured allowance."""
    by_backend = {name: {"jobs": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0} for name in backends}
    for agent in agents:
        tasks = suite.tasks_for(agent, limit)
        for backend in backends:
            model = settings.model_for(backend, agent)
            row = by_backend[backend]
            for task in tasks:
                input_tokens = estimate_prompt_tokens(task.prompt, task.system)
                output_tokens = max_output_tokens(settings, backend, task.max_tokens)
                row["jobs"] += 1
                row["input_tokens"] += input_tokens
                row["output_tokens"] += output_tokens
                row["cost_usd"] += worst_case_cost(settings, model, input_tokens, output_tokens)
    for row in by_backend.values():
        row["cost_usd"] = round(row["cost_usd"], 6)
    cost = round(sum(row["cost_usd"] for row in by_backend.values()), 6)
    if guard is not None:
        remaining = guard.status()["remaining_usd"]
    else:  # no live counters at hand: the whole configured allowance
        remaining = to_usd(_threshold(to_micro(settings.budget.limit_usd), settings.budget.emergency))
    return {
        "jobs": sum(row["jobs"] for row in by_backend.values()),
        "estimated_input_tokens": sum(row["input_tokens"] for row in by_backend.values()),
        "estimated_output_tokens": sum(row["output_tokens"] for row in by_backend.values()),
        "estimated_cost_usd": cost,
        "by_backend": by_backend,
        "remaining_usd": remaining,
        "within_budget": cost <= remaining,
    }
