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
  local s = redis.call('HMGET', key, 'req', 'tok', 'blocked', 'itok', 'otok')
  local last = 0
  for i = 1, 5 do last = math.max(last, tonumber(s[i]) or 0) end
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
# unlimited), slot id, lease ms, in-flight poll ms, start rpm, number of pools, the tokens' output
# part (max tokens), ceiling itpm, ceiling otpm, the suffix of a variable refused for this
# (provider, model) only ("@provider:model", a 403), then per pool: its number of key variables and
# their names. A bucket with input/output limits charges tokens - output to the one, output to the other.
# Every pool whose keys are not all refused is tried; the one granting with the most headroom left
# (the smallest share of its bucket used, over every dimension) takes the call, on one of its keys
# not refused (round robin). Returns {1, tokens charged, pool index, variable, input charged, output
# charged} when granted,
# {0, microseconds to wait} (the soonest pool's), or {-1, 0} when every key is refused.
ACQUIRE = PRELUDE + """
local ceil_rpm, ceil_tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_in_flight, start_rpm = tonumber(ARGV[4]), tonumber(ARGV[8])
local want_out = math.min(math.max(tonumber(ARGV[10]), 0), want)
local ceil_itpm, ceil_otpm = tonumber(ARGV[11]), tonumber(ARGV[12])
local now = now_ms()
-- units larger than the whole bucket are charged as a full bucket (or they could never pass)
local function fit(units, per_minute)
  if per_minute > 0 and units > per_minute then return per_minute end
  return units
end
local function try_bucket(state, slots, learned)
  local rpm, tpm, itpm, otpm = effective(learned, ceil_rpm, ceil_tpm, start_rpm, ceil_itpm, ceil_otpm)
  local s = redis.call('HMGET', state, 'blocked', 'req', 'tok', 'itok', 'otok')
  local blocked = tonumber(s[1]) or 0
  if blocked > now then return blocked - now, 0 end
  local wait, room = 0, 1
  -- each dimension: {field, its TAT, per minute, units}; burst = limit: the tolerance is one minute
  local dims = {{'req', s[2], rpm, 1}, {'tok', s[3], tpm, fit(want, tpm)},
                {'itok', s[4], itpm, fit(want - want_out, itpm)}, {'otok', s[5], otpm, fit(want_out, otpm)}}
  local tats = {}
  for _, d in ipairs(dims) do
    local iv = interval(d[3])
    if iv > 0 then
      local tat = math.max(tonumber(d[2]) or now, now) + d[4] * iv
      tats[d[1]] = tat
      wait = math.max(wait, tat - 60000 - now)
      room = math.min(room, (60000 - (tat - now)) / 60000)
    end
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
  return wait, room, tats, {dims[2][4], dims[3][4], dims[4][4]}
end
local best, soonest = nil, nil
local at = 14
for p = 1, tonumber(ARGV[9]) do
  local alive = {}
  for v = 1, tonumber(ARGV[at]) do
    local var = ARGV[at + v]
    if redis.call('HEXISTS', KEYS[1], var) == 0 and redis.call('HEXISTS', KEYS[1], var .. ARGV[13]) == 0 then
      table.insert(alive, var)
    end
  end
  at = at + tonumber(ARGV[at]) + 1
  if #alive > 0 then
    local k = 1 + (p - 1) * 4
    local wait, room, tats, charged = try_bucket(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
    if wait <= 0 then
      if not best or room > best.room then
        best = {p = p, k = k, room = room, alive = alive, tats = tats, charged = charged}
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
local moved = false
for field, tat in pairs(best.tats) do
  redis.call('HSET', state, field, tat)
  moved = true
end
if moved then keep_until_useless(state, now) end
if max_in_flight > 0 then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', slots, now + lease, ARGV[5])
  redis.call('PEXPIRE', slots, math.ceil(lease) + 1000)
end
count_call(rate, now)
local turn = tonumber(redis.call('HGET', rate, math.floor(now / 60000))) or 0
return {1, best.charged[1], best.p, best.alive[(turn % #best.alive) + 1], best.charged[2], best.charged[3]}
"""

