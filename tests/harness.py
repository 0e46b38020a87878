"""Real parts for integration tests and benchmarks: Redis, Celery worker processes, the
simulator, and an environment that points them all at each other."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import redis

ROOT = Path(__file__).resolve().parent.parent
# Redis-level unit tests (budget guard, limiter) use their own db (no workers), flushed per test.
SCRATCH_REDIS_URL = os.environ.get("GENESIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
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


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


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


class WorkerProcess:
    """`celery -A worker.app worker` in its own process, as a user would start it."""

    def __init__(self, env: dict[str, str], *, name: str = "w1", concurrency: int = 8, pool: str = "threads",
                 queues: str | None = None, log_path: Path | None = None) -> None:
        self.name = name
        self.hostname = f"{name}@genesis-test"
        self.log_path = log_path
        args = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-n", self.hostname,
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


def producer(*args: str):
    """The `producer` CLI in this process, as a user would run it (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from producer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def wait_until_reported(run_id: str, timeout: float = 120) -> dict:
    from producer.cli import run_snapshot

    def reported():
        snap = run_snapshot(run_id)
        return snap if snap["status"] in ("completed", "halted", "cancelled") and snap["report"] else None

    return wait_for(reported, timeout=timeout, interval=0.3, what=f"run {run_id} to be reported")
