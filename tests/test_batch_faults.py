"""Batch mode under faults (design §11, §12), end to end: real workers, the real SDKs, the
simulator's batch APIs. A dead worker or a flushed Redis resumes polling from SQL; a submission
whose batch id never reached SQL (its submitter died, or the create's reply was lost) is looked
up at its provider and adopted, never sent again blindly, and two deployments sharing one API
key never take each other's batch; a results line that cannot be read ends its job `error`,
ledgered at its worst case; a database outage while results are written journals them."""

from __future__ import annotations

import time

import pytest

from tests.support.env import BATCH_BACKENDS as BACKENDS
from tests.support.env import batch_mode
from tests.support.runs import all_batched, batch_rows, inference_entries, run_ledger, submit, wait_until_reported
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fault", ["kill", "flushdb"])
def test_open_batches_survive_a_dead_worker_or_a_flushed_redis(fault, monkeypatch, batch_knobs, fast_recovery,
                                                              start_worker, simulator, redis_url):
    """Polling resumes from SQL; no batch is submitted twice, no answer paid twice."""
    import redis

    simulator.update(batch_delay_s=4.0)
    batch_mode(monkeypatch, *BACKENDS)
    first = start_worker("w1", concurrency=8)
    if fault == "kill":
        start_worker("w2", concurrency=8)
    run_id = submit("--all-agents", "--limit", "2")
    wait_for(lambda: all_batched(run_id, 40), timeout=30, interval=0.2, what="every batch submitted")
    if fault == "kill":
        first.kill()
    else:
        redis.Redis.from_url(redis_url).flushdb()
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 40

    stats = simulator.stats()["batch"]
    assert stats["requests"] == stats["succeeded"] == 40  # nothing submitted twice
    entries = inference_entries(run_id)
    assert len(entries) == 40 and set(entries.values()) == {1} and None not in entries
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    spent = BudgetGuard.from_settings(get_settings()).status()["spent_usd"]
    assert spent == pytest.approx(run_ledger(run_id)[1], abs=1e-5)  # the counters agree with the ledger
    assert all(b.polls > 0 and b.state == "ended" for b in batch_rows(run_id))


def test_a_submitter_killed_before_it_learns_its_batch_ids_leaves_them_adopted_not_sent_again(
        monkeypatch, batch_knobs, fast_recovery, start_worker, simulator, tmp_path):
    """The provider holds every batch, but their creations are answered only after the only
    worker is SIGKILLed, so no batch id reaches SQL. A new worker's sweep finds each at its
    provider (OpenAI and Mistral by our id in the metadata, Anthropic by creation time, size and,
    once ended, its results) and polls it: nothing is submitted twice, nothing paid twice."""
    simulator.update(batch_delay_s=1.0, batch_create_delay_s=4.0)
    batch_mode(monkeypatch, *BACKENDS)
    first = start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--limit", "2")

    def all_created():
        rows = batch_rows(run_id)
        created = sum(simulator.stats()["batch"]["batches"].values())
        return rows if created == len(rows) == 8 and all(b.state == "submitting" for b in rows) else None

    wait_for(all_created, timeout=30, interval=0.1, what="every batch created, none answered yet")
    first.kill()
    start_worker("w2", concurrency=8)
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 40

    stats = simulator.stats()["batch"]
    assert stats["batches"] == {"openai": 1, "anthropic": 1, "mistral": 6}  # none sent again (a fine-tune each)
    assert stats["requests"] == stats["succeeded"] == 40
    entries = inference_entries(run_id)
    assert len(entries) == 40 and set(entries.values()) == {1} and None not in entries
    rows = batch_rows(run_id)
    assert all(b.state == "ended" and b.attempts == 1 and b.provider_batch_id for b in rows)
    adopted = (tmp_path / "w2.log").read_text().count(": adopted")
    assert adopted == 8, f"{adopted} adoptions logged by w2"
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    status = BudgetGuard.from_settings(get_settings()).status()
    assert status["reserved_usd"] == 0 and status["spent_usd"] == pytest.approx(run_ledger(run_id)[1], abs=1e-5)


def _budget_agrees_with_the_ledger(run_id: str) -> None:
    """Nothing left reserved, and the budget counters hold what the ledger holds."""
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    status = BudgetGuard.from_settings(get_settings()).status()
    assert status["reserved_usd"] == 0 and status["spent_usd"] == pytest.approx(run_ledger(run_id)[1], abs=1e-5)


