"""Sequential runs end to end (issue #28, design §13): real workers, the simulator behind the
real SDKs, a suite the test generates. Each agent's tasks are released look by look; an agent
whose verdict is settled is paid no further (its later jobs `not_needed`); the report shows the
design's verdicts, where each stopped, and the calls paid against the fixed design's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from tests.support.runs import producer, run_jobs, submit, wait_until_reported
from tests.support.suites import generate_suite

PAIR = ("--backend", "mistral-ft", "--backend", "mistral-base")
# qa's fine-tune far better (GO early), legal's worse (NO-GO), the rest at the bar (+8% of 0.65).
QUALITY = {"ft:*qa*": 0.95, "ft:*legal*": 0.45, "ft:*": 0.70, "open-mistral-7b": 0.65}


def report_of(snap: dict) -> dict:
    return json.loads((Path(snap["report"]).parent / "report.json").read_text())


def paths_by_agent(report: dict) -> dict[str, dict]:
    return {p["comparison"]: p for p in report["sequential"]["paths"]}


def test_a_5x400_run_stops_each_agent_once_its_verdict_is_known(start_worker, simulator, fast_limits, tmp_path):
    suite = generate_suite(tmp_path / "suite", 400)
    simulator.update(suite=str(suite), latency_ms=2, quality=QUALITY)
    start_worker("w1", concurrency=16)
    start_worker("w2", concurrency=16)
    run_id = submit("--all-agents", "--suite", str(suite), *PAIR, "--sequential")
    snap = wait_until_reported(run_id, timeout=900)
    assert snap["status"] == "completed"

    report = report_of(snap)
    seq, paths = report["sequential"], paths_by_agent(report)
    jobs = run_jobs(run_id)
    counts = Counter(j.status for j in jobs)
    assert len(jobs) == seq["planned_calls"] == 5 * 400 * 2
    assert set(counts) <= {"ok", "error", "not_needed"}  # nothing left waiting, queued or halted
    # qa: a large gain settles at look 1 or 2; legal: a loss settles NO-GO; both stop paying.
    assert paths["qa"]["stopped_at"] in (1, 2) and report["decision"]["by_agent"]["qa"] == "GO"
    assert paths["legal"]["stopped_at"] is not None and report["decision"]["by_agent"]["legal"] == "NO-GO"
    # an agent at the bar runs to the end: the run reached its last look
    assert seq["current_look"] == 5 and any(p["stopped_at"] is None for p in paths.values())
    for agent in ("qa", "legal"):
        stop = paths[agent]["stopped_at"]
        mine = [j for j in jobs if j.agent == agent]
        assert all(j.status == "not_needed" for j in mine if j.look > stop)
        assert all(j.status in ("ok", "error") for j in mine if j.look <= stop)
    # every backend of a task shares its look; each look of an agent is a fifth of its tasks
    looks = {(j.agent, j.task_id): set() for j in jobs}
    for j in jobs:
        looks[(j.agent, j.task_id)].add(j.look)
    assert all(len(v) == 1 for v in looks.values())
    assert Counter(next(iter(v)) for (a, _), v in looks.items() if a == "qa") == {k: 80 for k in range(1, 6)}
    # not needed = never sent, never paid
    paid = counts["ok"] + counts["error"]
    assert seq["paid_calls"] == paid and seq["not_needed_jobs"] == counts["not_needed"] > 0
    assert simulator.stats()["requests_total"] == paid
    assert seq["saved_usd"] > 0
    status = producer("status", run_id)
    assert "look 5 of 5" in status.stdout and "qa look" in status.stdout
    print(f"\n5x400 sequential: looks per verdict "
          f"{ {a: (p['points'][-1]['look'], p['points'][-1]['verdict'], p['reason']) for a, p in paths.items()} }; "
          f"paid {seq['paid_calls']} of {seq['planned_calls']} planned calls, saved ${seq['saved_usd']:.4f}")


def small_run(tmp_path, simulator, per_agent: int, agents: tuple[str, ...] = ("qa", "legal"), **sim) -> Path:
    suite = generate_suite(tmp_path / "suite", per_agent, agents)
    simulator.update(suite=str(suite), **{"latency_ms": 2, "quality": QUALITY, **sim})
    return suite


def agent_args(agents: tuple[str, ...]) -> list[str]:
    return [arg for agent in agents for arg in ("--agent", agent)]


def test_a_budget_halt_mid_look_leaves_later_looks_waiting_and_resume_continues_the_look(
        monkeypatch, simulator, start_worker, redis_url, tmp_path):
    """A budget covering ~30 calls halts look 1 (80 jobs): the later looks wait, untouched;
    lifted and resumed, the run finishes its looks without paying for anything twice."""
    from shared.budget import task_worst_case
    from shared.config import get_settings
    from shared.suite import load_suite
    from tests.support.runs import inference_entries
    from tests.support.waiting import wait_for
    from tests.support.halts import halt_settled, wait_consuming

    # at the bar everywhere: no verdict settles early, every look runs
    suite = small_run(tmp_path, simulator, 60, quality={"ft:*": 0.70, "open-mistral-7b": 0.65}, latency_ms=100)
    settings = get_settings()
    loaded = load_suite(str(suite))
    costs = [task_worst_case(settings, t, b, settings.model_for(b, a)) for a in ("qa", "legal")
             for t in loaded.tasks_for(a) for b in ("mistral-ft", "mistral-base")]
    limit_usd = round(30 * (sum(costs) / len(costs)) / settings.budget.emergency, 6)
    monkeypatch.setenv("GENESIS_BUDGET__LIMIT_USD", str(limit_usd))
    monkeypatch.setenv("GENESIS_LIMITS__MISTRAL__MAX_IN_FLIGHT", "64")
    get_settings.cache_clear()
    hostnames = [start_worker("w1", concurrency=8).hostname]
    run_id = submit(*agent_args(("qa", "legal")), "--suite", str(suite), *PAIR, "--sequential", "--looks", "3")

    counts = wait_for(lambda: halt_settled(run_id, simulator, redis_url), timeout=90, interval=0.3,
                      what="the run to halt and settle")
    assert counts["waiting"] == 2 * 40 * 2 and not counts.get("not_needed")  # looks 2 and 3 untouched
    assert producer("status", run_id, "--json").exit_code == 0
    result = producer("budget", "resume", "--limit", str(round(limit_usd * 100, 6)), "--json")
    assert result.exit_code == 0, result.output
    wait_consuming(hostnames, providers=True)
    assert producer("resume", run_id).exit_code == 0
    snap = wait_until_reported(run_id, timeout=180)
    assert snap["status"] == "completed"
    jobs = run_jobs(run_id)
    assert {j.status for j in jobs} <= {"ok", "error", "not_needed"}
    entries = inference_entries(run_id)
    assert all(n == 1 for n in entries.values())  # nothing paid twice
    paid = sum(j.status in ("ok", "error") for j in jobs)
    assert simulator.stats()["requests_total"] == len(entries) == paid
    assert report_of(snap)["sequential"]["current_look"] == 3


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_crash_between_the_release_and_its_publish_is_recovered_by_the_sweep(
        fast_recovery, simulator, start_worker, tmp_path, database_url):
    """The look step's SQL release done, its publish lost (the worker died in between): the
    released jobs are queued without messages; the recovery sweep publishes them and the run
    goes on to its report."""
    from producer import submit as submitting
    from shared import lifecycle
    from shared.config import get_settings
    from shared.models import utcnow

    suite = small_run(tmp_path, simulator, 30, agents=("qa",), quality={"ft:*": 0.70, "open-mistral-7b": 0.65})
    settings = submitting.with_design(get_settings(), True, 3)
    selection = submitting.select_work(settings, agents=["qa"], all_agents=False, backends=["mistral-ft", "mistral-base"],
                                       suite=str(suite), limit=None)
    run_id, first_look = submitting.record_run(settings, selection)  # recorded, never published
    assert len(first_look) == 20
    for job_id, *_ in first_look:  # look 1 ends (as failures: no pair, the verdict stays open)
        _, claimed = lifecycle.claim(job_id, "test", utcnow(), 300)
        lifecycle.finish_error(claimed, "Boom", "failed for good")
    assert lifecycle.advance_look(run_id, 1, ["qa"], [])  # the release ...
    assert not lifecycle.advance_look(run_id, 1, ["qa"], [])  # ... claimed once
    assert len(lifecycle.queued_jobs(run_id)) == 20  # ... and no publish: the crash
    start_worker("w1", concurrency=8)
    snap = wait_until_reported(run_id, timeout=120)
    assert snap["status"] == "completed"
    jobs = run_jobs(run_id)
    assert Counter(j.status for j in jobs if j.look > 1) == {"ok": 40}
    assert simulator.stats()["requests_total"] == 40  # each released job called once


def test_batch_backends_submit_each_released_look_as_its_own_batches(
        monkeypatch, batch_knobs, simulator, start_worker, tmp_path):
    from shared.report.sequential_section import LOOKS_TITLE
    from tests.support.env import batch_mode
    from tests.support.runs import batch_rows

    batch_mode(monkeypatch, "mistral-ft", "mistral-base")
    suite = small_run(tmp_path, simulator, 100, agents=("qa",), batch_delay_s=0.2)
    start_worker("w1", concurrency=8)
    run_id = submit("--agent", "qa", "--suite", str(suite), *PAIR, "--sequential", "--looks", "4")
    snap = wait_until_reported(run_id, timeout=180)
    assert snap["status"] == "completed"
    report = report_of(snap)
    jobs = run_jobs(run_id)
    look_of = {j.id: j.look for j in jobs}
    batches = batch_rows(run_id)
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:  # each answered job keeps the batch that answered it
        rows = session.exec(select(Job.id, Job.provider_batch_id).where(Job.run_id == run_id)).all()
    assert batches and report["decision"]["by_agent"]["qa"] == "GO"
    stop = paths_by_agent(report)["qa"]["stopped_at"]
    assert stop is not None and stop < 4
    assert all(j.status == "not_needed" for j in jobs if j.look > stop)
    assert all(j.status == "ok" for j in jobs if j.look <= stop)
    # every batch holds the jobs of one look only: a look is sent as its own batches
    by_batch: dict[int, set[int]] = {}
    for job_id, batch_id in rows:
        if batch_id is not None:
            by_batch.setdefault(batch_id, set()).add(look_of[job_id])
    assert {job_id for job_id, batch_id in rows if batch_id is not None} == {j.id for j in jobs if j.status == "ok"}
    assert len(by_batch) >= 2 and all(len(looks) == 1 for looks in by_batch.values())
    assert sum(b.job_count for b in batches) == sum(j.status == "ok" for j in jobs)
    markdown = (Path(snap["report"]).parent / "report.md").read_text()
    assert LOOKS_TITLE in markdown
    assert f"paid {report['sequential']['paid_calls']:,} of {len(jobs):,} planned calls" in markdown


def test_reused_answers_are_free_pairs(start_worker, simulator, tmp_path):
    """A second sequential run of the same tasks with --reuse takes every answer it needs from
    the first: the same looks and verdicts, no call, nothing paid."""
    suite = small_run(tmp_path, simulator, 100, agents=("qa", "legal"))
    start_worker("w1", concurrency=16)
    args = (*agent_args(("qa", "legal")), "--suite", str(suite), *PAIR, "--sequential")
    first = report_of(wait_until_reported(submit(*args), timeout=180))
    calls = simulator.stats()["requests_total"]
    second_id = submit(*args, "--reuse")
    second = report_of(wait_until_reported(second_id, timeout=180))
    assert simulator.stats()["requests_total"] == calls  # no call at all
    assert second["decision"] == first["decision"]
    assert ({a: p["stopped_at"] for a, p in paths_by_agent(second).items()}
            == {a: p["stopped_at"] for a, p in paths_by_agent(first).items()})
    assert second["sequential"]["paid_calls"] == 0 and second["sequential"]["paid_usd"] == 0
    assert all(j.reused_from_job_id is not None for j in run_jobs(second_id) if j.status == "ok")


def test_cancel_leaves_later_looks_waiting_never_sent(genesis, simulator, tmp_path):
    """Cancelled before any worker ran: the first look's queued jobs stay queued (workers skip
    them, as for any cancelled run), the later looks stay waiting and no look step sends them."""
    from worker.looks import take_look

    suite = small_run(tmp_path, simulator, 20, agents=("qa",))
    run_id = submit("--agent", "qa", "--suite", str(suite), *PAIR, "--sequential", "--looks", "4")
    result = producer("cancel", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert take_look(run_id) == "cancelled"
    counts = Counter(j.status for j in run_jobs(run_id))
    assert counts == {"queued": 10, "waiting": 30}
    report = json.loads((Path(json.loads(result.stdout)["report"]).parent / "report.json").read_text())
    assert report["status"] == "cancelled" and report["complete"] is False
    assert report["counts"]["waiting"] == 30 and report["sequential"]["paid_calls"] == 0
    assert simulator.stats()["requests_total"] == 0
    watched = producer("status", run_id, "--watch")
    assert "look 1 of 4: qa look 1" in watched.output  # the look each agent is on


def test_an_agent_with_go_out_of_reach_stops_once_the_pooled_verdict_is_settled(start_worker, simulator, tmp_path):
    """The release rule the statistics were measured with (bench/sequential_sim.py): qa's large
    gain settles the pooled verdict; legal, no better than its base, has GO out of reach from
    look 3 on and stops there, INCONCLUSIVE, its later looks not needed."""
    suite = small_run(tmp_path, simulator, 400, quality={**QUALITY, "ft:*legal*": 0.65})
    start_worker("w1", concurrency=16)
    run_id = submit(*agent_args(("qa", "legal")), "--suite", str(suite), *PAIR, "--sequential")
    report = report_of(wait_until_reported(run_id, timeout=600))
    paths = paths_by_agent(report)
    assert report["decision"]["by_agent"]["legal"] == "INCONCLUSIVE"
    assert paths["ALL"]["stopped_at"] is not None and paths["legal"]["stopped_at"] is None
    stop = paths["legal"]["points"][-1]["look"]
    assert 3 <= stop < 5 and paths["legal"]["reason"] == (
        f"stopped at look {stop}: GO out of reach (chance of GO by the last look under 5%)")
    legal = [j for j in run_jobs(run_id) if j.agent == "legal"]
    assert all(j.status == "not_needed" for j in legal if j.look > stop)
    assert all(j.status in ("ok", "error") for j in legal if j.look <= stop)
