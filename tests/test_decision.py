"""The decision end to end: real workers answer through the real SDKs from the simulator at
chosen qualities; `producer report --gate`, `export` and `compare` read what SQL holds; the
report reaches the producer's own reports folder from SQL wherever a worker built it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.support.runs import producer
from tests.support.waiting import wait_for

PAIR = ["--backend", "mistral-ft", "--backend", "mistral-base"]  # the candidate and its baseline


def run_to_completion(*args: str) -> dict:
    result = producer("submit", "--all-agents", *PAIR, *args, "--wait", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def gate(run_id: str) -> tuple[int, dict]:
    result = producer("report", run_id, "--gate", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_a_much_better_fine_tune_is_go_and_equal_models_never_are(fast_limits, simulator, start_worker, tmp_path):
    simulator.update(quality={"ft:*": 0.90, "open-mistral-7b": 0.60}, latency_ms=5)
    start_worker("w1", concurrency=16)
    better = run_to_completion()
    assert better["status"] == "completed" and better["jobs"] == 200
    assert better["decision"]["overall"] == "GO"
    code, report = gate(better["run_id"])
    assert code == 0 and report["decision"]["overall"] == "GO"
    data = json.loads(Path(report["json"]).read_text())
    pooled = next(c for c in data["comparisons"] if c["agent"] == "ALL")
    assert pooled["n"] == 100 and pooled["ci95_abs"][0] > 0
    assert pooled["improvement_rel"] >= data["min_improvement"]

    equal_runs = []
    for seed in (11, 12, 13):  # the simulator's answers are a hash of (seed, model, prompt)
        simulator.update(quality={"ft:*": 0.75, "open-mistral-7b": 0.75}, seed=seed)
        equal = run_to_completion()
        assert equal["decision"]["overall"] != "GO", equal
        code, _ = gate(equal["run_id"])
        assert code == 1
        equal_runs.append(equal["run_id"])

    # compare: the equal run (B) against the better one (A), per (agent, backend).
    compared = producer("compare", better["run_id"], equal_runs[0], "--json")
    assert compared.exit_code == 0, compared.output
    rows = {(r["agent"], r["backend"]): r for r in json.loads(compared.stdout)["rows"]}
    assert len(rows) == 10 and all(r["n"] == 20 for r in rows.values())
    ft_gap = [r["difference_abs"] for (agent, backend), r in rows.items() if backend == "mistral-ft"]
    assert sum(ft_gap) / len(ft_gap) < 0  # 0.75 after 0.90: the fine-tune got worse
    qa = rows[("qa", "mistral-ft")]
    assert qa["difference_abs"] == pytest.approx(qa["b_accuracy"] - qa["a_accuracy"])
    assert qa["ci95_abs"][0] <= qa["difference_abs"] <= qa["ci95_abs"][1] and 0 < qa["p_value"] <= 1
    table = producer("compare", better["run_id"], equal_runs[0])
    assert table.exit_code == 0 and table.stdout.count("\n") == 12 and "| qa | mistral-ft | 20 |" in table.stdout

    # export: one row per job, CSV to stdout and JSONL to a file.
    exported = producer("export", better["run_id"])
    assert exported.exit_code == 0
    rows_csv = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows_csv) == 200
    assert {"agent", "task_id", "backend", "model", "status", "score", "latency_ms", "input_tokens",
            "output_tokens", "cost_usd"} <= set(rows_csv[0])
    assert sum(float(r["score"]) for r in rows_csv if r["backend"] == "mistral-ft") / 100 == pytest.approx(
        pooled["candidate_accuracy"])
    out = tmp_path / "jobs.jsonl"
    assert producer("export", better["run_id"], "--format", "jsonl", "--output", str(out)).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 200 and all(line["status"] == "ok" for line in lines)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "no-such-run", "--gate"],
        ["export", "no-such-run"],
        ["compare", "no-such-run", "other-run"],
        ["export", "no-such-run", "--format", "xml"],
        ["export", "no-such-run", "--output", "/no/such/folder/out.csv"],
    ],
)
def test_bad_input_exits_2_with_one_line(genesis, args):
    result = producer(*args)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error:") and "Traceback" not in result.output
    assert len(message.splitlines()) == 1, message
    assert result.stdout == ""


def test_the_report_reaches_the_producers_folder_from_sql(fast_limits, simulator, start_worker, genesis, tmp_path):
    worker_reports = tmp_path / "worker-host-reports"
    producer_reports = Path(genesis["GENESIS_REPORTS_DIR"])
    start_worker("w1", concurrency=8, env={"GENESIS_REPORTS_DIR": str(worker_reports)})
    done = run_to_completion("--limit", "4")
    run_id = done["run_id"]

    assert Path(done["report"]) == producer_reports / run_id / "report.md"
    built_by_worker = worker_reports / run_id / "report.json"
    wait_for(built_by_worker.exists, timeout=10, what="the worker's own copy")
    assert (producer_reports / run_id / "report.json").read_text() == built_by_worker.read_text()
    assert (producer_reports / run_id / "report.html").read_text() == (worker_reports / run_id / "report.html").read_text()

    from shared.db import session_scope
    from shared.models import RunReport

    with session_scope() as session:
        stored = session.get(RunReport, run_id)
        assert stored.overall == done["decision"]["overall"] and json.loads(stored.data_json)["run_id"] == run_id

    for name in ("report.md", "report.json", "report.html"):
        (producer_reports / run_id / name).unlink()
    rebuilt = producer("report", run_id, "--json")
    assert rebuilt.exit_code == 0
    assert Path(json.loads(rebuilt.stdout)["html"]).parent == producer_reports / run_id
    assert all((producer_reports / run_id / name).is_file() for name in ("report.md", "report.json", "report.html"))
