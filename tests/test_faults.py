"""Runs finish by themselves (design §10): with real `celery worker` processes, real Redis and
the real SDKs against the simulator, a fault is injected mid-run and nothing else is done. The
run must complete, with one ledger entry per job, paying again only for calls in flight on a
dead worker. Recovery timings are shortened to seconds (tests.harness.FAST_RECOVERY)."""

from __future__ import annotations

import json

import pytest
import redis

from tests.harness import (
    ledger_figures, postgres_outage, producer, running_on, served_ok, wait_for, wait_until_reported,
)

pytestmark = pytest.mark.integration

AGENTS = ("--agent", "qa", "--agent", "legal", "--agent", "content")


def submit(limit: int, backend: str = "openai") -> str:
    result = producer("submit", *AGENTS, "--backend", backend, "--limit", str(limit), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def ok_jobs(run_id: str) -> int:
    from shared.progress import run_snapshot

    return run_snapshot(run_id)["by_status"]["ok"]


def test_sigkill_of_a_worker_mid_run_completes_paying_again_only_for_its_calls_in_flight(
        fast_recovery, start_worker, simulator):
    simulator.update(latency_ms=300)
    doomed = start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)
    run_id = submit(limit=20)  # 60 jobs
    wait_for(lambda: ok_jobs(run_id) >= 10 and running_on(run_id, doomed.hostname), timeout=60,
             what="the run under way on both workers")

    doomed.kill()  # its whole process group, SIGKILL; nothing else is done
    in_flight = running_on(run_id, doomed.hostname)
    assert in_flight

    snap = wait_until_reported(run_id, timeout=90)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 60
    ledger = ledger_figures(run_id)
    assert ledger["job_entries"] == 60  # one entry per job
    # the dead worker's calls in flight, ledgered at their worst case (the provider may have billed them)
    assert ledger["unattached"] == ledger["unknown"] <= len(in_flight)
    assert ledger["repeated"] <= in_flight  # only the dead worker's calls in flight ran twice
    assert served_ok(simulator) - 60 <= ledger["unknown"]  # every call the provider billed is in the ledger


def test_flushdb_mid_run_completes_without_paying_twice(fast_recovery, start_worker, simulator, redis_url):
    simulator.update(latency_ms=200)
    start_worker("w1", concurrency=4)
    run_id = submit(limit=12)  # 36 jobs
    wait_for(lambda: ok_jobs(run_id) >= 6, timeout=60, what="a few jobs to finish")

    redis.Redis.from_url(redis_url).flushdb()  # queues, chord state, budget counters, heartbeats: gone
    snap = wait_until_reported(run_id, timeout=90)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 36
    ledger = ledger_figures(run_id)
    assert ledger["entries"] == ledger["job_entries"] == 36
    assert served_ok(simulator) == 36 and not ledger["repeated"]  # no worker died: nothing ran twice
    budget = json.loads(producer("budget", "--json").stdout)
    assert budget["spent_usd"] <= budget["limit_usd"] * 0.83


def test_sigterm_lets_calls_in_flight_finish_and_leaves_the_rest_to_another_worker(start_worker, simulator):
    simulator.update(latency_ms=600)
    first = start_worker("w1", concurrency=4)
    run_id = submit(limit=10)  # 30 jobs
    wait_for(lambda: ok_jobs(run_id) >= 4 and running_on(run_id, first.hostname), timeout=60,
             what="calls in flight on w1")

    in_flight = running_on(run_id, first.hostname)
    first.stop()  # SIGTERM: warm shutdown
    assert first.proc.returncode == 0

    from shared.progress import run_snapshot

    after_stop = run_snapshot(run_id)["by_status"]
    assert after_stop["running"] == 0 and after_stop["error"] == 0 and after_stop["queued"] > 0
    with_ok = {job for job in in_flight if job_status(job) == "ok"}
    assert with_ok == in_flight  # every call in flight at SIGTERM finished and was recorded

    start_worker("w2", concurrency=4)
    snap = wait_until_reported(run_id, timeout=90)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 30
    assert served_ok(simulator) == 30 and ledger_figures(run_id)["entries"] == 30


def job_status(job_id: int) -> str:
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return session.get(Job, job_id).status


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_refusing_connections_mid_run_loses_no_paid_answer(fast_recovery, start_worker, simulator,
                                                                     database_url, redis_url):
    from shared.journal import JOURNAL_KEY

    simulator.update(latency_ms=300)
    start_worker("w1", concurrency=4)
    start_worker("w2", concurrency=4)
    run_id = submit(limit=20)  # 60 jobs
    wait_for(lambda: ok_jobs(run_id) >= 8, timeout=60, what="the run under way")

    postgres_outage(database_url, 6.0)  # workers keep calling (and paying) meanwhile

    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 60
    ledger = ledger_figures(run_id)
    assert ledger["entries"] == served_ok(simulator)  # every call the provider billed is in the ledger
    assert ledger["job_entries"] == 60
    assert redis.Redis.from_url(redis_url).hlen(JOURNAL_KEY) == 0


def test_watching_a_run_whose_only_worker_died_says_what_is_recovered_and_gives_up(
        fast_recovery, monkeypatch, start_worker, simulator):
    from shared.config import get_settings

    simulator.update(latency_ms=3000)
    doomed = start_worker("w1", concurrency=2)
    run_id = submit(limit=2)  # 6 jobs, far slower than the watch
    wait_for(lambda: running_on(run_id, doomed.hostname), timeout=30, what="calls in flight on w1")
    doomed.kill()
    monkeypatch.setenv("GENESIS_RECOVERY__STALL_AFTER_S", "1")
    monkeypatch.setenv("GENESIS_RECOVERY__GIVE_UP_AFTER_S", "6")
    get_settings.cache_clear()

    watched = producer("status", run_id, "--watch")
    assert watched.exit_code == 1
    said = " ".join(watched.output.split())
    assert "stalled: no job finished for" in said
    assert f"of {doomed.hostname} (no heartbeat) handed back once a worker runs the sweep" in said
    assert "no worker is alive" in said and "gave up waiting" in said


def test_queued_jobs_whose_messages_were_lost_one_by_one_still_run(fast_recovery, start_worker, simulator,
                                                                   redis_url):
    from shared.fleet import RUN_PREFIX

    run_id = submit(limit=3)  # 9 jobs, no worker yet
    client = redis.Redis.from_url(redis_url)
    assert client.llen("openai") == 9
    client.delete("openai")  # their messages are gone, but Redis did not lose everything: the marker stays
    assert client.exists(RUN_PREFIX + run_id)

    start_worker("w1", concurrency=4)
    snap = wait_until_reported(run_id, timeout=60)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 9
    assert served_ok(simulator) == 9 and ledger_figures(run_id)["entries"] == 9
