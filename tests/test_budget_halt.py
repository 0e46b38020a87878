"""The budget guard end to end, with real parts: `celery worker` processes (8, 24 or 48 calls in
flight) against the simulator, a budget that covers ~30 worst-case calls, a run of 200 jobs.
The run halts only once the settled ledger has no room left for one more call, without passing
the emergency threshold and without losing a job; resuming finishes it without paying for
anything twice. Plus the submit-side bad input and dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from tests.support.env import ROOT
from tests.support.halts import QUEUES, halt_settled, queue_lengths, wait_consuming
from tests.support.runs import producer
from tests.support.waiting import wait_for

BACKENDS = ("mistral-base", "mistral-ft")  # 5 agents × 20 tasks × 2 backends = 200 jobs on `mistral`
CALLS_COVERED = 30
SHAPES = {8: (1, 8), 24: (3, 8), 48: (3, 16)}  # calls in flight: (workers, threads each)


def worst_case_costs(settings, backend: str, limit: int | None = None) -> list[float]:
    """What the workers reserve for each job of the run, computed as they compute it."""
    from shared.budget import task_worst_case
    from shared.suite import load_suite

    suite = load_suite(settings.suite)
    return [
        task_worst_case(settings, task, backend, settings.model_for(backend, agent))
        for agent in settings.agents.names
        for task in suite.tasks_for(agent, limit)
    ]


def served_ok(simulator) -> int:
    return simulator.stats()["by_status"].get("200", 0)


def halt_a_run(monkeypatch, simulator, start_worker, redis_url, in_flight: int = 24) -> dict:
    """Submit 200 jobs against a budget of ~30 worst-case calls and wait until the halt settles."""
    from shared.config import get_settings

    settings = get_settings()
    costs = [c for backend in BACKENDS for c in worst_case_costs(settings, backend)]
    limit_usd = round(CALLS_COVERED * (sum(costs) / len(costs)) / settings.budget.emergency, 6)
    monkeypatch.setenv("GENESIS_BUDGET__LIMIT_USD", str(limit_usd))
    monkeypatch.setenv("GENESIS_LIMITS__MISTRAL__MAX_IN_FLIGHT", "64")  # the budget, not the limiter, binds
    get_settings.cache_clear()
    simulator.update(latency_ms=150, latency_jitter_ms=50)  # calls overlap across workers

    n_workers, threads = SHAPES[in_flight]
    workers = [start_worker(f"w{i}", concurrency=threads) for i in range(1, n_workers + 1)]
    hostnames = [w.hostname for w in workers]
    args = [arg for backend in BACKENDS for arg in ("--backend", backend)]
    result = producer("submit", "--all-agents", *args, "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    assert json.loads(result.stdout)["jobs"] == len(costs) == 200

    counts = wait_for(lambda: halt_settled(run_id, simulator, redis_url), timeout=90, interval=0.3,
                      what="the run to halt and settle")
    return {"run_id": run_id, "counts": counts, "limit_usd": limit_usd, "hostnames": hostnames,
            "cap_usd": limit_usd * settings.budget.emergency, "worst_usd": max(costs)}


@pytest.mark.parametrize("in_flight", sorted(SHAPES))
def test_halt_uses_the_budget_but_one_call_and_never_passes_it(in_flight, monkeypatch, simulator, start_worker,
                                                              redis_url):
    from shared.budget import BudgetDenied
    from shared.db import session_scope
    from shared.models import BudgetEvent, CostEntry, Run

    halted = halt_a_run(monkeypatch, simulator, start_worker, redis_url, in_flight)
    run_id, counts, cap = halted["run_id"], halted["counts"], halted["cap_usd"]

    status = json.loads(producer("status", run_id, "--json").stdout)
    assert status["status"] == "halted"
    assert sum(counts.values()) == 200 and set(counts) <= {"ok", "halted", "queued", "error"}  # none lost
    assert counts.get("ok", 0) > CALLS_COVERED and counts.get("queued", 0) + counts["halted"] > 0
    with session_scope() as session:
        assert session.get(Run, run_id).status == "halted"
        ledger_total = session.exec(select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0))).one()
        entries = session.exec(select(func.count()).select_from(CostEntry)).one()
        halts = session.exec(select(BudgetEvent).where(BudgetEvent.kind == "halt")).all()
    assert len(halts) == 1 and halts[0].run_id == run_id and halts[0].level == "emergency"
    # Halted only when the settled ledger had no room for one more worst case; never above the cap.
    assert BudgetDenied.spent_in(halts[0].message) >= cap - halted["worst_usd"]
    assert ledger_total <= cap + 1e-9
    assert served_ok(simulator) == counts["ok"] == entries == simulator.stats()["requests_total"]
    budget = json.loads(producer("budget", "--json").stdout)
    assert budget["halted"] is True and budget["level"] == "emergency"
    assert budget["reserved_usd"] == 0  # every reservation settled or released
    assert budget["spent_usd"] == pytest.approx(ledger_total, abs=1e-5)
    assert "no room for this call's worst case" in budget["halt_reason"]

    wait_consuming(halted["hostnames"], providers=False)
    late = start_worker("late", concurrency=2)  # a worker started during the halt stays off paid work
    # paid work stays off; `batches` runs on (a halt's batch cancels and what they answered are read there)
    assert wait_consuming([late.hostname], providers=False)[late.hostname] == {"reports", "batches"}
    assert served_ok(simulator) == counts["ok"]  # no call after the halt


def test_resume_finishes_the_run_without_paying_twice(monkeypatch, simulator, start_worker, redis_url):
    from shared.db import session_scope
    from shared.models import CostEntry, Job

    halted = halt_a_run(monkeypatch, simulator, start_worker, redis_url)
    run_id = halted["run_id"]
    with session_scope() as session:
        ok_jobs = session.exec(select(Job).where(Job.run_id == run_id, Job.status == "ok")).all()
        ok_before = {j.id: j.attempts for j in ok_jobs}
    assert len(ok_before) == halted["counts"]["ok"]

    assert producer("resume", run_id).exit_code == 1  # still halted: the budget must be lifted first
    result = producer("budget", "resume", "--limit", str(round(halted["limit_usd"] * 20, 6)), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["halted"] is False
    wait_consuming(halted["hostnames"], providers=True)
    result = producer("resume", run_id, "--json")
    assert result.exit_code == 0, result.output

    def completed():
        from shared.progress import run_snapshot

        snap = run_snapshot(run_id)
        if snap["status"] != "completed" or not snap["report"]:
            return None
        report = json.loads((Path(snap["report"]).parent / "report.json").read_text())
        return (snap, report) if report["complete"] else None

    snap, report = wait_for(completed, timeout=60, interval=0.3, what=f"run {run_id} to complete")
    assert snap["by_status"]["ok"] == 200 and sum(snap["by_status"].values()) == 200
    assert report["run_id"] == run_id and report["complete"] is True
    with session_scope() as session:
        jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
        paid = session.exec(select(CostEntry.job_id).where(CostEntry.run_id == run_id)).all()
    assert served_ok(simulator) == simulator.stats()["requests_total"] == len(paid) == len(set(paid)) == 200
    assert set(paid) == {j.id for j in jobs}
    assert {j.id: j.attempts for j in jobs if j.id in ok_before} == ok_before  # no ok job ran again


# --- bad input and the dry run: nothing may be written or enqueued ----------------------------


def write_config(tmp_path: Path, *, replace: dict[str, str]) -> Path:
    """The shipped config with some lines changed; model_id_file paths still resolve from ROOT."""
    text = (ROOT / "config" / "genesis.toml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config" / "genesis.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_nothing_written(genesis: dict[str, str]) -> None:
    """Read with the test's own URLs: the config under test may not even load."""
    from shared.db import session_scope
    from shared.models import Job, Run

    with session_scope(genesis["GENESIS_DATABASE_URL"]) as session:
        assert session.exec(select(Run)).all() == [] and session.exec(select(Job)).all() == []
    assert queue_lengths(genesis["GENESIS_REDIS_URL"]) == {name: 0 for name in QUEUES}


