"""Limits learned from the providers themselves (design §14), for the limiter's buckets.

Why it looks like this:
- A provider states its per-minute limits on every answer (and on its 429s): shared/retry.py
  reads the three header families and drops what cannot be trusted. What a scope's last
  answer stated is written to one Redis hash per (scope, model) bucket, so every worker on
  every host paces by it after one response, up as well as down.
- `[limits]` values are ceilings: the bucket runs at the stated limit, never above the ceiling.
  With no ceiling and nothing heard yet, a bucket starts at START_RPM (a first burst cannot
  run far past a small account's limit); the first answer then tells the truth.
- An endpoint that states nothing (a gateway, a local server) is "silent": unlimited within its
  ceiling until it refuses a call; each refusal halves its rate (half the calls of the last
  minute, or of its rate in force if lower; never below AIMD_MIN_RPM), each success adds one
  call a minute back (AIMD: a minute of successes doubles it), never above the ceiling.
- Anthropic states input and output tokens apart (ITPM, OTPM: often 5:1): a bucket that has
  learned them paces input and output tokens in two buckets of their own (input: the prompt's
  estimate; output: the call's max tokens), and no longer by one token rate (Anthropic's `tokens`
  header is the tighter of the two: an input-heavy run would crawl at the output limit).
  `[limits]` `itpm` / `otpm` are ceilings on them, by the rule of rpm / tpm; a `tpm` ceiling
  still caps input + output together.
- The Lua below is spliced into the limiter's scripts (shared/limiter.py), which run it
  atomically on Redis' clock; this module imports nothing of the limiter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.retry import QuotaReading

START_RPM = 50  # a bucket nothing has been heard of yet, and no ceiling: its first burst
LEARNED_KEEP_S = 86_400  # a learned limit not restated for a day is forgotten
AIMD_MIN_RPM = 10  # a silent endpoint's refusals never pace it below this

# Lua: (learned hash, ceiling rpm, tpm, start rpm, ceiling itpm, otpm) -> rpm, tpm, itpm, otpm in
# force (0 = unlimited). Learned input/output limits replace the learned token rate.
EFFECTIVE_LUA = """
local function capped(learned, ceiling)
  if ceiling > 0 and (learned == 0 or learned > ceiling) then return ceiling end
  return learned
end
local function effective(learned_key, ceil_rpm, ceil_tpm, start_rpm, ceil_itpm, ceil_otpm)
  local l = redis.call('HMGET', learned_key, 'rpm', 'tpm', 'aimd', 'silent', 'in_tpm', 'out_tpm')
  local rpm = tonumber(l[1]) or tonumber(l[3])
  if not rpm then
    if l[4] or ceil_rpm > 0 then rpm = 0 else rpm = start_rpm end
  end
  rpm = capped(rpm, ceil_rpm)
  local itpm, otpm = tonumber(l[5]) or 0, tonumber(l[6]) or 0
  local tpm = tonumber(l[2]) or 0
  if itpm > 0 or otpm > 0 then tpm = 0 end  -- split: the two buckets pace the tokens
  return rpm, capped(tpm, ceil_tpm), capped(itpm, ceil_itpm or 0), capped(otpm, ceil_otpm or 0)
end
-- calls granted, per minute, in a hash of two fields (this minute and the last)
local function count_call(rate_key, now)
  local minute = math.floor(now / 60000)
  redis.call('HINCRBY', rate_key, minute, 1)
  redis.call('HDEL', rate_key, minute - 2)
  redis.call('PEXPIRE', rate_key, 180000)
end
local function calls_last_minute(rate_key, now)
  local minute = math.floor(now / 60000)
  local c = redis.call('HMGET', rate_key, minute, minute - 1)
  local into = (now % 60000) / 60000
  return (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) * (1 - into)
end
-- refusals (429s), per minute, in the same hash as 'r<minute>'
local function count_refusal(rate_key, now)
  local minute = math.floor(now / 60000)
  redis.call('HINCRBY', rate_key, 'r' .. minute, 1)
  redis.call('HDEL', rate_key, 'r' .. (minute - 2))
  redis.call('PEXPIRE', rate_key, 180000)
