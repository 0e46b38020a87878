"""A chaos run as a benchmark: faults at random times from a seed, then ledger against served.

    python bench/chaos.py --redis-url URL --database-url URL [--seeds 1,2,3,4,5] [--jobs 300]
                          [--duration 180] [--kinds kill,flush,...]

Per seed: runs of about 40 jobs (every agent, `--jobs` jobs in all, on mistral-ft, mistral-base
and anthropic realtime and openai in batch mode) submitted one after the other over three
quarters of `--duration` seconds, against the simulator in this process (its latency set to
keep the workers busy that long) behind a TCP relay (tests/support/forwarder.py), with 3
workers: two with 6 threads, one prefork with 2 children. Meanwhile, at times drawn from the
seed, one fault of each kind (and one more of a repeatable kind per minute):

- worker SIGKILL: a worker's process group is killed, and a new worker takes its place under a new name;
- SIGKILL same name: the same, restarted under the name it had (a systemd restart, a container's hostname);
- prefork child SIGKILL: one child of the prefork worker is killed (its parent replaces it);
- Redis restart: the server at --redis-url shuts down without saving and starts again, empty;
- Redis FLUSHDB: the db of --redis-url loses everything;
- database outage: PostgreSQL refuses and drops connections (SQLite: an exclusive lock) for 10-30 s;
- reply dropped: the next 3 chat requests reach the simulator, which serves (bills) them, and
  the relay closes their connection instead of passing the reply on;
- batch create lost: the same for the next batch creation (armed just before a run is submitted).

The Redis server at --redis-url is restarted and its db flushed: give it a server of your own
(`--redis-url` or GENESIS_BENCH_REDIS_URL; nothing else is assumed). --database-url (or
GENESIS_BENCH_DATABASE_URL): a PostgreSQL database whose tables are dropped and recreated per seed,
or `sqlite` for a file in a temp dir. Recovery timings are the tests' (tests.support.env.FAST_RECOVERY).

One row per seed: faults injected by kind, jobs ok, calls the simulator billed (chat 200s and
batch requests answered), ledger rows, jobs paid twice (more than one ledger row for one
operation) and of those beyond the calls in flight on a killed worker, reservations left after
the run, runs not completed. Exit 1 when any seed has ledger != served, a reservation left or a
run not completed; 2 for bad input."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos_faults import KINDS, SLOTS, Chaos, fault_plan  # noqa: E402

BACKENDS = ("mistral-ft", "mistral-base", "anthropic", "openai")
BATCH_BACKEND = {"GENESIS_BACKENDS__OPENAI__MODE": "batch", "GENESIS_BATCH__MAX_WAIT_S": "2",
                 "GENESIS_BATCH__POLL_MIN_S": "1", "GENESIS_BATCH__POLL_MAX_S": "2"}
AGENTS = 5
SIM_BATCH_DELAY_S = 3.0


def run_shape(jobs: int) -> tuple[int, int]:
    """(runs, tasks per agent) for about `jobs` jobs: runs of about 40 jobs (20 per task: 5 agents
    x 4 backends), submitted one after the other, so calls are in flight all along the faults."""
    per_task = AGENTS * len(BACKENDS)
    runs = max(1, round(jobs / (2 * per_task)))
    return runs, max(1, min(20, round(jobs / (runs * per_task))))


def latency(jobs: int, duration: float) -> dict[str, float]:
    """The simulator's latency that keeps the workers' slots busy over three quarters of the
    duration (0.5 to 7 s, +/- a third: under FAST_RECOVERY's 10 s call deadline)."""
    mean_ms = min(7000.0, max(500.0, 0.75 * duration * sum(c for _, c in SLOTS) / jobs * 1000))
    return {"latency_ms": mean_ms, "latency_jitter_ms": mean_ms / 3}


def chaos_run(seed: int, *, jobs: int, duration: float, kinds: list[str], redis_url: str, database_url: str,
              simulator, tmp: Path, progress=print) -> dict:
    """One seed's chaos run, from an empty database, Redis db and simulator; its row."""
    runs, tasks = run_shape(jobs)
    submits = [i * 0.75 * duration / runs for i in range(runs)]
    plan = fault_plan(seed, duration, kinds, submits)
    simulator.update(**latency(runs * tasks * AGENTS * len(BACKENDS), duration))
    with Chaos(seed, redis_url=redis_url, database_url=database_url, simulator=simulator, tmp=tmp,
               extra=BATCH_BACKEND) as chaos:
        started = time.monotonic()
        events = sorted([(at, "submit", None) for at in submits] + [(f.at_s, "fault", f) for f in plan],
                        key=lambda event: event[0])
        submitted = 0
        for at, what, fault in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if what == "submit":
                chaos.submit("--all-agents", *(a for b in BACKENDS for a in ("--backend", b)), "--limit", str(tasks))
                submitted += 1
            elif submitted < runs or not chaos.all_final():
                progress(f"  seed {seed} t={time.monotonic() - started:5.1f}s: {fault.kind}", flush=True)
                chaos.inject(fault)
        return chaos.finish(timeout=max(300.0, 2 * duration))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    return seeds


def parse_kinds(text: str) -> list[str]:
    """Short names (kill,flush,...) to the kinds they name."""
    by_short = {short: kind for kind, short in KINDS.items()}
    shorts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [short for short in shorts if short not in by_short]
    if unknown or not shorts:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown or text!r}; kinds: {', '.join(by_short)}")
    return [by_short[short] for short in shorts]


