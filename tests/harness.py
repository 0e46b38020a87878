"""Real parts for integration tests and benchmarks: Redis, Celery worker processes, the
simulator, and an environment that points them all at each other."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import redis

ROOT = Path(__file__).resolve().parent.parent
# Redis-level unit tests (budget guard, limiter) use their own db (no workers), flushed per test.
SCRATCH_REDIS_URL = os.environ.get("GENESIS_TEST_SCRATCH_REDIS_URL", "redis://127.0.0.1:6379/12")
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
    "--save", "", "--appendonly", "no",
]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(url: str = "redis://127.0.0.1:6379/0") -> None:
    """Start a local redis-server when nothing answers (CI machines start one already)."""
    if redis_answers(url):
        return
    if not shutil.which("redis-server"):
        raise RuntimeError("Redis is not answering and redis-server is not installed")
    subprocess.run(REDIS_START, check=True)
    wait_for(lambda: redis_answers(url), timeout=10, what="redis-server to start")


def reset_postgres(url: str) -> None:
    """Drop every table of the project (as the models declare them) and Alembic's version, so
    the next migrate builds the schema afresh; only `url`'s database is touched."""
    from sqlalchemy import text
    from sqlmodel import SQLModel

    import shared.models  # noqa: F401  (registers the tables)
    from shared.db import get_engine

    tables = ", ".join(SQLModel.metadata.tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {tables}, alembic_version CASCADE"))


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def modules_loaded_after(code: str, modules: list[str], env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Which of `modules` a fresh interpreter has loaded after running `code` (and what the code
    printed): start-up weight is checked by what is imported, not by timing it."""
    probe = f"import json, sys; print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", f"{code}\n{probe}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    *output, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(output)


def genesis_env(*, database_url: str, redis_url: str, reports_dir: Path, simulator_url: str | None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the producer and workers; dummy keys are fine for the simulator."""
    env = {
        "GENESIS_DATABASE_URL": database_url,
        "GENESIS_REDIS_URL": redis_url,
        "GENESIS_REPORTS_DIR": str(reports_dir),
        "GENESIS_CONFIG": str(ROOT / "config" / "genesis.toml"),
    }
    if simulator_url:
        env.update({
            "OPENAI_API_KEY": "sk-sim", "ANTHROPIC_API_KEY": "sk-ant-sim", "MISTRAL_API_KEY": "sim",
            "OPENAI_BASE_URL": f"{simulator_url}/v1", "ANTHROPIC_BASE_URL": simulator_url,
            "MISTRAL_BASE_URL": simulator_url,
        })
    env.update(extra or {})
    return env


def use_config(monkeypatch, tmp_path: Path, toml_text: str, redis_url: str) -> None:
    """Point this process's settings at a TOML written for one test, with its own SQLite file."""
    from shared.config import get_settings

    config = tmp_path / "genesis.toml"
    config.write_text(toml_text)
    monkeypatch.setenv("GENESIS_CONFIG", str(config))
    monkeypatch.setenv("GENESIS_REDIS_URL", redis_url)
    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/t.db")
    monkeypatch.setenv("GENESIS_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()


def reconnect_app(app, settings) -> None:
    """Re-point the Celery app at `settings` and drop connections made under earlier ones
    (tests and benchmarks reconfigure one process several times)."""
    from worker.app import celery_config

    app.conf.update(celery_config(settings))
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    app.__dict__.pop("control", None)


# How a user starts a worker: the project's `worker` script, or Celery's umbrella CLI.
WORKER_LAUNCHERS = {
    "worker": ["-m", "worker"],
    "celery": ["-m", "celery", "-A", "worker.app", "worker"],
}


class WorkerProcess:
    """A worker in its own process, as a user would start it (`worker`, or with
    launcher="celery", `celery -A worker.app worker`)."""

    def __init__(self, env: dict[str, str], *, name: str = "w1", concurrency: int = 8, pool: str = "threads",
                 queues: str | None = None, log_path: Path | None = None, host: str = "genesis-test",
                 prefix: list[str] | None = None, launcher: str = "worker") -> None:
        self.name = name
        self.hostname = f"{name}@{host}"
        self.log_path = log_path
        args = [*(prefix or []), sys.executable, *WORKER_LAUNCHERS[launcher], "-n", self.hostname,
                "-P", pool, "-c", str(concurrency), "-l", "INFO", "--without-gossip", "--without-mingle"]
        if queues:
            args += ["-Q", queues]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, app, timeout: float = 30) -> "WorkerProcess":
        def pinged() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; log: {self.log_path}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5) or []
            return any(self.hostname in reply for reply in replies)

        wait_for(pinged, timeout=timeout, interval=0.2, what=f"worker {self.name} to answer ping")
        return self

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a host disappears."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# --- headless Chromium: open a page as a reader would ------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]
# Appended to a copy of the page: measures every chart and records script errors in the DOM,
# where --dump-dom shows them (the report itself has no script).
_PROBE = """<pre id="probe"></pre><script>
(function () {
  var charts = Array.prototype.map.call(document.querySelectorAll("svg.chart"), function (svg) {
    var box = svg.getBoundingClientRect();
    return {name: svg.getAttribute("data-chart"), width: box.width, height: box.height,
            marks: svg.querySelectorAll("rect, circle, line").length};
  });
  document.getElementById("probe").textContent = JSON.stringify({charts: charts});
})();
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


def console_errors(log: str) -> list[str]:
    """Chromium's stderr lines for console messages, script errors and failed loads."""
    markers = ("CONSOLE", "Uncaught", "Failed to load resource", "net::ERR_")
    return [line for line in log.splitlines() if any(m in line for m in markers)]


def open_in_chromium(page: Path, workdir: Path) -> dict:
    """Opens `page` in headless Chromium twice (a fresh profile each time): once with a probe
    for chart sizes (--dump-dom), once for a screenshot. Returns charts, console lines, PNG path."""
    import json as _json
    import re as _re

    workdir.mkdir(parents=True, exist_ok=True)
    probed = workdir / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dumped = _run_chromium(["--dump-dom", probed.as_uri()], workdir / "profile-dom")
    found = _re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, _re.S)
    probe = _json.loads(html_unescape(found.group(1))) if found and found.group(1) else None
    screenshot = workdir / "report.png"
    shot = _run_chromium([f"--screenshot={screenshot}", "--window-size=1280,1800", "--hide-scrollbars",
                          page.as_uri()], workdir / "profile-shot")
    return {"probe": probe, "dom_log": dumped.stderr, "errors": console_errors(dumped.stderr + shot.stderr),
            "screenshot": screenshot if screenshot.exists() else None}