@pytest.mark.parametrize(
    ("replace", "args", "message"),
    [
        ({'model = "gpt-5-mini"': 'model = "gpt-unpriced"'}, ["--all-agents"], "'gpt-unpriced' has no price"),
        ({'model = "gpt-5-mini"': 'model = "gpt-unpriced"'}, ["--all-agents", "--dry-run", "--json"],
         "'gpt-unpriced' has no price"),
        ({"warning = 0.25": "warning = 0.60"}, ["--all-agents"], "thresholds"),
    ],
    ids=["unpriced", "unpriced-dry-run", "thresholds-out-of-order"],
)
def test_submit_with_a_bad_config_exits_2_and_writes_nothing(genesis, monkeypatch, tmp_path,
                                                             replace, args, message):
    from shared.config import get_settings

    monkeypatch.setenv("GENESIS_CONFIG", str(write_config(tmp_path, replace=replace)))
    get_settings.cache_clear()
    result = producer("submit", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""
    assert_nothing_written(genesis)


@pytest.mark.parametrize("limit_usd", [None, 0.01], ids=["fits", "over-budget"])
def test_dry_run_json_estimates_and_enqueues_nothing(genesis, monkeypatch, limit_usd):
    from shared.config import get_settings

    if limit_usd is not None:
        monkeypatch.setenv("GENESIS_BUDGET__LIMIT_USD", str(limit_usd))
    get_settings.cache_clear()
    settings = get_settings()
    result = producer("submit", "--all-agents", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)
    assert {"jobs", "estimated_cost_usd", "by_backend", "within_budget"} <= set(estimate)

    backends = settings.enabled_backends()
    expected = {b: sum(worst_case_costs(settings, b)) for b in backends}
    assert estimate["jobs"] == 5 * 20 * len(backends)
    assert set(estimate["by_backend"]) == set(backends)
    for backend, cost in expected.items():
        assert estimate["by_backend"][backend]["jobs"] == 100
        assert estimate["by_backend"][backend]["cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert estimate["estimated_cost_usd"] == pytest.approx(sum(expected.values()), abs=1e-5)
    allowance = settings.budget.limit_usd * settings.budget.emergency
    assert estimate["within_budget"] is (sum(expected.values()) <= allowance) is (limit_usd is None)
    assert_nothing_written(genesis)
