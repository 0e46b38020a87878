"""Rate limits, retries and faults end to end: real Redis, real `celery worker` processes, the
real SDKs against the simulator. What the simulator saw (recorded server side, with arrival
times) is compared with what SQL and the report say."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from sqlmodel import select

import simulator.server as sim_server
from tests.support.runs import run_jobs, submit, wait_until_reported
from tests.support.waiting import wait_for


class Arrivals:
    """Every chat request the simulator answered, as (arrival time, HTTP status).

    Wraps the in-process simulator's `chat`, so times are taken where the provider would see
    them: at admission, before the simulated latency."""

    def __init__(self, handle) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[float, int]] = []
        sim = handle.server.simulator
        original = sim.chat

        def chat(api, headers, raw_body):
            arrived = time.monotonic()
            reply = original(api, headers, raw_body)
            with self._lock:
                self.events.append((arrived, reply.status))
            return reply

        sim.chat = chat

    def times(self, status: int | None = None) -> list[float]:
        with self._lock:
            return sorted(t for t, s in self.events if status is None or s == status)


def report_json(snap: dict) -> dict:
    return json.loads((Path(snap["report"]).parent / "report.json").read_text())


def max_excess(times: list[float], burst: int, per_s: float) -> float:
    """The largest (requests in [t_i, t_j]) − (burst + rate × (t_j − t_i)) over all windows."""
    return max(
        (j - i + 1) - (burst + per_s * (times[j] - times[i]))
        for i in range(len(times))
        for j in range(i, len(times))
    )


# Providers state their limits on every answer, their 429s included: a limit too high to be
# reached here keeps injected 429s from looking like a silent endpoint's (paced by AIMD).
STATED_RPM = 100_000


def test_limit_holds_across_two_worker_processes(monkeypatch, start_worker, simulator):
    rpm = 60
    monkeypatch.setenv("GENESIS_LIMITS__OPENAI__RPM", str(rpm))
    simulator.update(rpm=rpm)  # the provider enforces the same limit: any excess shows as 429s
    arrivals = Arrivals(simulator)
    start_worker("w1", concurrency=8)
    start_worker("w2", concurrency=8)

    run_id = submit("--all-agents", "--backend", "openai", "--limit", "15")  # 75 jobs: 60 at once, then 1/s
    snap = wait_until_reported(run_id, timeout=60)

    assert snap["by_status"]["ok"] == 75
    calls = arrivals.times()
    # GCRA: at most burst + rate × window in any window (1 of slack for network jitter)
    assert max_excess(calls, burst=rpm, per_s=rpm / 60) <= 1.0
    assert calls[-1] - calls[0] >= 75 - rpm - 2  # the 15 beyond the burst were paced, not sent at once
    assert len(arrivals.times(429)) <= 2
    assert {j.worker.split("@")[0] for j in run_jobs(run_id)} == {"w1", "w2"}  # both shared the one limit


def test_two_workers_pace_by_the_limit_the_provider_states_not_the_configured_ceiling(start_worker, simulator,
                                                                                        redis_url):
    """The shipped ceiling (openai rpm = 500) is far above what this key gets (60): learned from
    the simulator's OpenAI headers, shared through Redis, both workers keep to 60."""
    import redis

    rpm = 60
    simulator.update(rpm=rpm)
    arrivals = Arrivals(simulator)
    start_worker("w1", concurrency=8)
    start_worker("w2", concurrency=8)

    run_id = submit("--all-agents", "--backend", "openai", "--limit", "15")  # 75 jobs
    snap = wait_until_reported(run_id, timeout=90)

    assert snap["by_status"]["ok"] == 75
    calls = arrivals.times()
    assert max_excess(calls, burst=rpm, per_s=rpm / 60) <= 2.0  # the first answer's headers set the pace
    assert len(arrivals.times(429)) <= 2
    learned = redis.Redis.from_url(redis_url).hgetall("genesis:rl:{openai:gpt-5-mini#OPENAI_API_KEY}:learned")
    assert (learned[b"rpm"], learned[b"rpm_src"]) == (b"60", b"x-ratelimit-limit-requests")
    assert {j.worker.split("@")[0] for j in run_jobs(run_id)} == {"w1", "w2"}