def html_unescape(text: str) -> str:
    import html as _html

    return _html.unescape(text)


def png_varied_rows(path: Path) -> tuple[int, int, float]:
    """(width, height, share of rows that are not one flat colour) of an 8-bit RGB(A) PNG,
    read by hand (zlib only). A flat row stays constant per channel under every PNG scanline
    filter (None keeps the colour, Sub/Up/Average/Paeth leave zeros past the first pixel), so
    a row whose filtered bytes vary per channel holds something drawn: text, a line, a bar."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + length])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), f"unsupported PNG (depth {depth}, colour type {colour})"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    varied = 0
    for row in range(1, height):  # row 0 varies under the Average filter even when flat
        line = raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)]
        varied += any(len(set(line[channels + c::channels])) > 1 for c in range(channels))
    return width, height, varied / (height - 1)


def alembic_cli(args: list[str], database_url: str, *, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The `alembic` console script of this venv, run from `cwd` against `database_url`."""
    alembic = Path(sys.executable).parent / "alembic"
    return subprocess.run([str(alembic), *args], cwd=cwd, env={**os.environ, "GENESIS_DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=120)


def producer(*args: str):
    """The `producer` CLI in this process, as a user would run it (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from producer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def submit(*args: str) -> str:
    """`producer submit ARGS --json`, which must succeed; returns the run id."""
    import json

    result = producer("submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def wait_until_reported(run_id: str, timeout: float = 120) -> dict:
    """Poll `status` until the run is final and its report is written."""
    from shared.progress import run_snapshot

    def reported():
        snap = run_snapshot(run_id)
        return snap if snap["status"] in ("completed", "halted", "cancelled") and snap["report"] else None

    return wait_for(reported, timeout=timeout, interval=0.3, what=f"run {run_id} to be reported")


class TcpForwarder:
    """Listens on (host, port) and relays each connection to `target`: a service that listens
    on loopback only (PostgreSQL) becomes reachable on a veth address, and only there."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()
        self._thread.join(2)


class NetnsLab:
    """Hosts as network namespaces on one bridge: the test's own namespace (the producer's
    and the services' host) at `gateway`, each worker host at its own address. Needs root."""

    def __init__(self, prefix: str, subnet: str, hosts: list[str]) -> None:
        self.prefix, self.subnet = prefix, subnet  # e.g. "gbi12", "10.212.0"
        self.bridge = f"{prefix}br"
        self.gateway = f"{subnet}.1"
        self.hosts = {name: f"{subnet}.{10 + i}" for i, name in enumerate(hosts, start=1)}

    def namespace(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def up(self) -> "NetnsLab":
        self.down()  # leftovers of an interrupted run
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for host, address in self.hosts.items():
            ns, outside, inside = self.namespace(host), f"{self.prefix}{host}a", f"{self.prefix}{host}b"
            self._ip("netns", "add", ns)
            self._ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._ip("link", "set", inside, "netns", ns)
            self._ip("link", "set", outside, "master", self.bridge, "up")
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            self._ip("-n", ns, "link", "set", inside, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespace(host)], capture_output=True)
            subprocess.run(["ip", "link", "del", f"{self.prefix}{host}a"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def exec_prefix(self, host: str, hidden: list[Path] = ()) -> list[str]:
        """Run a command on `host`; each `hidden` folder is covered by an empty tmpfs there
        (a file only the producer's host has)."""
        prefix = ["ip", "netns", "exec", self.namespace(host)]
        if not hidden:
            return prefix
        mounts = " && ".join(f"mount -t tmpfs tmpfs {path}" for path in hidden)
        return [*prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh"]

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class ConnectionSampler:
    """Samples pg_stat_activity of one database every 0.2 s: the most connections seen per
    application_name (each worker names its connections after its node)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.database = make_url(url).database
        self.engine = create_engine(url, pool_size=1, max_overflow=0)
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sqlalchemy import text

        query = text("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = :db "
                     "GROUP BY application_name")
        while not self._stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"db": self.database}).all()
            workers = {name: n for name, n in rows if name.startswith("genesis-worker")}
            for name, n in workers.items():
                self.peak[name] = max(self.peak.get(name, 0), n)
            self.peak_total = max(self.peak_total, sum(workers.values()))
            time.sleep(0.2)

    def __enter__(self) -> "ConnectionSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()


# --- faults, for the recovery tests and bench/recovery.py ----------------------------------------

# Recovery timings in seconds rather than minutes (heartbeats, sweeps, leases, call deadline).
FAST_RECOVERY = {
    "GENESIS_RECOVERY__HEARTBEAT_INTERVAL_S": "0.5",
    "GENESIS_RECOVERY__HEARTBEAT_TTL_S": "2",
    "GENESIS_RECOVERY__SWEEP_INTERVAL_S": "1",
    "GENESIS_RECOVERY__LEASE_S": "20",
    "GENESIS_RECOVERY__CLAIM_RETRY_MAX_S": "2",
    "GENESIS_RETRY__CALL_TIMEOUT_S": "10",
}


def _postgres_admin(url: str):
    """A connection to the server's `postgres` database (ALTER DATABASE cannot target the
    database it runs in); only `url`'s own database is ever touched."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def postgres_outage(url: str, seconds: float) -> None:
    """The database of `url` refuses new connections and drops its open ones for `seconds`,
    then answers again (always, even if this is interrupted)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    engine = _postgres_admin(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})
            time.sleep(seconds)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        engine.dispose()


def running_on(run_id: str, hostname: str) -> set[int]:
    """Jobs SQL says `hostname` is running now."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job, JobStatus

    with session_scope() as session:
        return set(session.exec(select(Job.id).where(
            Job.run_id == run_id, Job.status == JobStatus.running, Job.worker == hostname)).all())


def ledger_figures(run_id: str) -> dict:
    """What the ledger holds for a run, and which jobs were called more than once."""
    from sqlalchemy import func
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry, Job

    with session_scope() as session:
        rows = session.exec(select(CostEntry.job_id, CostEntry.source).where(CostEntry.run_id == run_id)).all()
        entries = [job_id for job_id, _ in rows]
        repeated = set(session.exec(select(Job.id).where(Job.run_id == run_id, Job.attempts > 1)).all())
        jobs = session.exec(select(func.count()).select_from(Job).where(Job.run_id == run_id)).one()
    return {"entries": len(entries), "job_entries": len({e for e in entries if e is not None}),
            "unattached": sum(1 for e in entries if e is None), "jobs": jobs, "repeated": repeated,
            "unknown": sum(1 for _, source in rows if source.startswith("outcome unknown"))}


def served_ok(simulator) -> int:
    by_status = simulator.stats()["by_status"]
    return int(by_status.get("200", 0))


def paid_call_figures(run_id: str, simulator, app=None) -> dict:
    """One row of the paid-call fault table: paid calls the simulator served (200s), ledger
    entries, jobs paid more than once for one operation (the ledger names the job of an
    unattached entry in its source), and call helper threads still alive on the workers."""
    import re
    from collections import Counter

    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        rows = session.exec(select(CostEntry.job_id, CostEntry.operation, CostEntry.source)
                            .where(CostEntry.run_id == run_id)).all()
    payments: Counter = Counter()
    for job_id, operation, source in rows:
        named = re.search(r"job (\d+)\)$", source or "")
        payments[(job_id or (int(named.group(1)) if named else None), operation)] += 1
    threads = {"callers": 0, "late": 0}
    if app is not None:
        for reply in app.control.broadcast("genesis_call_threads", reply=True, timeout=1.0) or []:
            for counts in reply.values():
                for name in threads:
                    threads[name] += counts.get(name, 0)
    return {"served": served_ok(simulator), "entries": len(rows),
            "unknown": sum(1 for *_, source in rows if (source or "").startswith("outcome unknown")),
            "paid_twice": len({job for (job, _), n in payments.items() if n > 1}),
            "threads_late": threads["late"], "threads": threads["callers"]}


def print_fault_row(fault: str, figures: dict) -> None:
    """The row `pytest -s tests/test_paid_calls.py` prints for the fault table."""
    print(f"\n| {fault} | {figures['served']} | {figures['entries']} ({figures['unknown']} outcome unknown) | "
          f"{figures['paid_twice']} | {figures['threads_late']} late, {figures['threads']} serving |")