def number(kind, low: float, high: float):
    """An argparse type: a `kind` number in [low, high] (finite), else one line and exit 2."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number between {low:g} and {high:g}")
        return value
    return parse


HEADER = (f"{'seed':>4} {'jobs ok':>9} {'runs':>4} {'served':>6} {'ledger':>6} {'paid twice':>10} "
          f"{'beyond in flight':>16} {'in flight':>9} {'reservations left':>17} {'runs not completed':>18}  faults")


def row_line(r: dict) -> str:
    faults = ", ".join(f"{KINDS[k]} {n}" for k, n in r["faults"].items()) or "-"
    return (f"{r['seed']:>4} {r['ok']:>4}/{r['jobs']:<4} {r['runs']:>4} {r['served']:>6} {r['ledger']:>6} "
            f"{r['paid_twice']:>10} {r['paid_twice_beyond']:>16} {r['in_flight']:>9} {r['reservations']:>17} "
            f"{r['not_completed']:>18}  {faults}")


def print_table(rows: list[dict], kinds: list[str], opts) -> None:
    print(f"\nchaos: about {opts.jobs} jobs a seed, {opts.duration:g} s of faults, "
          f"3 workers (2 x {SLOTS[0][1]} threads, 1 prefork x {SLOTS[2][1]})")
    print(HEADER)
    for r in rows:
        print(row_line(r))
    print("faults: " + "; ".join(f"{short} = {kind}" for kind, short in KINDS.items() if kind in kinds)
          + " (drop and batch: replies dropped)")
    print("served = chat 200s + batch requests answered (what the simulator billed); ledger = cost_entry rows; "
          "paid twice = jobs with more than one ledger row for one operation; in flight = jobs running on a "
          "worker when it was killed (a redo pays them again); reservations left = budget reservations in "
          "Redis once every run is final and the sweeps had time to reconcile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default=[1, 2, 3, 4, 5])
    parser.add_argument("--jobs", type=number(int, 1, 10000), default=300)
    parser.add_argument("--duration", type=number(float, 10, 3600), default=180.0, help="seconds of faults")
    parser.add_argument("--kinds", type=parse_kinds, default=list(KINDS),
                        help=f"comma-separated, of {','.join(KINDS.values())} (default: all)")
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL"),
                        help="a Redis server of your own: it is restarted and flushed")
    parser.add_argument("--database-url", default=os.environ.get("GENESIS_BENCH_DATABASE_URL"),
                        help="PostgreSQL (tables dropped per seed) or `sqlite`")
    parser.add_argument("--port", type=number(int, 0, 65535), default=0, help="the simulator's port (0: any free one)")
    opts = parser.parse_args()
    if not opts.redis_url or not opts.database_url:
        parser.error("give --redis-url and --database-url (or GENESIS_BENCH_REDIS_URL and "
                     "GENESIS_BENCH_DATABASE_URL): the bench restarts that Redis and empties that database")

    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    simulator = start_simulator(SimulatorConfig(batch_delay_s=SIM_BATCH_DELAY_S), port=int(opts.port))
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="genesis-bench-chaos-"))
    try:
        for seed in opts.seeds:
            database_url = f"sqlite:///{tmp / f'seed{seed}.db'}" if opts.database_url == "sqlite" else opts.database_url
            rows.append(chaos_run(seed, jobs=opts.jobs, duration=opts.duration, kinds=opts.kinds,
                                  redis_url=opts.redis_url, database_url=database_url, simulator=simulator,
                                  tmp=tmp / f"seed{seed}"))
            print(f"{HEADER}\n{row_line(rows[-1])}", flush=True)  # kept should a later seed fail
            if rows[-1]["workers_died"]:
                print(f"  seed {seed}: {rows[-1]['workers_died']} worker(s) exited by themselves and were started "
                      f"again by the bench's supervisor, as compose or systemd would (logs in {tmp})")
    finally:
        simulator.stop()
        print(f"  (worker logs in {tmp})")
    print_table(rows, opts.kinds, opts)
    broken = [str(r["seed"]) for r in rows if broken_invariants(r)]
    for r in rows:
        if broken_invariants(r):
            print(f"seed {r['seed']}: {'; '.join(broken_invariants(r))}")
    if broken:
        print(f"INVARIANT BROKEN in seed(s) {', '.join(broken)}")
        sys.exit(1)


def broken_invariants(row: dict) -> list[str]:
    """What a row breaks of: ledger = served, no reservation left, every run completed."""
    broken = []
    if row["ledger"] != row["served"]:
        broken.append(f"ledger {row['ledger']} != served {row['served']}")
    if row["reservations"]:
        broken.append(f"{row['reservations']} reservation(s) left")
    if row["not_completed"]:
        broken.append(f"{row['not_completed']} run(s) not completed")
    return broken


if __name__ == "__main__":
    main()
