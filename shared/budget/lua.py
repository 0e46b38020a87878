"""The budget guard's atomic steps, one Lua script each, so no interleaving of workers on any
host can push settled + reserved past the cap. Amounts are integer micro-dollars.

Every script takes the same KEYS (see `BudgetKeys`): state (a hash: spent, reserved, limit,
halted, announced, ledger, waits, overruns, overrun), reservations
(`<call key>#<reservation id>` → amount: one per paid call, so two deliveries of one job never
drop each other's), reservation holders (same field → `<incarnation>|<model>` of the process making the
call, as a rebuild restores it from SQL: what reconcile needs to ledger a dead worker's call;
`rebuilt` for one a rebuild made for a job naming no call),
settled (members already counted in spent), tiers (warning / critical fired). The steps they
share (the cap, dropping a job's reservation) are written once, in PRELUDE.
"""

from __future__ import annotations

from typing import NamedTuple

NEEDS_REBUILD = -1  # a script found no state: Redis lost it; rebuild from SQL and run again
GRANTED, REFUSED, WAIT = 1, 0, 2  # reserve's verdicts

PRELUDE = """
local function cap_of(limit, ratio) return math.floor(limit * ratio + 0.5) end
local function limit_of(config_limit) return tonumber(redis.call('HGET', KEYS[1], 'limit') or config_limit) end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- drops one reservation (`<call key>#<id>`); returns its amount, or false when none was held
local function drop(field)
  local previous = redis.call('HGET', KEYS[2], field)
  if not previous then return false end
  redis.call('HDEL', KEYS[2], field)
  redis.call('HDEL', KEYS[3], field)
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(previous))
  return tonumber(previous)
end
-- the reservations of a call key: all of them, or (rebuilt_only) the first one a rebuild made
-- (holder `rebuilt`), which carries no id its call knows
local function fields_of(key, rebuilt_only)
  local prefix, found = key .. '#', {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(field, 1, #prefix) == prefix and
       (not rebuilt_only or redis.call('HGET', KEYS[3], field) == 'rebuilt') then
      table.insert(found, field)
      if rebuilt_only then return found end
    end
  end
  return found
end
-- drops them; returns the amount of the first dropped, or false
local function drop_key(key, rebuilt_only)
  local first = false
  for _, field in ipairs(fields_of(key, rebuilt_only)) do
    local amount = drop(field)
    first = first or amount
  end
  return first
end
"""

# ARGV: call key, amount, config limit, emergency ratio, reservation id, holder.
# Halt only when the settled ledger leaves no room for this call's worst case; when only the
# reservations of calls in flight hold the room, the caller waits for them to settle.
# Refusing sets the halt flag in the same step, so no later reservation slips in. A denial
# leaves every reservation alone: another delivery of the same job may hold one for a live call.
RESERVE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local limit = limit_of(ARGV[3])
local amount = tonumber(ARGV[2])
local cap = cap_of(limit, tonumber(ARGV[4]))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
if redis.call('HEXISTS', KEYS[1], 'halted') == 1 or spent + amount > cap then
  redis.call('HSET', KEYS[1], 'halted', '1')
  return {0, spent, reserved, limit}
end
local field = ARGV[1] .. '#' .. ARGV[5]
-- this call's own earlier reservation, or one a rebuild made for the key: this one replaces it
local replaced = field
if redis.call('HEXISTS', KEYS[2], field) == 0 then replaced = fields_of(ARGV[1], true)[1] or field end
local previous = tonumber(redis.call('HGET', KEYS[2], replaced) or '0')
if spent + reserved - previous + amount > cap then
  redis.call('HINCRBY', KEYS[1], 'waits', 1)
  return {2, spent, reserved, limit}
