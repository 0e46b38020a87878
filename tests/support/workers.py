"""Celery workers as a user starts them, each in its own process group, and this process's
Celery app re-pointed at the settings of the moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.env import ROOT
from tests.support.waiting import wait_for

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

    def pool_children(self) -> list[int]:
        """The pids of this worker's pool processes (a prefork worker's children), from /proc."""
        children = []
        for entry in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
            except OSError:  # ended meanwhile
                continue
            if stat and int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:  # field 4: the parent's pid
                children.append(int(entry))
        return sorted(children)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a host disappears."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