# KEYS: state hash, slots zset, learned hash.  ARGV: slot id ('' = none), ceiling tpm, token delta,
# ceiling itpm, ceiling otpm, input token delta, output token delta (each actual - charged).
RELEASE = PRELUDE + """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
local _, tpm, itpm, otpm = effective(KEYS[3], 0, tonumber(ARGV[2]), 0, tonumber(ARGV[4]), tonumber(ARGV[5]))
local now = now_ms()
local moved = false
for _, d in ipairs({{'tok', tpm, tonumber(ARGV[3])}, {'itok', itpm, tonumber(ARGV[6])},
                    {'otok', otpm, tonumber(ARGV[7])}}) do
  local iv = interval(d[2])
  if iv > 0 and d[3] ~= 0 then
    local tat = tonumber(redis.call('HGET', KEYS[1], d[1])) or now
    -- a refund can fill the bucket but not beyond full (a TAT in the past means full)
    redis.call('HSET', KEYS[1], d[1], math.max(math.max(tat, now) + d[3] * iv, now))
    moved = true
  end
end
if moved then keep_until_useless(KEYS[1], now) end
return 1
"""

# KEYS: state hash, learned hash, rate hash.  ARGV: block ms (0 = none), the provider's remaining
# requests and tokens (-1 = unknown), ceiling rpm and tpm, start rpm, LEARN_LUA's nine, then the
# remaining input and output tokens (-1), ceiling itpm and otpm.
# Learns the limits stated, then lowers our buckets to what the provider says is left.
OBSERVE = PRELUDE + """
local now = now_ms()
local block = tonumber(ARGV[1])
if block > 0 then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
  redis.call('HSET', KEYS[1], 'blocked', math.max(blocked, now + block))
end
local ceil_rpm, ceil_tpm, start_rpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ceil_itpm, ceil_otpm = tonumber(ARGV[18]), tonumber(ARGV[19])
local was = {effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm, ceil_itpm, ceil_otpm)}
learn(KEYS[2], KEYS[3], now, {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14],
                             ARGV[15]})
local is = {effective(KEYS[2], ceil_rpm, ceil_tpm, start_rpm, ceil_itpm, ceil_otpm)}
local fields = {'req', 'tok', 'itok', 'otok'}
-- a new rate keeps the units already used: the TAT's lead over now is rescaled, so a bucket that
-- started at START_RPM and learns more admits the difference at once; one lowered stays used (at
-- most empty: a debt beyond one window would outlast the new limit's own bucket)
for i, field in ipairs(fields) do
  local tat = tonumber(redis.call('HGET', KEYS[1], field))
  if was[i] > 0 and is[i] > 0 and was[i] ~= is[i] and tat and tat > now then
    redis.call('HSET', KEYS[1], field, now + math.min((tat - now) * was[i] / is[i], 60000))  -- at most empty
  end
end
for i, field in ipairs(fields) do
  local remaining = tonumber(({ARGV[2], ARGV[3], ARGV[16], ARGV[17]})[i])
  local capacity = is[i]
  if remaining >= 0 and capacity > 0 and remaining < capacity then
    local tat = tonumber(redis.call('HGET', KEYS[1], field)) or now
    local floor_tat = now + (capacity - remaining) * interval(capacity)
    if floor_tat > tat then redis.call('HSET', KEYS[1], field, floor_tat) end
  end
end
keep_until_useless(KEYS[1], now)
return 1
"""


# KEYS: learned hash.  ARGV: ceiling rpm, ceiling tpm, start rpm, ceiling itpm, ceiling otpm.  The
# rates in force (rpm, tpm, itpm, otpm), by the one rule the other scripts use.
IN_FORCE = PRELUDE + """
return {effective(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                  tonumber(ARGV[5]))}
"""