@pytest.mark.parametrize("lost_as", ["reset", "502", "timeout"])
def test_a_lost_create_reply_is_looked_up_and_adopted_never_sent_again(
        lost_as, monkeypatch, batch_knobs, fast_recovery, start_worker, simulator):
    """Every batch's creation is answered by a closed connection, a proxy's 502, or not before
    the SDK's timeout: the provider holds (and bills) every batch. Each is looked up at its
    provider and adopted (OpenAI and Mistral at once, by their metadata; Anthropic's once
    ended, by the sweep); none is sent again, and the ledger holds what was billed, once."""
    if lost_as == "timeout":  # the SDK reads for 2 x call_timeout_s: 2 s here, the answer comes after 3 s
        monkeypatch.setenv("GENESIS_RETRY__CALL_TIMEOUT_S", "1")
    simulator.update(batch_delay_s=1.0, batch_create_lost_rate=1.0, batch_create_lost_as=lost_as, timeout_s=3.0)
    batch_mode(monkeypatch, *BACKENDS)
    start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--limit", "2")
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 40

    stats = simulator.stats()["batch"]
    rows = batch_rows(run_id)
    assert stats["creates_lost"] == sum(stats["batches"].values()) == len(rows)  # one provider batch per group
    assert stats["requests"] == stats["succeeded"] == 40
    assert all(b.state == "ended" and b.attempts == 1 and b.provider_batch_id for b in rows)
    entries = inference_entries(run_id)
    assert len(entries) == 40 and set(entries.values()) == {1} and None not in entries  # ledger = billed
    _budget_agrees_with_the_ledger(run_id)


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_two_deployments_on_one_api_key_each_adopt_only_their_own_lost_batch(
        backend, monkeypatch, batch_knobs, fast_recovery, start_worker, genesis, simulator, tmp_path):
    """Staging and prod: two databases (and Redis), one provider account. Each submits the same
    jobs, so both number their batch 1 and their jobs alike, and each submitter dies before it
    learns its batch's id. Each deployment's sweep finds its own batch at the provider (OpenAI by
    its metadata, Anthropic by its results' custom ids): the two adopt two different batches,
    each named by its own deployment, and each ledgers its own answers once."""
    import redis

    from shared.batches import deployment_id
    from shared.config import get_settings
    from shared.db import migrate
    from shared.messaging import reconnect
    from tests.support.env import SECOND_REDIS_URL
    from tests.support.workers import WorkerProcess
    from worker.app import app

    simulator.update(batch_delay_s=1.0, batch_create_delay_s=6.0)
    batch_mode(monkeypatch, backend)
    other = {**genesis, "GENESIS_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}",
             "GENESIS_REDIS_URL": SECOND_REDIS_URL, "GENESIS_REPORTS_DIR": str(tmp_path / "other-reports")}
    other_redis = redis.Redis.from_url(SECOND_REDIS_URL)
    other_redis.flushdb()
    workers: list[WorkerProcess] = []

    def deployment(env: dict[str, str]) -> None:
        """This process (the producer) speaks for the deployment of `env` from now on."""
        for key in ("GENESIS_DATABASE_URL", "GENESIS_REDIS_URL", "GENESIS_REPORTS_DIR"):
            monkeypatch.setenv(key, env[key])
        get_settings.cache_clear()
        reconnect(get_settings())

    def start(env: dict[str, str], name: str) -> WorkerProcess:
        deployment(env)
        worker = WorkerProcess(env, name=name, log_path=tmp_path / f"{name}.log")  # with this process's knobs
        workers.append(worker)
        return worker.wait_ready(app)

    def reported(env: dict[str, str]) -> tuple[list, str]:
        """Its batches once its run is reported, and its deployment id (from its database)."""
        deployment(env)
        run_id = runs[env["GENESIS_DATABASE_URL"]]
        snap = wait_until_reported(run_id, timeout=120)
        assert snap["status"] == "completed" and snap["by_status"]["ok"] == 2
        entries = inference_entries(run_id)
        assert len(entries) == 2 and set(entries.values()) == {1} and None not in entries  # its own, once
        return batch_rows(run_id), deployment_id()

    try:
        migrate(other["GENESIS_DATABASE_URL"])
        runs: dict[str, str] = {}
        submitters = [start(genesis, "a1"), start(other, "b1")]
        for env in (genesis, other):  # back to back: both batches exist before either creation is answered
            deployment(env)
            runs[env["GENESIS_DATABASE_URL"]] = submit("--agent", "qa", "--backend", backend, "--limit", "2")
        wait_for(lambda: sum(simulator.stats()["batch"]["batches"].values()) == 2, timeout=30, interval=0.1,
                 what="both deployments' batches created, neither answered yet")
        for worker in submitters:
            worker.kill()
        start(genesis, "a2")
        start(other, "b2")
        (rows_a, ours_a), (rows_b, ours_b) = reported(genesis), reported(other)
    finally:
        for worker in workers:
            worker.stop()
        other_redis.flushdb()
        deployment(genesis)

    assert ours_a != ours_b
    assert [b.id for b in rows_a] == [b.id for b in rows_b] == [1]  # the same batch id in both databases
    adopted_a, adopted_b = rows_a[0].provider_batch_id, rows_b[0].provider_batch_id
    assert adopted_a and adopted_b and adopted_a != adopted_b
    held = simulator.server.simulator.batches.batches
    for adopted, deployed in ((adopted_a, ours_a), (adopted_b, ours_b)):  # each named by its own deployment
        assert all(item.custom_id.startswith(f"g{deployed}-b1-") for item in held[adopted].items)
    stats = simulator.stats()["batch"]
    assert sum(stats["batches"].values()) == 2 and stats["requests"] == stats["succeeded"] == 4  # none sent again


