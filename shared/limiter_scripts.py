"""The limiter's Lua (shared/limiter.py runs it): each script decides atomically, on Redis's clock.
Kept apart from the Python that calls them so each module stays one job."""

from shared.learned_limits import EFFECTIVE_LUA, LEARN_LUA

# Shared by every script: the Redis clock in milliseconds, and an expiry that keeps a bucket's
# hash exactly as long as it still matters (once every TAT and block lies in the past the
# bucket is full and unblocked, which is what a missing key means too).
PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function keep_until_useless(key, now)
  local s = redis.call('HMGET', key, 'req', 'tok', 'blocked')
  local last = math.max(tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0)
  if last > now then
    redis.call('PEXPIRE', key, math.ceil(last - now) + 1000)
  end
end
local function interval(per_minute)
  if per_minute > 0 then return 60000 / per_minute end
  return 0
end
""" + EFFECTIVE_LUA + LEARN_LUA

# KEYS: the run's refused-keys hash, then per pool its state hash, slots zset, learned hash, rate hash.
# ARGV: ceiling rpm, ceiling tpm (0 = none; each pool's own ceiling), tokens, max in flight (0 =
# unlimited), slot id, lease ms, in-flight poll ms, start rpm, number of pools, the suffix of a
# variable refused for this (provider, model) only ("@provider:model", a 403), then per pool: its
# number of key variables and their names.
# Every pool whose keys are not all refused is tried; the one granting with the most headroom left
# (the smallest share of its bucket used, over every dimension) takes the call, on one of its keys
# not refused (round robin). Returns {1, tokens charged, pool index, variable} when granted,
# {0, microseconds to wait} (the soonest pool's), or {-1, 0} when every key is refused.
ACQUIRE = PRELUDE + """
local ceil_rpm, ceil_tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_in_flight, start_rpm = tonumber(ARGV[4]), tonumber(ARGV[8])
local now = now_ms()
local function try_bucket(state, slots, learned)
  local rpm, tpm = effective(learned, ceil_rpm, ceil_tpm, start_rpm)
  local req_iv, tok_iv = interval(rpm), interval(tpm)
  local tokens = want
  if tpm > 0 and tokens > tpm then tokens = tpm end  -- larger than the whole bucket: a full bucket
  local s = redis.call('HMGET', state, 'blocked', 'req', 'tok')
  local blocked = tonumber(s[1]) or 0
  if blocked > now then return blocked - now, 0 end
  local wait, room = 0, 1
  local req_tat, tok_tat
  if req_iv > 0 then
    -- burst = limit, so the tolerance is one minute's worth of intervals
    req_tat = math.max(tonumber(s[2]) or now, now) + req_iv
    wait = math.max(wait, req_tat - 60000 - now)
    room = math.min(room, (60000 - (req_tat - now)) / 60000)
  end
  if tok_iv > 0 then
    tok_tat = math.max(tonumber(s[3]) or now, now) + tokens * tok_iv
    wait = math.max(wait, tok_tat - 60000 - now)
    room = math.min(room, (60000 - (tok_tat - now)) / 60000)
  end
  if max_in_flight > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    local busy = redis.call('ZCARD', slots)
    if busy >= max_in_flight then
      local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
      wait = math.max(wait, math.min(tonumber(first[2]) - now, tonumber(ARGV[7])))
    end
    room = math.min(room, (max_in_flight - busy - 1) / max_in_flight)
  end
  return wait, room, req_tat, tok_tat, tokens
