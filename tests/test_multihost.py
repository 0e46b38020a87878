"""Workers on separate hosts: network namespaces on a bridge, made by the test (root). Redis,
PostgreSQL and the simulator are reachable only on the bridge address; each worker host has
its own network and its own reports folder; the producer is the test's own host."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlmodel import select

from tests.support.env import genesis_env
from tests.support.forwarder import TcpForwarder
from tests.support.netns import NetnsLab
from tests.support.redis_server import redis_answers
from tests.support.resources import uses
from tests.support.runs import producer, wait_until_reported
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

HOSTS = ["h1", "h2"]
POSTGRES_PORT = 15412
# A new Redis port per test: connections this process pooled to the previous test's server stay unused.
redis_ports = itertools.count(16412)


@pytest.fixture
@uses("netns", "processes")
def lab():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    lab = NetnsLab("gbi12", "10.212.0", HOSTS)
    try:
        lab.up()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        lab.down()
        pytest.skip(f"cannot create network namespaces here: {getattr(exc, 'stderr', exc)}")
    yield lab
    lab.down()


@pytest.fixture
@uses("redis", "postgres", "simulator", "workers")
def fleet(lab, monkeypatch, tmp_path):
    """Services on the bridge address only; the producer (this process) pointed at them."""
    from sqlalchemy.engine import make_url

    from shared.config import get_settings
    from shared.db import migrate
    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator
    from tests.support.env import POSTGRES_URL
    from tests.support.postgres import reset_postgres
    from worker.app import app

    redis_port = next(redis_ports)
    with ExitStack() as cleanup:
        # A private redis-server on the bridge (no password: the bridge is the test's own).
        redis_proc = subprocess.Popen(
            ["redis-server", "--bind", lab.gateway, "--port", str(redis_port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
        )
        cleanup.callback(lambda: (redis_proc.terminate(), redis_proc.wait(10)))
        redis_url = f"redis://{lab.gateway}:{redis_port}/0"
        wait_for(lambda: redis_answers(redis_url), timeout=10, what="the fleet's redis-server")
        reset_postgres(POSTGRES_URL)
        pg = make_url(POSTGRES_URL)
        forwarder = TcpForwarder((lab.gateway, POSTGRES_PORT), (pg.host or "127.0.0.1", pg.port or 5432))
        cleanup.callback(forwarder.stop)
        database_url = pg.set(host=lab.gateway, port=POSTGRES_PORT).render_as_string(hide_password=False)
        simulator = start_simulator(SimulatorConfig(latency_ms=20, seed=7), host=lab.gateway)
        cleanup.callback(simulator.stop)

        env = genesis_env(database_url=database_url, redis_url=redis_url,
                          reports_dir=tmp_path / "producer" / "reports", simulator_url=simulator.url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        cleanup.callback(get_settings.cache_clear)
        migrate(database_url)
        from shared.messaging import reconnect

        reconnect(get_settings())

        def start(host: str, hidden: list[Path] = ()) -> WorkerProcess:
            host_env = {**env, "GENESIS_REPORTS_DIR": str(tmp_path / host / "reports"),
                        "GENESIS_RECOVERY__JOURNAL_DIR": str(tmp_path / host / "journal")}
            worker = WorkerProcess(host_env, name="worker", host=lab.namespace(host), concurrency=4,
                                   log_path=tmp_path / f"{host}.log", prefix=lab.exec_prefix(host, hidden))
            cleanup.callback(worker.stop)
            return worker.wait_ready(app)

        yield {"start": start, "env": env, "simulator": simulator, "tmp": tmp_path, "redis_port": redis_port}


def test_services_are_reachable_from_a_worker_host_only_over_the_bridge(lab, fleet):
    probe = ("import socket,sys\n"
             "def ok(h,p):\n"
             "    try: socket.create_connection((h,p),timeout=2).close(); return True\n"
             "    except OSError: return False\n"
             f"print(ok('{lab.gateway}',{fleet['redis_port']}), ok('{lab.gateway}',{POSTGRES_PORT}), ok('127.0.0.1',6379), ok('127.0.0.1',5432))")
    out = subprocess.run([*lab.exec_prefix("h1"), sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "True", "False", "False"], out.stderr


def test_a_run_completes_with_jobs_done_on_every_host(lab, fleet, capsys):
    from shared.db import session_scope
    from shared.models import Job, Run

    for host in HOSTS:
        fleet["start"](host)
    submitted = producer("submit", "--all-agents", "--limit", "2", "--json")
    assert submitted.exit_code == 0, submitted.output
    run_id = json.loads(submitted.stdout)["run_id"]
    snap = wait_until_reported(run_id, timeout=180)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == snap["total"] == 40

    with session_scope() as session:
        jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
        built_at = Path(session.get(Run, run_id).report_path)
    per_host = Counter(job.worker.split("@")[1] for job in jobs)
    assert set(per_host) == {lab.namespace(h) for h in HOSTS}, per_host
    assert fleet["simulator"].stats()["requests_total"] == 40

    # The chord body ran on one worker host and wrote there; the producer rebuilds it from SQL
    # into its own folder, so the user who submitted gets it whichever host built it.
    producer_reports = fleet["tmp"] / "producer" / "reports"
    assert any(built_at.is_relative_to(fleet["tmp"] / h) for h in HOSTS), built_at
    rebuilt = json.loads(producer("report", run_id, "--json").stdout)
    assert Path(rebuilt["md"]).is_relative_to(producer_reports) and Path(rebuilt["md"]).stat().st_size > 0
    with capsys.disabled():
        print(f"\nmulti-host run {run_id}: {len(jobs)} jobs, per host {dict(sorted(per_host.items()))}; "
              f"report built on {built_at.relative_to(fleet['tmp']).parts[0]}, rebuilt at the producer: "
              f"{Path(rebuilt['md']).relative_to(fleet['tmp'])}")


def test_a_suite_path_no_worker_can_read_is_reported_clearly(lab, fleet):
    from shared.suite import SUITES_DIR

    producer_only = fleet["tmp"] / "producer-only"
    suite_dir = producer_only / "my-suite"
    suite_dir.mkdir(parents=True)
    lines = (SUITES_DIR / "genesis-custom" / "qa.jsonl").read_text().splitlines()[:2]
    (suite_dir / "qa.jsonl").write_text("\n".join(lines) + "\n")
    fleet["start"]("h1", hidden=[producer_only])

    result = producer("submit", "--agent", "qa", "--backend", "openai", "--suite", str(suite_dir), "--wait")
    message = " ".join(result.stderr.split())
    assert f"suite folder {suite_dir} is not readable on worker host" in message, result.output
    assert "2 job(s) failed" in message
    assert fleet["simulator"].stats()["requests_total"] == 0  # nothing was paid for