def test_anthropic_and_mistral_limits_are_learned_from_their_own_headers(start_worker, simulator, redis_url):
    import redis

    simulator.update(rpm=120, tpm=900_000, itpm=400_000, otpm=80_000)
    start_worker("w1", concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "anthropic", "--backend", "mistral-base", "--limit", "2")
    wait_until_reported(run_id, timeout=60)

    client = redis.Redis.from_url(redis_url)
    learned = {(j.provider, j.model): client.hgetall(f"genesis:rl:{{{j.provider}:{j.model}#{j.key_env}}}:learned")
               for j in run_jobs(run_id)}
    assert {p for p, _ in learned} == {"anthropic", "mistral"}
    for (provider, _), fields in learned.items():
        if provider == "anthropic":
            assert (fields[b"rpm"], fields[b"rpm_src"]) == (b"120", b"anthropic-ratelimit-requests-limit")
            assert (fields[b"in_tpm"], fields[b"out_tpm"]) == (b"400000", b"80000")
            assert fields[b"tpm"] == b"900000" and fields[b"tpm_src"] == b"anthropic-ratelimit-tokens-limit"
        else:
            assert (fields[b"rpm"], fields[b"rpm_src"]) == (b"120", b"x-ratelimit-limit-req-minute")
            assert (fields[b"tpm"], fields[b"tpm_src"]) == (b"900000", b"x-ratelimit-limit-tokens-minute")


def test_a_429_with_retry_after_delays_the_retry(monkeypatch, start_worker, simulator, redis_url):
    import redis

    monkeypatch.setattr(sim_server, "INJECTED_429_RETRY_AFTER", "2")
    simulator.update(error_rates={429: 1.0}, rpm=STATED_RPM)
    arrivals = Arrivals(simulator)
    start_worker("w1", concurrency=4)

    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    wait_for(lambda: arrivals.times(429), timeout=20, interval=0.02, what="the first 429")
    simulator.update(error_rates={})
    # the 429 set a shared blocked-until for the bucket, seen by every worker
    client = redis.Redis.from_url(redis_url)
    key = "genesis:rl:{openai:gpt-5-mini#OPENAI_API_KEY}"  # the pool: the key's variable

    def blocked_for_s() -> float:
        blocked = float(client.hget(key, "blocked") or 0)
        seconds, micros = client.time()
        return (blocked - (seconds * 1000 + micros / 1000)) / 1000

    assert wait_for(lambda: blocked_for_s() > 1.0, timeout=1.0, interval=0.02, what="blocked-until in Redis")

    snap = wait_until_reported(run_id, timeout=30)
    (job,) = run_jobs(run_id)
    assert job.status == "ok" and job.attempts == 1  # the 429 spent no attempt
    (refused,), (served,) = arrivals.times(429), arrivals.times(200)
    assert served - refused >= 2.0
    assert snap["status"] == "completed"


def test_a_401_fails_at_once_with_a_clear_message(start_worker, simulator):
    simulator.update(error_rates={401: 1.0})
    start_worker("w1", concurrency=4)

    run_id = submit("--agent", "qa", "--backend", "openai", "--backend", "anthropic", "--limit", "2")
    snap = wait_until_reported(run_id, timeout=30)

    jobs = run_jobs(run_id)
    assert len(jobs) == 4
    for job in jobs:
        assert job.status == "error" and job.attempts == 1
        assert "auth 401" in job.error_message and job.error_type == "AuthenticationError"
    # never retried; a job that finds its backend's only key refused in this run makes no call
    assert 2 <= simulator.stats()["requests_total"] <= 4
    assert snap["status"] == "completed"
    assert sum(b["errors"] for b in report_json(snap)["backends"]) == 4


def test_a_job_out_of_attempts_is_stored_as_error_with_its_last_error(monkeypatch, start_worker, simulator):
    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.2")
    simulator.update(error_rates={500: 1.0})
    start_worker("w1", concurrency=4)

    run_id = submit("--agent", "qa", "--backend", "openai", "--backend", "mistral-base", "--limit", "2")
    snap = wait_until_reported(run_id, timeout=30)

    jobs = run_jobs(run_id)
    assert len(jobs) == 4
    for job in jobs:
        assert job.status == "error" and job.attempts == 2
        assert job.error_message.startswith("after 2 attempt(s): server 500") and job.finished_at
    assert simulator.stats()["by_status"] == {"500": 8}
    report = report_json(snap)
    assert snap["status"] == "completed" and sum(b["errors"] for b in report["backends"]) == 4


def test_under_injected_429s_and_5xx_every_job_ends_ok_and_no_answer_is_paid_twice(
    monkeypatch, start_worker, simulator
):
    from shared.db import session_scope
    from shared.models import CostEntry

    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "10")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.2")
    simulator.update(error_rates={429: 0.15, 500: 0.10, 503: 0.05}, rpm=STATED_RPM)
    start_worker("w1", concurrency=8)
    start_worker("w2", concurrency=8)

    run_id = submit("--all-agents", "--limit", "3")  # 5 agents × 3 tasks × 4 backends
    snap = wait_until_reported(run_id, timeout=60)

    jobs = run_jobs(run_id)
    stats = simulator.stats()
    with session_scope() as session:
        entries = session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all()
    assert len(jobs) == 60 and all(j.status == "ok" for j in jobs)
    assert stats["by_status"]["200"] == stats["completions_ok"] == len(entries) == 60
    assert all(stats["by_status"].get(s, 0) > 0 for s in ("429", "500", "503"))  # faults did happen
    # every call was a counted attempt, except the 429s (back-pressure, not a failure)
    assert sum(j.attempts for j in jobs) == stats["requests_total"] - stats["by_status"]["429"]
    assert report_json(snap)["complete"] is True