def test_a_lost_submission_is_told_apart_at_its_provider(simulator, monkeypatch):
    """The finder the sweep asks (no worker here, the real SDKs against the simulator): by our id
    in the metadata (OpenAI, Mistral); for Anthropic, whose batches carry none, a batch of its
    size created since, once it has ended and its results name our requests; never by size
    alone while it runs (two alike, or another client's, would be taken for each other)."""
    from datetime import datetime, timedelta, timezone

    from shared.providers import PROVIDERS, ChatRequest
    from shared.providers.batch_api import BATCH_APIS
    from shared.providers.batch_names import LostSubmission, OurBatch, Undecided
    from shared.providers.clients import client_for

    for provider, variable, url in (("openai", "OPENAI_BASE_URL", f"{simulator.url}/v1"),
                                    ("anthropic", "ANTHROPIC_BASE_URL", simulator.url),
                                    ("mistral", "MISTRAL_BASE_URL", simulator.url)):
        monkeypatch.setenv(variable, url)
        monkeypatch.setenv(PROVIDERS[provider].key_env, "sim-key")
    simulator.update(batch_delay_s=3.0)

    def lines(model: str, batch: int, *jobs: int) -> list:
        return [(OurBatch("d1", batch).custom_id(job), ChatRequest(model, f"question {job}", None, 16, 10.0))
                for job in jobs]

    def lost(batch: int, *jobs: int, started_at=None, known=()) -> LostSubmission:
        ours = OurBatch("d1", batch)
        return LostSubmission(ours.metadata, frozenset(ours.custom_id(j) for j in jobs),
                              started_at or datetime.now(timezone.utc) - timedelta(seconds=2), frozenset(known))

    for provider, model in (("openai", "gpt-4o-mini"), ("mistral", "open-mistral-7b")):
        api, cli = BATCH_APIS[provider], client_for(PROVIDERS[provider], 10.0)
        ours = api.submit(cli, model, lines(model, 7, 1, 2), OurBatch("d1", 7).metadata)
        api.submit(cli, model, lines(model, 8, 3, 4), OurBatch("d1", 8).metadata)
        assert api.find(cli, lost(7, 1, 2)) == ours
        assert api.find(cli, lost(9, 5)) is None  # never reached the provider
        assert api.find(cli, lost(7, 1, 2, started_at=datetime.now(timezone.utc) + timedelta(minutes=10))) is None

    api, cli = BATCH_APIS["anthropic"], client_for(PROVIDERS["anthropic"], 10.0)
    model = "claude-3-5-haiku-latest"
    assert api.find(cli, lost(1, 1, 2)) is None  # nothing created since
    first = api.submit(cli, model, lines(model, 1, 1, 2), {})
    second = api.submit(cli, model, lines(model, 2, 3, 4), {})
    with pytest.raises(Undecided):  # batches of its size, running: adopting one could be the wrong one
        api.find(cli, lost(1, 1, 2))
    assert api.find(cli, lost(1, 1, 2, 9)) is None  # none of that size
    assert api.find(cli, lost(1, 1, 2, started_at=datetime.now(timezone.utc) + timedelta(minutes=10))) is None
    time.sleep(3.2)  # both ended: their results say which is which
    assert api.find(cli, lost(1, 1, 2)) == first and api.find(cli, lost(2, 3, 4)) == second
    assert api.find(cli, lost(2, 3, 4, known=[second])) is None  # the other one is not ours
    assert api.find(cli, lost(3, 7, 8)) is None


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_outage_while_a_batch_s_results_are_written_journals_them_and_pays_each_once(
        monkeypatch, batch_knobs, fast_recovery, start_worker, simulator, database_url, redis_url):
    """PostgreSQL refuses connections (and drops open ones) for 4 s, starting once the first of
    a 100-job batch's answers is ledgered: write_results meets DATABASE_AWAY for the others,
    which BatchMoney.record journals to Redis and settles; the batch's next SQL step raises and
    poll_batch polls again. Once the database is back, the batch's results are read again and
    the sweep replays the journal, and each answer is ledgered once. The test fails unless the
    outage began mid-write (some answers ledgered before it, some journaled during it).
    Measured over 16 runs, 4 of them beside two CPU-bound processes: 84..96 of the 100 answers
    journaled, 14..18 s a run."""
    import threading

    import redis

    from shared.budget import BudgetGuard
    from shared.budget.money import to_usd
    from shared.budget.recorded import ledger_members
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.journal import JOURNAL_KEY
    from tests.support.postgres import postgres_outage

    monkeypatch.setenv("GENESIS_BATCH__MAX_JOBS", "100")  # one batch: a long write to land in
    monkeypatch.setenv("GENESIS_BATCH__MAX_WAIT_S", "5")  # sent when full, not split by its age
    simulator.update(batch_delay_s=1.0)
    batch_mode(monkeypatch, "openai")
    worker = start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--backend", "openai", "--limit", "20")  # 100 jobs
    wait_for(lambda: run_ledger(run_id)[0], timeout=60, interval=0.005, what="the batch's first answer ledgered")

    client = redis.Redis.from_url(redis_url)
    outage = threading.Thread(target=postgres_outage, args=(database_url, 4.0))
    outage.start()
    journaled = 0
    while outage.is_alive():  # journaled answers stay in Redis until the database is back
        journaled = max(journaled, client.hlen(JOURNAL_KEY))
        time.sleep(0.05)
    outage.join()
    assert journaled > 0  # the outage began before the batch's last answer was written
    assert "poll failed" in worker.log_path.read_text()  # poll_batch caught DATABASE_AWAY and polled again

    snap = wait_until_reported(run_id, timeout=60)
    assert snap["status"] == "completed" and snap["by_status"]["ok"] == 100
    entries = inference_entries(run_id)
    assert None not in entries and len(entries) == 100 and set(entries.values()) == {1}  # each answer once
    stats = simulator.stats()["batch"]
    assert stats["requests"] == stats["succeeded"] == len(entries)  # nothing sent twice; the ledger is what was billed
    rows = batch_rows(run_id)
    assert [b.state for b in rows] == ["ended"] * len(rows)
    # the sweep replays the journal (answers the batch's second read may have written already): it ends empty
    wait_for(lambda: client.hlen(JOURNAL_KEY) == 0, timeout=10, what="the journal replayed")
    budget = BudgetGuard.from_settings(get_settings()).status()
    with session_scope() as session:
        ledgered_micro, _ = ledger_members(session)  # the (fresh) ledger summed as the guard adds it, in micro-$
    assert budget["spent_usd"] == to_usd(ledgered_micro) and budget["reserved_usd"] == 0


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_a_corrupt_results_line_ends_its_job_in_error_ledgered_at_its_worst_case(
        backend, monkeypatch, batch_knobs, start_worker, simulator):
    """A fifth of the results lines are cut short on every read. The file is read again a few
    times, then each unreadable request's job ends `error` with the reason and its worst case
    is ledgered as outcome unknown (the provider billed it); the other jobs keep their answers,
    ledgered once; the run completes, nothing is left reserved."""
    from shared.budget import task_worst_case
    from shared.config import get_settings
    from shared.suite import load_suite
    from tests.support.runs import ledger_rows, run_jobs

    simulator.update(batch_delay_s=0.3, batch_corrupt_rate=0.2)
    batch_mode(monkeypatch, backend)
    start_worker("w1", concurrency=8)
    run_id = submit("--all-agents", "--backend", backend, "--limit", "4")
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed"

    stats = simulator.stats()["batch"]
    jobs = run_jobs(run_id)
    unreadable = [j for j in jobs if j.status == "error"]
    assert unreadable and len(unreadable) == stats["corrupt_lines"]  # the fault struck, and only there
    assert len(jobs) - len(unreadable) == snap["by_status"]["ok"]
    for job in unreadable:
        assert job.error_type == "BatchResultUnreadable" and "could not be read" in job.error_message
    entries = inference_entries(run_id)
    assert len(entries) == len(jobs) == stats["succeeded"] and set(entries.values()) == {1}  # ledger = billed
    settings, suite = get_settings(), load_suite(get_settings().suite)
    tasks = {(agent, task.id): task for agent in settings.agents.names for task in suite.tasks_for(agent)}
    unknown = {e.job_id: e.cost_usd for e in ledger_rows(run_id) if e.source.startswith("outcome unknown")}
    assert unknown == {j.id: pytest.approx(task_worst_case(settings, tasks[(j.agent, j.task_id)], j.backend, j.model))
                       for j in unreadable}
    from worker.batches import UNREADABLE_READS

    assert {b.result_reads for b in batch_rows(run_id)} <= {0, UNREADABLE_READS}
    _budget_agrees_with_the_ledger(run_id)
