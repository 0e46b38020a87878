"""The budget guard's atomic steps, one Lua script each, so no interleaving of workers on any
host can push settled + reserved past the cap. Amounts are integer micro-dollars.

Every script takes the same KEYS (see `BudgetKeys`): state (a hash: spent, reserved, limit,
halted, announced, ledger, generation, waits, overruns, overrun), reservations (job → amount),
reservation ids (job → the generation that made it, so a sweep releases only what it saw),
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
-- drops a job's reservation; returns its amount, or false when it held none
local function drop(job)
  local previous = redis.call('HGET', KEYS[2], job)
  if not previous then return false end
  redis.call('HDEL', KEYS[2], job)
  redis.call('HDEL', KEYS[3], job)
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(previous))
  return tonumber(previous)
end
"""

# ARGV: job, amount, config limit, emergency ratio.
# Halt only when the settled ledger leaves no room for this call's worst case; when only the
# reservations of calls in flight hold the room, the caller waits for them to settle.
# Refusing sets the halt flag in the same step, so no later reservation slips in.
RESERVE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local limit = limit_of(ARGV[3])
local amount = tonumber(ARGV[2])
local cap = cap_of(limit, tonumber(ARGV[4]))
local previous = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
if redis.call('HEXISTS', KEYS[1], 'halted') == 1 or spent + amount > cap then
  drop(ARGV[1])
  redis.call('HSET', KEYS[1], 'halted', '1')
  return {0, spent, tonumber(redis.call('HGET', KEYS[1], 'reserved')), limit}
end
if spent + reserved - previous + amount > cap then
  drop(ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'waits', 1)
  return {2, spent, tonumber(redis.call('HGET', KEYS[1], 'reserved')), limit}
end
local id = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[2], ARGV[1], amount)
redis.call('HSET', KEYS[3], ARGV[1], id)
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount - previous)
return {1, spent, reserved, limit, id}
"""

# ARGV: job ('' for none), ledger member, amount, config limit, emergency ratio.
# Counted once per member. A call that cost more than it reserved is counted as an overrun;
# spend past the cap (an under-estimate, a manual entry) sets the halt flag.
SETTLE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local previous = drop(ARGV[1])
local amount = tonumber(ARGV[3])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local counted = redis.call('SADD', KEYS[4], ARGV[2])
if counted == 1 then
  spent = redis.call('HINCRBY', KEYS[1], 'spent', amount)
  if previous and amount > previous then
    redis.call('HINCRBY', KEYS[1], 'overruns', 1)
    redis.call('HINCRBY', KEYS[1], 'overrun', amount - previous)
  end
end
local limit = limit_of(ARGV[4])
if spent > cap_of(limit, tonumber(ARGV[5])) then redis.call('HSET', KEYS[1], 'halted', '1') end
return {1, spent, limit, counted, previous or -1}
"""

# ARGV: job, reservation id ('' for whatever it holds). With an id, a reservation made since
# (a new delivery of the job) is left alone.
RELEASE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if drop(ARGV[1]) then return 1 end
return 0
"""

# The flag, plus `announced` so exactly one caller records each halt.
HALT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'halted', '1')
return redis.call('HSETNX', KEYS[1], 'announced', '1')
"""

# ARGV: new limit ('' to keep it). A new limit starts the tiers afresh.
RESUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[1], 'halted', 'announced')
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'limit', ARGV[1])
  redis.call('DEL', KEYS[5])
end
return 1
"""

# KEYS: the five, then staged settled, staged tiers, staged reservations.
# ARGV: spent, limit override ('' for none), halted ('1' or ''), ledger id.
# Installs a rebuilt state only if no other process installed one first.
INSTALL = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0, 'ledger', ARGV[4], 'generation', 0)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'limit', ARGV[2]) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'halted', '1', 'announced', '1') end
for staged, live in pairs({[KEYS[6]] = KEYS[4], [KEYS[7]] = KEYS[5]}) do
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, live)
    redis.call('PERSIST', live)
  end
end
local held = redis.call('HGETALL', KEYS[8])
for i = 1, #held, 2 do
  redis.call('HSET', KEYS[2], held[i], held[i + 1])
  redis.call('HSET', KEYS[3], held[i], redis.call('HINCRBY', KEYS[1], 'generation', 1))
  redis.call('HINCRBY', KEYS[1], 'reserved', tonumber(held[i + 1]))
end
redis.call('DEL', KEYS[8])
return 1
"""


class BudgetKeys(NamedTuple):
    """The Redis keys of one budget, in the order every script takes them."""

    state: str
    reservations: str
    reservation_ids: str
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