end
local best, soonest = nil, nil
local at = 11
for p = 1, tonumber(ARGV[9]) do
  local alive = {}
  for v = 1, tonumber(ARGV[at]) do
    local var = ARGV[at + v]
    if redis.call('HEXISTS', KEYS[1], var) == 0 and redis.call('HEXISTS', KEYS[1], var .. ARGV[10]) == 0 then
      table.insert(alive, var)
    end
  end
  at = at + tonumber(ARGV[at]) + 1
  if #alive > 0 then
    local k = 1 + (p - 1) * 4
    local wait, room, req_tat, tok_tat, tokens = try_bucket(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
    if wait <= 0 then
      if not best or room > best.room then
        best = {p = p, k = k, room = room, alive = alive, req = req_tat, tok = tok_tat, tokens = tokens}
      end
    elseif not soonest or wait < soonest then
      soonest = wait
    end
  end
end
if not best then
  if soonest then return {0, math.ceil(soonest * 1000)} end
  return {-1, 0}
end
local state, slots, rate = KEYS[best.k + 1], KEYS[best.k + 2], KEYS[best.k + 4]
if best.req then redis.call('HSET', state, 'req', best.req) end
if best.tok then redis.call('HSET', state, 'tok', best.tok) end
if best.req or best.tok then keep_until_useless(state, now) end
if max_in_flight > 0 then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', slots, now + lease, ARGV[5])
  redis.call('PEXPIRE', slots, math.ceil(lease) + 1000)
end
count_call(rate, now)
local turn = tonumber(redis.call('HGET', rate, math.floor(now / 60000))) or 0
return {1, best.tokens, best.p, best.alive[(turn % #best.alive) + 1]}
"""

# KEYS: state hash, slots zset, learned hash.  ARGV: slot id ('' = none), ceiling tpm, token delta.
RELEASE = PRELUDE + """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
local delta = tonumber(ARGV[3])
local _, tpm = effective(KEYS[3], 0, tonumber(ARGV[2]), 0)
local tok_iv = interval(tpm)
if tok_iv > 0 and delta ~= 0 then
  local now = now_ms()
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tok')) or now
  -- a refund can fill the bucket but not beyond full (a TAT in the past means full)
  local new_tat = math.max(math.max(tat, now) + delta * tok_iv, now)
  redis.call('HSET', KEYS[1], 'tok', new_tat)
  keep_until_useless(KEYS[1], now)
end
return 1
"""

# KEYS: state hash, learned hash, rate hash.  ARGV: block ms (0 = none), the provider's remaining
# requests and tokens (-1 = unknown), ceiling rpm and tpm, start rpm, then LEARN_LUA's nine.
# Learns the limits stated, then lowers our buckets to what the provider says is left.
OBSERVE = PRELUDE + """
local now = now_ms()
local block = tonumber(ARGV[1])
if block > 0 then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  redis.call('HSET', KEYS[1], 'blocked', math.max(blocked, now + block))
end
local ceil_rpm, ceil_tpm, start_rpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local was_rpm, was_tpm = effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm)
learn(KEYS[2], KEYS[3], now, {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14],
                             ARGV[15]})
local rpm, tpm = effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm)
-- a new rate keeps the units already used: the TAT's lead over now is rescaled, so a bucket that
-- started at START_RPM and learns more admits the difference at once; one lowered stays used (at
-- most empty: a debt beyond one window would outlast the new limit's own bucket)
for i, field in ipairs({'req', 'tok'}) do
  local was, is = ({was_rpm, was_tpm})[i], ({rpm, tpm})[i]
  local tat = tonumber(redis.call('HGET', KEYS[1], field))
  if was > 0 and is > 0 and was ~= is and tat and tat > now then
    redis.call('HSET', KEYS[1], field, now + math.min((tat - now) * was / is, 60000))  -- at most empty
  end
end
for i, field in ipairs({'req', 'tok'}) do
  local remaining = tonumber(ARGV[1 + i])
  local capacity = ({rpm, tpm})[i]
  if remaining >= 0 and capacity > 0 and remaining < capacity then
    local tat = tonumber(redis.call('HGET', KEYS[1], field)) or now
    local floor_tat = now + (capacity - remaining) * interval(capacity)
    if floor_tat > tat then redis.call('HSET', KEYS[1], field, floor_tat) end
  end
end
keep_until_useless(KEYS[1], now)
return 1
"""


# KEYS: learned hash.  ARGV: ceiling rpm, ceiling tpm, start rpm.  The rates in force, by the
# one rule the other scripts use.
IN_FORCE = PRELUDE + """
local rpm, tpm = effective(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {rpm, tpm}
"""
