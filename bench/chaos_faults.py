"""The parts of bench/chaos.py's runs: the fault plan a seed draws, and `Chaos`, which starts the
workers and the relay, injects each fault and reads back what the ledger and the simulator hold."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.parts import open_limits, prepare_this_process
from tests.support.env import FAST_RECOVERY, genesis_env
from tests.support.forwarder import TcpForwarder
from tests.support.postgres import postgres_outage, reset_postgres
from tests.support.redis_server import ensure_redis, redis_answers
from tests.support.runs import paid_twice_jobs, producer, running_on, served_billed
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# every fault kind, with its short name for the table
KINDS = {"worker SIGKILL": "kill", "SIGKILL same name": "kill-same", "prefork child SIGKILL": "child",
         "Redis restart": "restart", "Redis FLUSHDB": "flush", "database outage": "db",
         "reply dropped": "drop", "batch create lost": "batch"}
REPEATABLE = ("worker SIGKILL", "SIGKILL same name", "prefork child SIGKILL", "Redis FLUSHDB", "reply dropped")
CHAT_REQUESTS = (b"POST /v1/chat/completions ", b"POST /v1/messages ")  # Mistral, Anthropic
BATCH_CREATE = b"POST /v1/batches "  # OpenAI's: the batch backend of the chaos runs
DROPS_PER_FAULT = 3
# (pool, concurrency) of each worker slot: threads and prefork, as the issue asks
SLOTS = (("threads", 6), ("threads", 6), ("prefork", 2))


@dataclass(order=True)
class Fault:
    at_s: float
    kind: str
    seconds: float = 0.0  # how long a database outage lasts


def fault_plan(seed: int, duration: float, kinds: list[str], submits: list[float]) -> list[Fault]:
    """One fault of each kind at a time drawn from the seed, and one more of a repeatable kind per
    minute; a lost batch create is armed just before a run's submit (its batches are created then)."""
    rng = random.Random(seed)

    def draw(kind: str) -> Fault:
        if kind == "batch create lost":
            return Fault(max(0.0, rng.choice(submits[1:] or submits) - 0.5), kind)
        return Fault(rng.uniform(0.05, 0.8) * duration, kind, rng.uniform(10, 30) if kind == "database outage" else 0)

    plan = [draw(kind) for kind in kinds]
    repeatable = [kind for kind in kinds if kind in REPEATABLE]
    plan += [draw(rng.choice(repeatable)) for _ in range(int(duration // 60)) if repeatable]
    return sorted(plan)


def database_outage(url: str, seconds: float) -> None:
    """PostgreSQL refuses and drops connections; a SQLite file is locked exclusively."""
    if url.startswith("postgresql"):
        postgres_outage(url, seconds)
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def restart_redis(url: str) -> None:
    """The server at `url` stops without saving and starts again empty, on the same port."""
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it goes
    wait_for(lambda: not redis_answers(url), timeout=10, what="Redis to stop")
    ensure_redis(url)


class Chaos:
    """One seed's world: an emptied database and Redis db, the simulator behind a relay, three
    workers; `inject` a fault, `finish` for the row. This process's environment is restored on exit."""

    def __init__(self, seed: int, *, redis_url: str, database_url: str, simulator, tmp: Path,
                 extra: dict[str, str]) -> None:
        self.seed, self.redis_url, self.database_url, self.simulator, self.tmp = seed, redis_url, database_url, simulator, tmp
        self.extra = extra
        self.rng = random.Random(seed * 7919 + 1)  # which worker, which child: drawn apart from the plan
        self.injected: Counter[str] = Counter()
        self.in_flight: set[int] = set()
        self.workers: list[WorkerProcess] = []
        self.generations = [0] * len(SLOTS)
        self.outages: list[threading.Thread] = []
        # A worker that exits by itself is started again under its name, as its supervisor would
        # (compose's `restart: unless-stopped`, systemd's Restart=); counted, never hidden.
        self.restarted_by_supervisor = 0
        self.lock = threading.Lock()  # a kill's own restart and the supervisor's never race
        self.stopping = threading.Event()

    def __enter__(self) -> "Chaos":
        self.saved_environ = dict(os.environ)
        self.tmp.mkdir(parents=True, exist_ok=True)
        ensure_redis(self.redis_url)
        redis.Redis.from_url(self.redis_url).flushdb()
        self.simulator.reset()
        if self.database_url.startswith("postgresql"):
            reset_postgres(self.database_url)
        host, port = self.simulator.server.server_address[:2]
        self.relay = TcpForwarder(("127.0.0.1", 0), (host, port))
        self.env = genesis_env(database_url=self.database_url, redis_url=self.redis_url,
                               reports_dir=self.tmp / "reports", simulator_url="http://%s:%d" % self.relay.address,
                               extra={**open_limits(64), **FAST_RECOVERY, **self.extra})
        for key in [k for k in os.environ if k.startswith(("GENESIS_BACKENDS__", "GENESIS_BATCH__", "GENESIS_LIMITS__"))]:
            del os.environ[key]
        self.app = prepare_this_process(self.env)
        try:
            self.workers = [self._start(slot) for slot in range(len(SLOTS))]
            for worker in self.workers:
                self._wait_ready(worker)
            threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True).start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                for slot, worker in enumerate(self.workers):
                    if worker.proc.poll() is not None:
                        self.restarted_by_supervisor += 1
                        self.workers[slot] = self._start(slot)

    def _wait_ready(self, worker: WorkerProcess, attempts: int = 3) -> None:
        """Ping until it answers; a connection this process held across a Redis restart fails
        once (redis-py drops it), so the ping is tried again."""
        for attempt in range(attempts):
            try:
                worker.wait_ready(self.app, timeout=60)
                return
            except redis.ConnectionError:
                if attempt == attempts - 1:
                    raise

    def _start(self, slot: int) -> WorkerProcess:
        pool, concurrency = SLOTS[slot]
        name = f"s{self.seed}w{slot}" + (f"g{self.generations[slot]}" if self.generations[slot] else "")
        env = {**self.env, "GENESIS_WORKER__POOL": pool}  # the config's pool wins over -P
        return WorkerProcess(env, name=name, concurrency=concurrency, pool=pool,
                             log_path=self.tmp / f"{name}.log")

    def submit(self, *args: str) -> None:
        """`producer submit`, retried while Redis or the database is away (a fault may be on)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                result = producer("submit", *args, "--json")
                failure = None if result.exit_code == 0 else result.output
            except Exception as error:  # a connection held across a Redis restart
                failure = str(error)
            if failure is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"submit failed: {failure}")
            time.sleep(2)

    def runs(self) -> list[tuple[str, str, bool]]:
        """(run id, status, report written) of every run in SQL."""
        from sqlmodel import select

        from shared.db import session_scope
        from shared.models import Run

        with session_scope() as session:
            return [(r.id, str(r.status), r.report_path is not None) for r in session.exec(select(Run)).all()]

    def all_final(self) -> bool:
        try:
            runs = self.runs()
        except Exception:  # the database is away: not known to be final
            return False
        return bool(runs) and all(status.endswith(("completed", "halted", "cancelled")) and reported
                                  for _, status, reported in runs)

    # --- the faults --------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self._inject(fault)

    def _inject(self, fault: Fault) -> None:
        kind = fault.kind
        if kind in ("worker SIGKILL", "SIGKILL same name"):
            slot = self.rng.randrange(len(SLOTS))
            worker = self.workers[slot]
            worker.kill()
            self.in_flight |= self._running_on(worker.hostname)
            if kind == "worker SIGKILL":
                self.generations[slot] += 1
            self.workers[slot] = self._start(slot)
        elif kind == "prefork child SIGKILL":
            parent = self.workers[[pool for pool, _ in SLOTS].index("prefork")]
            try:
                children = Path(f"/proc/{parent.proc.pid}/task/{parent.proc.pid}/children").read_text().split()
            except OSError:  # the prefork worker is gone (killed, restarting): nothing to inject
                children = []
            if not children:
                return
            in_flight = self._running_on(parent.hostname)  # its children's, at most one each
            os.kill(int(self.rng.choice(children)), 9)
            self.in_flight |= in_flight
        elif kind == "Redis restart":
            restart_redis(self.redis_url)
        elif kind == "Redis FLUSHDB":
            redis.Redis.from_url(self.redis_url).flushdb()
        elif kind == "database outage":
            outage = threading.Thread(target=database_outage, args=(self.database_url, fault.seconds), daemon=True)
            outage.start()
            self.outages.append(outage)
        elif kind == "reply dropped":
            for _ in range(DROPS_PER_FAULT):
                self.relay.drop_replies(1, self.rng.choice(CHAT_REQUESTS))
        elif kind == "batch create lost":
            self.relay.drop_replies(1, BATCH_CREATE)
        if kind not in ("reply dropped", "batch create lost"):  # those count the replies dropped
            self.injected[kind] += 1

    def _running_on(self, hostname: str) -> set[int]:
        """The jobs SQL shows running on `hostname`, read once the database answers (an outage
        may be on; the killed worker cannot change them meanwhile)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return running_on(None, hostname)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    # --- the row -----------------------------------------------------------------------

    def finish(self, timeout: float) -> dict:
        """Wait for every run to be final and reported (up to `timeout`), give the sweeps time to
        reconcile, end the simulator's batches, and read the row."""
        from sqlalchemy import func
        from sqlmodel import select

        from shared.budget.guard import BudgetGuard
        from shared.config import get_settings
        from shared.db import session_scope
        from shared.models import CostEntry, Job

        try:
            wait_for(self.all_final, timeout=timeout, interval=1, what="every run to be reported")
        except Exception as error:  # reported as runs not completed
            print(f"  seed {self.seed}: {error}")
        for outage in self.outages:
            outage.join()
        guard = BudgetGuard.from_settings(get_settings())

        def reservations() -> int:
            return int(_quietly(guard.redis.hlen, guard.keys.reservations) or 0)

        try:
            wait_for(lambda: reservations() == 0, timeout=20, interval=1, what="reservations to be reconciled")
        except Exception:
            pass  # counted in the row
        time.sleep(self.simulator.config.batch_delay_s)
        request = urllib.request.Request(f"{self.simulator.url}/v1/batches", headers={"authorization": "Bearer sk-sim"})
        urllib.request.urlopen(request, timeout=10).read()  # a batch's first read after its delay ends it
        with session_scope() as session:
            ledger = session.exec(select(func.count()).select_from(CostEntry)).one()
            by_status = dict(session.exec(select(Job.status, func.count()).group_by(Job.status)).all())
        paid_twice = paid_twice_jobs()
        self.injected["reply dropped"] = sum(n for line, n in self.relay.dropped.items() if " /v1/batches " not in line)
        self.injected["batch create lost"] = sum(n for line, n in self.relay.dropped.items() if " /v1/batches " in line)
        runs = self.runs()
        return {"seed": self.seed, "faults": {k: n for k, n in self.injected.items() if n},
                "ok": sum(n for status, n in by_status.items() if str(status).endswith("ok")),
                "jobs": sum(by_status.values()), "served": served_billed(self.simulator), "ledger": ledger,
                "paid_twice": len(paid_twice), "paid_twice_beyond": len(paid_twice - self.in_flight),
                "in_flight": len(self.in_flight), "reservations": reservations(),
                "not_completed": sum(1 for _, status, _ in runs if not status.endswith("completed")),
                "runs": len(runs), "workers_died": self.restarted_by_supervisor}

    def __exit__(self, *_exc) -> None:
        self.stopping.set()
        with self.lock:  # the supervisor starts nothing more
            pass
        for worker in self.workers:
            worker.stop(timeout=30)
        for outage in self.outages:
            outage.join()
        self.relay.stop()
        _quietly(lambda: redis.Redis.from_url(self.redis_url).flushdb())
        os.environ.clear()
        os.environ.update(self.saved_environ)
        from shared.config import get_settings

        get_settings.cache_clear()


def _quietly(call, *args):
    """`call(*args)`, or None when a store is away."""
    try:
        return call(*args)
    except Exception:
        return None
