"""Sequential runs end to end (issue #28, design §13): real workers, the simulator behind the
real SDKs, a suite the test generates. Each agent's tasks are released look by look; an agent
whose verdict is settled is paid no further (its later jobs `not_needed`); the report shows the
design's verdicts, where each stopped, and the calls paid against the fixed design's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

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
          f"{ {a: (p['stopped_at'], p['points'][-1]['verdict']) for a, p in paths.items()} }; "
          f"paid {seq['paid_calls']} of {seq['planned_calls']} planned calls, saved ${seq['saved_usd']:.4f}")