end
"""

# Lua: what one answer stated (or that it stated nothing), into the learned hash.
# ARGV from `learn_at`: stated rpm, stated tpm (-1: not stated), their headers, input and output
# token limits (-1), refused (1 for a 429), silent (1: no rate-limit header at all), ceiling rpm.
LEARN_LUA = """
local function learn(learned_key, rate_key, now, a)
  local rpm, tpm, in_tpm, out_tpm = tonumber(a[1]), tonumber(a[2]), tonumber(a[5]), tonumber(a[6])
  local refused, silent, ceil_rpm = tonumber(a[7]), tonumber(a[8]), tonumber(a[9])
  if refused == 1 then count_refusal(rate_key, now) end
  if rpm > 0 or tpm > 0 or in_tpm > 0 or out_tpm > 0 then
    if rpm > 0 then redis.call('HSET', learned_key, 'rpm', rpm, 'rpm_src', a[3], 'rpm_at', now) end
    if tpm > 0 then redis.call('HSET', learned_key, 'tpm', tpm, 'tpm_src', a[4], 'tpm_at', now) end
    if in_tpm > 0 then redis.call('HSET', learned_key, 'in_tpm', in_tpm) end
    if out_tpm > 0 then redis.call('HSET', learned_key, 'out_tpm', out_tpm) end
    redis.call('HDEL', learned_key, 'silent', 'aimd')
  elseif silent == 1 and not redis.call('HGET', learned_key, 'rpm') then
    redis.call('HSET', learned_key, 'silent', 1)
    local aimd = tonumber(redis.call('HGET', learned_key, 'aimd'))
    if refused == 1 then
      local base = calls_last_minute(rate_key, now)
      if aimd and aimd < base then base = aimd end
      aimd = math.max(%d, math.floor(base / 2))
      redis.call('HSET', learned_key, 'aimd', aimd, 'aimd_at', now)
    elseif aimd then
      aimd = aimd + 1
      if ceil_rpm > 0 then aimd = math.min(aimd, ceil_rpm) end
      redis.call('HSET', learned_key, 'aimd', aimd)
    end
  else
    return
  end
  redis.call('PEXPIRE', learned_key, %d)
end
""" % (AIMD_MIN_RPM, LEARNED_KEEP_S * 1000)


def learn_args(reading: QuotaReading, *, refused: bool, ceiling_rpm: int | None) -> list:
    """The LEARN_LUA arguments for one answer's reading."""
    quotas = reading.quotas
    requests, tokens = quotas.get("requests"), quotas.get("tokens")
    tpm, tpm_src = (tokens.limit, tokens.source) if tokens and tokens.limit else (None, "")
    silent = not quotas and not reading.bogus
    return [
        requests.limit if requests and requests.limit else -1, tpm or -1,
        requests.source if requests and requests.limit else "", tpm_src,
        _limit_of(quotas, "input-tokens"), _limit_of(quotas, "output-tokens"),
        int(refused), int(silent), ceiling_rpm or 0,
    ]


def _limit_of(quotas: Mapping, dim: str) -> int:
    quota = quotas.get(dim)
    return quota.limit if quota is not None and quota.limit else -1


@dataclass(frozen=True)
class Learned:
    """What the fleet knows of one bucket's limits (for `producer limits`)."""

    rpm: int | None
    tpm: int | None
    rpm_source: str
    tpm_source: str
    rpm_at_ms: int | None
    tpm_at_ms: int | None
    input_tpm: int | None
    output_tpm: int | None
    silent: bool  # the endpoint states no limits: paced by AIMD on its refusals
    aimd_rpm: int | None


def last_minute(rate: Mapping[bytes, bytes], now_ms: float) -> tuple[float, float]:
    """(calls, refusals) of the last minute from a bucket's rate hash: this minute's count plus
    the part of the last one still inside the window (the scripts' own estimate)."""
    minute, into = divmod(now_ms, 60_000)
    fields = {k.decode(): int(v) for k, v in rate.items()}

    def window(prefix: str) -> float:
        return fields.get(f"{prefix}{int(minute)}", 0) + fields.get(f"{prefix}{int(minute) - 1}", 0) * (1 - into / 60_000)

    return window(""), window("r")


def parse_learned(fields: Mapping[bytes, bytes]) -> Learned:
    """A learned hash, as HGETALL returns it."""
    text = {k.decode(): v.decode() for k, v in fields.items()}

    def number(name: str) -> int | None:
        try:
            return int(float(text[name]))
        except (KeyError, ValueError):
            return None

    return Learned(
        rpm=number("rpm"), tpm=number("tpm"), rpm_source=text.get("rpm_src", ""), tpm_source=text.get("tpm_src", ""),
        rpm_at_ms=number("rpm_at"), tpm_at_ms=number("tpm_at"), input_tpm=number("in_tpm"),
        output_tpm=number("out_tpm"), silent="silent" in text, aimd_rpm=number("aimd"),
    )