def test_429s_and_529s_spend_no_attempt_while_5xx_still_do(monkeypatch, start_worker, simulator):
    """With 2 attempts and most calls refused, a 429 or 529 counted as a failure would end about
    half of these jobs `error`; as back-pressure, every job ends ok."""
    monkeypatch.setattr(sim_server, "INJECTED_429_RETRY_AFTER", "0")
    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.1")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_MAX_S", "0.5")  # a job refused many times backs off this much at most
    simulator.update(error_rates={429: 0.4, 529: 0.3}, rpm=STATED_RPM)
    start_worker("w1", concurrency=8)

    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--backend", "anthropic",
                    "--limit", "3")
    wait_until_reported(run_id, timeout=60)

    jobs = run_jobs(run_id)
    by_status = simulator.stats()["by_status"]
    assert by_status.get("429", 0) > 0 and by_status.get("529", 0) > 0  # refusals did happen
    assert [j.status for j in jobs] == ["ok"] * 12
    assert all(j.attempts == 1 for j in jobs)  # the one call that answered

    simulator.update(error_rates={500: 1.0})  # a real failure still spends its attempts
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "1")
    wait_until_reported(run_id, timeout=30)
    (job,) = run_jobs(run_id)
    assert job.status == "error" and job.attempts == 2 and job.error_message.startswith("after 2 attempt(s)")


def test_a_job_refused_past_rate_limited_max_s_ends_error_with_the_providers_reason(
    monkeypatch, start_worker, simulator, redis_url
):
    import redis

    monkeypatch.setattr(sim_server, "INJECTED_429_RETRY_AFTER", "0")
    monkeypatch.setenv("GENESIS_RETRY__RATE_LIMITED_MAX_S", "1.5")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.1")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_MAX_S", "0.3")
    simulator.update(error_rates={429: 1.0})
    start_worker("w1", concurrency=4)

    run_id = submit("--agent", "qa", "--backend", "anthropic", "--limit", "1")
    snap = wait_until_reported(run_id, timeout=30)

    (job,) = run_jobs(run_id)
    refusals = simulator.stats()["by_status"]["429"]
    assert job.status == "error" and job.attempts == 1 and refusals > 5 > job.attempts  # spent no attempts
    stated = re.match(r"rate limited for (\d+) s \((\d+) refusal\(s\)\), past \[retry\] rate_limited_max_s: "
                      r"rate_limit 429: ", job.error_message)
    assert stated and int(stated[1]) >= 2 and int(stated[2]) == refusals
    assert "Injected 429 error from the simulator." in job.error_message  # the provider's own reason
    assert job.error_type == "RateLimitError"
    assert snap["status"] == "completed"
    assert not redis.Redis.from_url(redis_url).exists(f"genesis:backpressure:{job.id}")  # a resume starts afresh


def test_timeouts_and_malformed_answers_are_retried(monkeypatch, start_worker, simulator):
    monkeypatch.setenv("GENESIS_RETRY__MAX_ATTEMPTS", "10")
    monkeypatch.setenv("GENESIS_RETRY__BACKOFF_BASE_S", "0.2")
    monkeypatch.setenv("GENESIS_RETRY__CALL_TIMEOUT_S", "0.5")
    simulator.update(timeout_rate=0.2, timeout_s=1.5, malformed_rate=0.1)
    start_worker("w1", concurrency=8)

    run_id = submit("--agent", "qa", "--agent", "legal", "--backend", "openai", "--backend", "mistral-base",
                    "--limit", "5")
    wait_until_reported(run_id, timeout=45)
    # a held-back answer is counted when the simulator gives up holding it, after the client did
    stats = wait_for(lambda: (s := simulator.stats())["in_flight"] == 0 and s, timeout=5, what="held answers")

    jobs = run_jobs(run_id)
    assert len(jobs) == 20 and all(j.status == "ok" for j in jobs)
    assert stats["faults"].get("timeout", 0) > 0 and stats["faults"].get("malformed", 0) > 0
    from shared.db import session_scope
    from shared.models import CostEntry

    def late_answers():
        """An answer that came after the 0.5 s deadline (a loaded machine) was billed: ledgered too."""
        with session_scope() as session:
            entries = session.exec(select(CostEntry).where(CostEntry.run_id == run_id)).all()
        late = [e for e in entries if e.job_id is None and "answered after its deadline" in e.source]
        unreadable = [e for e in entries if e.job_id is None and "no usable reply, malformed" in e.source]
        return (sum(e.job_id is not None for e in entries) == 20
                and stats["completions_ok"] == 20 + len(late) + len(unreadable))

    wait_for(late_answers, timeout=10, what="one ledger entry per billed answer")
    assert sum(j.attempts for j in jobs) == stats["requests_total"]
