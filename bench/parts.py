"""Real parts the benchmarks start and measure: the simulator in its own process, a config
with the scenario's limits, CPU and memory read from /proc, and this process pointed at it all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.env import genesis_env  # noqa: E402
from tests.support.redis_server import ensure_redis  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROVIDERS = ("MISTRAL", "OPENAI", "ANTHROPIC")


def open_limits(max_in_flight: int, providers=PROVIDERS) -> dict[str, str]:
    """GENESIS_LIMITS__* variables that take the configured rate limits out of a scenario's way:
    unbounded requests and tokens a minute, `max_in_flight` calls."""
    return {f"GENESIS_LIMITS__{p}__{k}": str(v) for p in providers
            for k, v in (("RPM", 1000000), ("TPM", 1000000000), ("MAX_IN_FLIGHT", max_in_flight))}


class SimulatorProcess:
    """`python -m simulator` in a subprocess, so its CPU is not counted as ours."""

    def __init__(self, latency_ms: float, rpm: int | None, port: int = 0, extra_args: tuple[str, ...] = ()) -> None:
        args = [sys.executable, "-m", "simulator", "--port", str(port), "--latency-ms", str(latency_ms), *extra_args]
        if rpm:
            args += ["--rpm", str(rpm)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if not match:
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = match.group(1)

    def _call(self, path: str, data: bytes | None = None) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}", data=data, timeout=5) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self._call("/_sim/stats")

    def reset(self) -> None:
        self._call("/_sim/reset", data=b"")

    def update(self, **knobs) -> dict:
        """Change knobs live (`POST /_sim/config`): e.g. the provider lowering its limit mid-run."""
        return self._call("/_sim/config", data=json.dumps(knobs).encode())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def config_file(directory: Path, limits: dict[str, dict[str, int]], extra_toml: str = "") -> Path:
    """The shipped TOML with its [limits.*] replaced, model id files made absolute, and
    `extra_toml` (tables of its own, e.g. [keys.openai]) at its end."""
    kept, skipping = [], False
    for line in (ROOT / "config" / "genesis.toml").read_text().splitlines():
        if line.startswith("["):
            skipping = line.startswith("[limits")
        if not skipping:
            kept.append(line.replace('model_id_file = "models/', f'model_id_file = "{ROOT}/models/'))
    for name, values in limits.items():
        kept += ["", f'[limits."{name}"]', *(f"{k} = {v}" for k, v in values.items())]
    kept += ["", extra_toml] if extra_toml else []
    path = directory / "genesis.toml"
    path.write_text("\n".join(kept) + "\n")
    return path


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


def redis_server_pid() -> int | None:
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if len(found) == 1 else None


def cpu_s(pid: int) -> float:
    """User + system CPU of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def prepare_this_process(env: dict[str, str]):
    """Point this process (the producer) at the scenario's database, Redis and config."""
    os.environ.update(env)
    from shared.config import get_settings
    from shared.db import migrate

    from shared.messaging import app, reconnect

    get_settings.cache_clear()
    migrate()
    reconnect(get_settings())
    return app


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class System:
    tmp: Path
    sim: "SimulatorProcess"
    workers: list[WorkerProcess]


@contextmanager
def running_system(key: str, redis_url: str, *, latency_ms: float, sim_rpm: int | None,
                   limits: dict[str, dict[str, int]], workers: int, concurrency: int,
                   queues: list[str | None] | None = None, sim_port: int = 0, sim_args: tuple[str, ...] = (),
                   extra_toml: str = "", extra_env: dict[str, str] | None = None) -> Iterator[System]:
    """The simulator (with `sim_args`), SQLite in a temp dir, a flushed Redis db, and `workers`
    celery workers (worker i consumes `queues[i]`, every queue when None; `extra_env` in their
    environment and this one's), with this process (the producer) pointed at them; all stopped
    and flushed afterwards."""
    import redis

    ensure_redis(redis_url)
    redis.Redis.from_url(redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix=f"genesis-bench-{key}-"))
    sim = SimulatorProcess(latency_ms, sim_rpm, sim_port, sim_args)
    started: list[WorkerProcess] = []
    try:
        env = genesis_env(database_url=f"sqlite:///{tmp / 'genesis.db'}", redis_url=redis_url,
                          reports_dir=tmp / "reports", simulator_url=sim.url,
                          extra={"GENESIS_CONFIG": str(config_file(tmp, limits, extra_toml)), **(extra_env or {})})
        app = prepare_this_process(env)
        started = [WorkerProcess(env, name=f"bench{key}{i}", concurrency=concurrency, log_path=tmp / f"worker{i}.log",
                                 queues=(queues or [None] * workers)[i])
                   for i in range(workers)]
        for worker in started:
            worker.wait_ready(app)
        yield System(tmp, sim, started)
    finally:
        for worker in started:
            worker.stop()
        sim.stop()
        redis.Redis.from_url(redis_url).flushdb()
        print(f"  (logs and SQLite in {tmp})")