end
if replaced ~= field then drop(replaced) previous = 0 end
redis.call('HSET', KEYS[2], field, amount)
redis.call('HSET', KEYS[3], field, ARGV[6])
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount - previous)
return {1, spent, reserved, limit}
"""

# ARGV: call key ('' for none), reservation id ('' for every reservation of the key), ledger
# member, amount, config limit, emergency ratio, replaced amount ('' for none: see below).
# Counted once per member. Drops only its own reservation (or, when that id is not held, one a
# rebuild made for the key). A paid call whose real cost replaced its `outcome unknown` entry
# (the replaced amount, its worst case) moves spent by the difference, once (member
# `<member>:replaced`); if that worst case was never counted, the real cost is counted instead. A call that cost more than it reserved is counted as an overrun;
# spend past the cap (an under-estimate, a manual entry) sets the halt flag.
SETTLE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local previous = false
if ARGV[1] ~= '' and ARGV[2] == '' then
  previous = drop_key(ARGV[1], false)
elseif ARGV[1] ~= '' then
  previous = drop(ARGV[1] .. '#' .. ARGV[2]) or drop_key(ARGV[1], true)
end
local amount = tonumber(ARGV[4])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local counted = redis.call('SADD', KEYS[4], ARGV[3])
if counted == 1 then
  if ARGV[7] and ARGV[7] ~= '' then redis.call('SADD', KEYS[4], ARGV[3] .. ':replaced') end
  spent = redis.call('HINCRBY', KEYS[1], 'spent', amount)
  if previous and amount > previous then
    redis.call('HINCRBY', KEYS[1], 'overruns', 1)
    redis.call('HINCRBY', KEYS[1], 'overrun', amount - previous)
  end
elseif ARGV[7] and ARGV[7] ~= '' and redis.call('SADD', KEYS[4], ARGV[3] .. ':replaced') == 1 then
  spent = redis.call('HINCRBY', KEYS[1], 'spent', amount - tonumber(ARGV[7]))
end
local limit = limit_of(ARGV[5])
if spent > cap_of(limit, tonumber(ARGV[6])) then redis.call('HSET', KEYS[1], 'halted', '1') end
return {1, spent, limit, counted, previous or -1}
"""

# ARGV: call key, reservation id ('' for every reservation of the key).
RELEASE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[2] == '' then
  if drop_key(ARGV[1], false) then return 1 end
  return 0
end
if drop(ARGV[1] .. '#' .. ARGV[2]) then return 1 end
return 0
"""

# ARGV: amount of the refused call ('' for an operator's halt), config limit, emergency ratio.
# The flag, plus `announced` so exactly one caller records each halt. A refusal whose flag a
# resume has cleared since is checked again under the current limit: it halts only if the call
# still does not fit. Returns {announced (1 first, 0 already, 2 not halted: room now), Redis
# time in µs}: the halt event is stamped with that time, on the same clock as a resume's.
HALT = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if redis.call('HEXISTS', KEYS[1], 'halted') == 0 and ARGV[1] ~= '' then
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
  if spent + tonumber(ARGV[1]) <= cap_of(limit_of(ARGV[2]), tonumber(ARGV[3])) then
    return {2, now_us()}
  end
end
redis.call('HSET', KEYS[1], 'halted', '1')
return {redis.call('HSETNX', KEYS[1], 'announced', '1'), now_us()}
"""

# ARGV: new limit ('' to keep it). A new limit starts the tiers afresh. Returns {1, Redis time
# in µs} for the resume's event.
RESUME = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
redis.call('HDEL', KEYS[1], 'halted', 'announced')
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'limit', ARGV[1])
  redis.call('DEL', KEYS[5])
end
return {1, now_us()}
"""

# KEYS: the five, then staged settled, staged tiers, staged reservations, staged holders.
# ARGV: spent, limit override ('' for none), halted ('1' or ''), ledger id.
# Installs a rebuilt state only if no other process installed one first. The staged
# reservations are the running jobs' (shared.budget.recorded.running_reservations), each under
# its own field and holder.
INSTALL = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0, 'ledger', ARGV[4])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'limit', ARGV[2]) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'halted', '1', 'announced', '1') end
for staged, live in pairs({[KEYS[6]] = KEYS[4], [KEYS[7]] = KEYS[5], [KEYS[8]] = KEYS[2], [KEYS[9]] = KEYS[3]}) do
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, live)
    redis.call('PERSIST', live)
  end
end
local reserved = 0
for _, amount in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(amount) end
redis.call('HSET', KEYS[1], 'reserved', reserved)
return 1
"""


# KEYS: reservation holders.  ARGV: reservation field, key variable.  The holder names the key
# its call was given; a reservation already gone stays gone.
NAME_KEY = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder then redis.call('HSET', KEYS[1], ARGV[1], holder .. '|' .. ARGV[2]) end
return 1
"""


class BudgetKeys(NamedTuple):
    """The Redis keys of one budget, in the order every script takes them."""

    state: str
    reservations: str
    reservation_holders: str
    settled: str
    tiers: str

    @classmethod
    def under(cls, prefix: str) -> "BudgetKeys":
        return cls(*(f"{prefix}:{name}" for name in cls._fields))

    def all(self) -> list[str]:
        return list(self)


def needs_rebuild(result: object) -> bool:
    first = result[0] if isinstance(result, list) else result
    return int(first) == NEEDS_REBUILD
