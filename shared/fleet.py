"""What the fleet knows about itself, in Redis: one clock, who is alive, which runs have their
messages, and who sweeps. Everything here is rebuilt by live workers within seconds if Redis
loses it, and a missing key is only believed after it has stayed missing for a while.

- Clock: Redis `TIME`, so leases are judged on one timeline whatever the hosts' clocks say.
  A process reads it at most every CLOCK_RESYNC_S and counts on its monotonic clock between
  reads (a job's claim needs "now": one round trip less per job, a few ms of error at most).
- Identity: each process that makes paid calls is one *incarnation* (node name, pid and a random
  token, minted once per process: a forked child mints its own). It holds the leases of the jobs
  it runs and the reservations of its calls, so a worker restarted under the same `-n`, or a
  prefork child replaced by its parent, is a new holder and the old one is seen dead (design §12).
- Heartbeats: `genesis:node:<incarnation>` with a short TTL, refreshed by that process itself.
- Run markers: `genesis:run:<run_id>` written when a run's messages are published; a run in
  flight without one lost its queued messages (Redis was flushed or replaced).
- Missing since: the sweeper notes when it first saw a heartbeat or a marker missing, and acts
  only once it stayed missing for a grace period (a live worker refreshes long before that).
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import datetime, timezone

import redis

NODE_PREFIX = "genesis:node:"
NODES_KEY = "genesis:nodes"
RUN_PREFIX = "genesis:run:"
MISSING_KEY = "genesis:recovery:missing"
SWEEP_KEY = "genesis:recovery:sweep"
KOMBU_UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)  # its queue keys: `name`, then `name\x06\x16<step>`


CLOCK_RESYNC_S = 5.0
# server → (monotonic when read, Redis − monotonic). No lock: a dict read or write is atomic
# under the GIL, two threads resyncing at once only read TIME twice, and a lock held by another
# thread at fork time would stay held forever in a prefork child.
_offsets: dict[tuple, tuple[float, float]] = {}


def redis_now(client: redis.Redis) -> datetime:
    """Now on the Redis clock: read with `TIME` at most every CLOCK_RESYNC_S per server and
    process, carried forward on this host's monotonic clock (which no clock step moves)."""
    kwargs = client.connection_pool.connection_kwargs
    key = (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"))
    at = time.monotonic()
    known = _offsets.get(key)
    if known is None or at - known[0] >= CLOCK_RESYNC_S:
        server = _seconds(client)  # a new connection's set-up comes before the server reads it
        after = time.monotonic()
        known = (after, server - after)
        _offsets[key] = known
        at = after
    return datetime.fromtimestamp(at + known[1], tz=timezone.utc)


def _seconds(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


# (pid, node) → this process's incarnation: a child forked after the parent minted its own
# finds no entry (a worker process serves one node name; tests may play several in one process).
_incarnations: dict[tuple[int, str], str] = {}


def incarnation(node: str) -> str:
    """This process's identity as a holder of leases and reservations, minted on first use:
    `<node>/<pid>.<token>` (the node name stays readable in logs; the token tells apart two
    processes that got the same pid, e.g. in two containers of one hostname)."""
    pid = os.getpid()
    mine = _incarnations.get((pid, node))
    if mine is None:
        mine = _incarnations[(pid, node)] = f"{node.replace('|', '_')}/{pid}.{secrets.token_hex(4)}"  # `|` ends it
    return mine


def beat(client: redis.Redis, holder: str, ttl_s: float) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.set(NODE_PREFIX + holder, "1", px=int(ttl_s * 1000))
    pipe.sadd(NODES_KEY, holder)
    pipe.execute()


def known_nodes(client: redis.Redis) -> set[str]:
    """Every incarnation that has beaten since Redis last lost everything (dead ones until
    dropped, which the sweep does only once their reconcile committed)."""
    return {name.decode() for name in client.smembers(NODES_KEY)}


def drop_nodes(client: redis.Redis, names: set[str]) -> None:
    """Forget dead incarnations: only after everything they held was handed back and reconciled."""
    if names:
        client.srem(NODES_KEY, *sorted(names))


def mark_run_enqueued(client: redis.Redis, run_id: str) -> None:
    client.set(RUN_PREFIX + run_id, "1")


def unmark_run(client: redis.Redis, run_id: str) -> None:
    client.delete(RUN_PREFIX + run_id)


def lasting(client: redis.Redis, kind: str, names: set[str], grace_s: float) -> set[str]:
    """Of `names` (what a sweep observes now: a missing key, a run waiting for its report),
    those observed continuously for at least `grace_s`; names no longer observed are forgotten."""
    now = _seconds(client)
    prefix = f"{kind}:"
    noted = {k.decode(): float(v) for k, v in client.hgetall(MISSING_KEY).items() if k.decode().startswith(prefix)}
    stale = [field for field in noted if field[len(prefix):] not in names]
    if stale:
        client.hdel(MISSING_KEY, *stale)
    fresh = {f"{prefix}{name}": now for name in names if f"{prefix}{name}" not in noted}
    if fresh:
        client.hset(MISSING_KEY, mapping=fresh)
    return {name for name in names if now - noted.get(f"{prefix}{name}", now) >= grace_s}


def gone_for(client: redis.Redis, kind: str, names: set[str], prefix: str, grace_s: float) -> set[str]:
    """Of `names`, those whose `prefix + name` key has been missing for at least `grace_s`."""
    ordered = sorted(names)
    pipe = client.pipeline(transaction=False)
    for name in ordered:
        pipe.exists(prefix + name)
    missing = {name for name, exists in zip(ordered, pipe.execute() if ordered else []) if not exists}
    return lasting(client, kind, missing, grace_s)


def dead_nodes(client: redis.Redis, holders: set[str], grace_s: float) -> set[str]:
    return gone_for(client, "node", holders, NODE_PREFIX, grace_s)


def runs_without_messages(client: redis.Redis, run_ids: set[str], grace_s: float) -> set[str]:
    return gone_for(client, "run", run_ids, RUN_PREFIX, grace_s)


def forget(client: redis.Redis, kind: str, name: str) -> None:
    client.hdel(MISSING_KEY, f"{kind}:{name}")


def broker_holds_nothing(client: redis.Redis, queues: tuple[str, ...]) -> bool:
    """No message waits in any queue (every priority step of kombu's Redis transport) and none is
    delivered and unacknowledged (being run, or held by a worker for its countdown): a job SQL
    says is `queued` then has no message that will ever deliver it."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in (queue, *(f"{queue}\x06\x16{p}" for p in KOMBU_PRIORITY_STEPS[1:])):
            pipe.llen(key)
    pipe.hlen(KOMBU_UNACKED_KEY)
    return not any(pipe.execute())


def take_sweep_turn(client: redis.Redis, hostname: str, interval_s: float) -> bool:
    """At most one sweep per interval across the whole fleet (the key is never released early)."""
    return bool(client.set(SWEEP_KEY, hostname, nx=True, px=int(interval_s * 1000)))
