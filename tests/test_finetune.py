"""`producer finetune status` with the real mistralai SDK against the simulator's models list and
fine-tuning jobs API; fine-tuning cost in the ledger, once per job; `budget export`.

The installed SDK line decides what status can see: 3.x lists models only, 2.x (up to 2.4) also
lists the jobs. Tests that need one line skip on the other, saying so; `merge` is also tested on
the simulator's job bodies directly, so the jobs logic is checked whichever line is installed."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from shared.db import migrate, session_scope
from shared.models import FINE_TUNING, BudgetEvent, CostEntry
from simulator.finetune import FineTuneJob, default_fine_tunes, fine_tuned_card, job_body, job_id_for
from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.postgres import reset_postgres
from tests.support.runs import producer

CONFIG = """
[agents]
names = ["qa", "content", "legal", "support", "analyst"]

[backends.mistral-ft]
provider = "mistral"
role = "candidate"
baseline = "mistral-base"
model_id_file = "{models}/{{agent}}_mistral/model_id.txt"

[backends.mistral-base]
provider = "mistral"
role = "baseline"
model = "open-mistral-7b"

[pricing."open-mistral-7b"]
input_per_mtok = 0.2
output_per_mtok = 0.2
training_per_mtok = 1.0

[pricing."ft:open-mistral-7b:*"]
input_per_mtok = 0.8
output_per_mtok = 0.8

[budget]
limit_usd = 10.0
{extra}
"""
AGENTS = ("qa", "content", "legal", "support", "analyst")


def jobs_api_installed() -> bool:
    from mistralai.client import Mistral

    return hasattr(Mistral(api_key="x"), "fine_tuning")


needs_jobs_api = pytest.mark.skipif(not jobs_api_installed(), reason="the installed mistralai (3.x) has no jobs API")
models_only = pytest.mark.skipif(jobs_api_installed(), reason="the installed mistralai (2.x) has a jobs API")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A copy of the shipped models/ folder: --write-model-ids never touches the checkout's."""
    target = tmp_path / "models"
    shutil.copytree(ROOT / "models", target)
    return target


@pytest.fixture
def env(tmp_path, monkeypatch, models, redis_client, simulator) -> dict[str, str]:
    configure(tmp_path, monkeypatch, models)
    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    monkeypatch.setenv("MISTRAL_BASE_URL", simulator.url)
    return {"url": simulator.url}


def configure(tmp_path: Path, monkeypatch, models: Path, extra: str = "") -> None:
    use_config(monkeypatch, tmp_path, CONFIG.format(models=models, extra=extra), SCRATCH_REDIS_URL)
    migrate(os.environ["GENESIS_DATABASE_URL"])


def status(*args: str) -> dict:
    result = producer("finetune", "status", "--json", *args)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def shipped_id(agent: str) -> str:
    return (ROOT / "models" / f"{agent}_mistral" / "model_id.txt").read_text().strip()


def job(agent: str, version: int, day: int, **fields) -> FineTuneJob:
    return FineTuneJob(id=job_id_for(f"test/{agent}-v{version}"), suffix=f"{agent}-v{version}",
                       created_at=1_770_000_000 + day * 86_400, **fields)


def ledger() -> list[CostEntry]:
    with session_scope() as session:
        return list(session.exec(select(CostEntry).order_by(CostEntry.id)).all())


# --- status ---------------------------------------------------------------------------------


def test_the_default_simulator_matches_the_shipped_model_ids(env):
    payload = status()
    sdk = payload["sdk"]
    assert sdk["package"] == "mistralai" and sdk["jobs_api"] == jobs_api_installed()
    assert sdk["line"] == f"{sdk['version'].split('.')[0]}.x"
    assert set(payload["agents"]) == set(AGENTS) and payload["unassigned"] == []
    for agent, state in payload["agents"].items():
        assert state["current"] == shipped_id(agent) == state["newest_usable"], agent
        assert state["up_to_date"] is True
        models = {item["model_id"]: item for item in state["fine_tunes"] if item["model_id"]}
        assert models[shipped_id(agent)]["usable"] and models[shipped_id(agent)]["archived"] is False
        archived = models[shipped_id(agent).replace("-v3", "-v2")]
        assert archived["archived"] is True and archived["usable"] is False
        assert {item["agent"] for item in state["fine_tunes"]} == {agent}


@models_only
def test_models_only_sdk_shows_cards_and_says_jobs_are_unknown(env):
    payload = status()
    assert "no fine-tuning jobs API" in payload["sdk"]["source"]
    for state in payload["agents"].values():
        assert len(state["fine_tunes"]) == 2  # the failed and running jobs made no model card
        assert {item["status"] for item in state["fine_tunes"]} == {None}
        assert {item["cost_usd"] for item in state["fine_tunes"]} == {None}
    text = producer("finetune", "status").stdout
    assert "3.x line" in text and "producer budget log --operation fine_tuning --source JOB_ID" in text


@needs_jobs_api
def test_jobs_sdk_shows_every_job_with_status_and_cost(env):
    payload = status()
    for agent, state in payload["agents"].items():
        by_status = sorted(item["status"] for item in state["fine_tunes"])
        assert by_status == ["FAILED", "RUNNING", "SUCCESS", "SUCCESS"], agent
        running = next(item for item in state["fine_tunes"] if item["status"] == "RUNNING")
        assert running["model_id"] is None and running["usable"] is False and running["cost_usd"] is None
        costs = {item["model_id"]: (item["cost_usd"], item["cost_source"]) for item in state["fine_tunes"]}
        assert costs[shipped_id(agent)] == (1.2, "api")
        assert costs[shipped_id(agent).replace("-v3", "-v2")] == (pytest.approx(0.8),
                                                                  "trained tokens x training_per_mtok")


def test_several_jobs_per_agent_newest_usable_wins(env, simulator):
    """qa: a newer succeeded model, then a newer failed and a newer running job; legal: its newest
    model is archived; content: a card with a hostile id is left out."""
    simulator.update(fine_tunes=[j.model_dump() for j in [
        *default_fine_tunes(),
        job("qa", 5, 40, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v5", trained_tokens=1_000_000),
        job("qa", 6, 41, status="FAILED", trained_tokens=10),
        job("qa", 7, 42, status="RUNNING"),
        job("legal", 5, 40, fine_tuned_model="ft:open-mistral-7b:genesis:legal-v5", archived=True),
        job("content", 5, 40, fine_tuned_model="=HYPERLINK(\"x\") [red]content-v5"),
    ]])
    payload = status()
    qa, legal, content = (payload["agents"][a] for a in ("qa", "legal", "content"))
    assert qa["newest_usable"] == "ft:open-mistral-7b:genesis:qa-v5" and qa["up_to_date"] is False
    assert legal["newest_usable"] == shipped_id("legal") and legal["up_to_date"] is True
    assert content["newest_usable"] == shipped_id("content")
    assert payload["ignored"] == 1
    assert all("HYPERLINK" not in (item["model_id"] or "") for item in content["fine_tunes"])
    if payload["sdk"]["jobs_api"]:
        statuses = [item["status"] for item in qa["fine_tunes"][:3]]
        assert statuses == ["RUNNING", "FAILED", "SUCCESS"]  # newest first; only the succeeded one is usable
    text = producer("finetune", "status", "--agent", "qa").stdout
    assert "stale: the newest usable is ft:open-mistral-7b:genesis:qa-v5" in text


def test_write_model_ids_changes_only_what_should_change(env, simulator, models):
    simulator.update(fine_tunes=[j.model_dump() for j in [
        *default_fine_tunes(),
        job("qa", 5, 40, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v5"),
        job("qa", 6, 41, status="FAILED"),  # newer, but failed: never replaces a working id
        job("legal", 6, 41, status="RUNNING"),  # newer, still running
        job("support", 5, 40, fine_tuned_model="ft:open-mistral-7b:genesis:support-v5", archived=True),
    ]])
    files = {agent: models / f"{agent}_mistral" / "model_id.txt" for agent in AGENTS}
    for path in files.values():
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = {agent: path.stat().st_mtime_ns for agent, path in files.items()}

    payload = status("--write-model-ids")
    assert payload["written"] == [{"agent": "qa", "file": str(files["qa"]), "old": shipped_id("qa"),
                                   "new": "ft:open-mistral-7b:genesis:qa-v5"}]
    assert files["qa"].read_text() == "ft:open-mistral-7b:genesis:qa-v5\n"
    for agent in ("content", "legal", "support", "analyst"):
        assert files[agent].stat().st_mtime_ns == before[agent], agent
        assert files[agent].read_text().strip() == shipped_id(agent)
    assert payload["agents"]["qa"]["up_to_date"] is True

    again = status("--write-model-ids")  # nothing left to change
    assert again["written"] == []

    simulator.update(fine_tunes=[j.model_dump() for j in [
        *default_fine_tunes(), job("qa", 8, 50, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v8")]])
    files["analyst"].unlink()
    files["analyst"].mkdir()  # a file that cannot be written (as root too): one line, exit 1
    one_line_error(producer("finetune", "status", "--write-model-ids"), 1, "cannot write a model_id.txt")
    files["analyst"].rmdir()
    files["analyst"].write_text(shipped_id("analyst") + "\n")
    assert files["qa"].read_text() == "ft:open-mistral-7b:genesis:qa-v8\n"  # written before analyst's failed
    assert status("--write-model-ids")["written"] == []
    text = producer("finetune", "status").stdout
    assert text.count("up to date") == 5


def test_owner_rule_is_configurable(tmp_path, monkeypatch, models, redis_client, simulator):
    configure(tmp_path, monkeypatch, models, '[finetune]\nowner_pattern = "genesis:{agent}-v2$"')
    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    monkeypatch.setenv("MISTRAL_BASE_URL", simulator.url)
    payload = status()
    for agent, state in payload["agents"].items():
        assert [item["model_id"] for item in state["fine_tunes"]] == [f"ft:open-mistral-7b:genesis:{agent}-v2"]
        assert state["newest_usable"] is None  # v2 is archived
    assert {item["model_id"] for item in payload["unassigned"] if item["model_id"]} == {shipped_id(a) for a in AGENTS}


def test_merge_of_jobs_and_cards_whatever_sdk_line(env):
    """The jobs path on the simulator's own job bodies (as the 2.x SDK's objects expose them)."""
    from shared.config import get_settings
    from shared.finetune import Listing, by_agent, job_cost, merge

    jobs = default_fine_tunes(("qa",))

    def ns(body: dict) -> SimpleNamespace:
        return SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else v for k, v in body.items()})

    items, ignored = merge([ns(fine_tuned_card(j)) for j in jobs if j.fine_tuned_model],
                           [ns(job_body(j)) for j in jobs])
    assert ignored == 0 and len(items) == 4
    states, unassigned = by_agent(get_settings(), Listing("2.4.13", True, items), ["qa"])
    assert unassigned == [] and states[0].newest_usable == shipped_id("qa")
    costs = {item.status + ("/archived" if item.archived else ""): job_cost(get_settings(), item)
             for item in states[0].fine_tunes}
    assert costs == {"RUNNING": None, "SUCCESS": (1.2, "api"), "FAILED": (0.0, "trained tokens x training_per_mtok"),
                     "SUCCESS/archived": (pytest.approx(0.8), "trained tokens x training_per_mtok")}

    # A job whose model the models list lacks (deleted), or whose status is not a status: not usable.
    newest = ns(job_body(job("qa", 5, 40, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v5")))
    odd = ns({**job_body(job("qa", 6, 41, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v6")), "status": "ok!"})
    items, _ = merge([ns(fine_tuned_card(j)) for j in jobs if j.fine_tuned_model] + [ns({
        **fine_tuned_card(job("qa", 6, 41, fine_tuned_model="ft:open-mistral-7b:genesis:qa-v6"))})], [newest, odd])
    by_model = {item.model_id: item for item in items}
    assert by_model["ft:open-mistral-7b:genesis:qa-v5"].listed is False
    assert by_model["ft:open-mistral-7b:genesis:qa-v6"].status == "UNKNOWN"
    states, _ = by_agent(get_settings(), Listing("2.4.13", True, items), ["qa"])
    assert states[0].newest_usable == shipped_id("qa")


# --- bad input and provider errors ----------------------------------------------------------


def one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_unknown_agent_missing_key_unreachable_endpoint_failed_call(env, monkeypatch, simulator):
    one_line_error(producer("finetune", "status", "--agent", "nobody"), 2, "--agent 'nobody' is not an agent")

    monkeypatch.delenv("MISTRAL_API_KEY")
    one_line_error(producer("finetune", "status"), 2, "MISTRAL_API_KEY is not set")
    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MISTRAL_BASE_URL", closed)
    one_line_error(producer("finetune", "status", "--write-model-ids"), 2, "not reachable", closed)

    monkeypatch.setenv("MISTRAL_BASE_URL", f"{simulator.url}/no-such-api")  # answers 404
    one_line_error(producer("finetune", "status"), 1, "the Mistral API call failed (client 404)")
    assert "sim-key" not in producer("finetune", "status").stderr


def test_bad_finetune_config_exits_2(tmp_path, monkeypatch, models, redis_client):
    configure(tmp_path, monkeypatch, models, '[finetune]\nbackend = "mistral-base"')
    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    one_line_error(producer("finetune", "status"), 2, "must be a mistral backend with a model_id_file")
    configure(tmp_path, monkeypatch, models, '[finetune]\nowner_pattern = "no-agent-here"')
    one_line_error(producer("finetune", "status"), 2, "finetune.owner_pattern")


# --- fine-tuning in the ledger --------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_ledgering_the_same_job_twice_adds_nothing(env, monkeypatch, database_url):
    if database_url.startswith("postgresql"):
        reset_postgres(database_url)
        monkeypatch.setenv("GENESIS_DATABASE_URL", database_url)
        from shared.config import get_settings

        get_settings.cache_clear()
        migrate(database_url)
    args = ("budget", "log", "--operation", "fine_tuning", "--source", "job-qa-7", "--agent", "qa",
            "--model", "ft:open-mistral-7b:genesis:qa-v3", "--json", "--cost")
    first = producer(*args, "1.25")
    assert first.exit_code == 0, first.output + first.stderr
    second = producer(*args, "0.5")  # the same job, another figure: still nothing added
    assert second.exit_code == 0, second.output + second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert one["added"] is True and two["added"] is False and two["id"] == one["id"]
    assert two["spent_usd"] == one["spent_usd"] == 1.25
    rows = ledger()
    assert [(r.operation, r.source, r.agent, r.model, r.cost_usd) for r in rows] == [
        (FINE_TUNING, "job-qa-7", "qa", "ft:open-mistral-7b:genesis:qa-v3", 1.25)]
    plain = [arg for arg in args if arg != "--json"]
    assert "already in the ledger" in producer(*plain, "1.25").stdout


def test_fine_tuning_cost_moves_the_budget_level_and_survives_a_rebuild(env, redis_client):
    assert json.loads(producer("budget", "--json").stdout)["level"] == "ok"
    result = producer("budget", "log", "--operation", "fine_tuning", "--source", "job-1", "--cost", "3.0",
                      "--agent", "legal", "--json")
    assert result.exit_code == 0, result.stderr
    budget = json.loads(producer("budget", "--json").stdout)
    assert (budget["spent_usd"], budget["level"]) == (3.0, "warning")  # 30% of $10
    with session_scope() as session:
        assert [e.kind for e in session.exec(select(BudgetEvent).where(BudgetEvent.kind == "warning")).all()] == [
            "warning"]
    redis_client.flushdb()  # Redis loses the counters: rebuilt from SQL, fine-tuning included
    assert json.loads(producer("budget", "--json").stdout)["spent_usd"] == 3.0
    report = producer("budget", "report", "--json")
    text = Path(json.loads(report.stdout)["path"]).read_text()
    assert "| fine\\_tuning | 1 | 0 | 0 | 3.0000 |" in text  # markdown-escaped (shared.report.markdown.md)


@needs_jobs_api
def test_status_ledger_records_each_finished_job_once(env):
    """The simulator's five agents: v2 $0.80 (trained tokens x price) and v3 $1.20 (reported)
    each, $10 in all: the whole $10 limit, so the guard halts as a worker's call would make it."""
    first = status("--ledger")
    assert sorted(round(e["cost_usd"], 6) for e in first["ledgered"]) == [0.8] * 5 + [1.2] * 5
    assert all(e["added"] for e in first["ledgered"])
    budget = json.loads(producer("budget", "--json").stdout)
    assert (budget["spent_usd"], budget["level"], budget["halted"]) == (10.0, "emergency", True)
    again = status("--ledger")
    assert not any(e["added"] for e in again["ledgered"])
    assert len(ledger()) == 10 and json.loads(producer("budget", "--json").stdout)["spent_usd"] == 10.0
    qa = again["agents"]["qa"]["fine_tunes"]
    assert sorted(round(item["ledgered_usd"], 6) for item in qa if item["status"] == "SUCCESS") == [0.8, 1.2]
    assert {entry.source for entry in ledger()} == {item["job_id"] for item in first["ledgered"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (("--operation", "fine_tuning", "--cost", "1"), "needs --source JOB_ID"),
        (("--operation", "fine_tuning", "--cost", "1", "--source", "=cmd|' /C calc'!A0"), "fine-tuning job id"),
        (("--operation", "inference", "--cost", "1", "--source", "job-1"), "--source and --model go with"),
        (("--operation", "fine_tuning", "--cost", "1", "--source", "job-1", "--agent", "nobody"), "--agent 'nobody'"),
        (("--operation", "fine_tuning", "--cost", "-1", "--source", "job-1"), "--cost"),
        (("--operation", "fine_tuning", "--cost", "inf", "--source", "job-1"), "finite"),
        (("--operation", "fine_tuning", "--cost", "nan", "--source", "job-1"), "finite"),
    ],
)
def test_bad_fine_tuning_log_exits_2_and_writes_nothing(env, args, message):
    one_line_error(producer("budget", "log", *args), 2, message)
    assert ledger() == []


# --- the ledger as a file -------------------------------------------------------------------


def fill_ledger() -> None:
    from shared.budget import BudgetGuard
    from shared.config import get_settings

    guard = BudgetGuard.from_settings(get_settings())
    with session_scope() as session:
        session.add(CostEntry(run_id="r1", job_id=1, agent="qa", backend="mistral-ft", model="ft:x", input_tokens=120,
                              output_tokens=30, cost_usd=0.000123, operation="inference"))
        session.add(CostEntry(run_id="r1", job_id=1, agent="qa", backend="openai", model='gpt "4o", mini\nx',
                              cost_usd=0.1, operation="judge"))
    guard.rebuild()
    guard.log_manual(agent=None, operation="manual", cost_usd=0.3333333)
    producer("budget", "log", "--operation", "fine_tuning", "--source", "job-9", "--cost", "1.1", "--agent", "qa")


def test_budget_export_csv_round_trips_with_the_budget_sum(env, tmp_path):
    fill_ledger()
    target = tmp_path / "ledger.csv"
    result = producer("budget", "export", "--format", "csv", "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert "4 ledger entries written" in result.stderr
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "at", "run_id", "job_id", "agent", "backend", "model", "operation",
                             "input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "source"]
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    assert [r["operation"] for r in rows] == ["inference", "judge", "manual", "fine_tuning"]
    assert rows[1]["model"] == 'gpt "4o", mini\nx' and rows[3]["source"] == "job-9"
    assert all(r["at"].endswith("+00:00") for r in rows)
    spent = json.loads(producer("budget", "--json").stdout)["spent_usd"]
    assert round(sum(float(r["cost_usd"]) for r in rows), 6) == spent == round(0.000123 + 0.1 + 0.333333 + 1.1, 6)


def test_budget_export_jsonl_to_stdout_and_bad_input(env, tmp_path):
    fill_ledger()
    result = producer("budget", "export", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in io.StringIO(result.stdout)]
    assert [line["operation"] for line in lines] == ["inference", "judge", "manual", "fine_tuning"]
    assert lines[0]["job_id"] == 1 and lines[0]["input_tokens"] == 120
    one_line_error(producer("budget", "export", "--output", str(tmp_path / "missing" / "x.csv")), 2, "--output")
    bad_format = producer("budget", "export", "--format", "xml")
    assert bad_format.exit_code == 2 and "xml" in bad_format.stderr
    assert "csv" in producer("budget", "export", "--help").stdout


def test_budget_export_streams_past_one_chunk(env):
    from shared.budget.ledger import ledger_rows

    with session_scope() as session:
        session.add_all([CostEntry(job_id=n, operation="inference", cost_usd=0.01) for n in range(1, 11)])
    rows = list(ledger_rows(chunk=3))
    assert [row["job_id"] for row in rows] == list(range(1, 11))


# --- the simulator's fine-tuning API --------------------------------------------------------


def test_simulator_pages_jobs_and_gets_one(simulator):
    total = len(default_fine_tunes())
    seen = []
    for page in range(10):
        body = httpx2.get(f"{simulator.url}/v1/fine_tuning/jobs", params={"page": page, "page_size": 7}).json()
        assert body["total"] == total and body["object"] == "list"
        if not body["data"]:
            break
        seen += body["data"]
    assert len(seen) == total == len({job["id"] for job in seen})
    created = [job["created_at"] for job in seen]
    assert created == sorted(created, reverse=True)
    one = httpx2.get(f"{simulator.url}/v1/fine_tuning/jobs/{seen[0]['id']}").json()
    assert one["id"] == seen[0]["id"] and one["events"][0]["data"]["status"] == seen[0]["status"]
    assert httpx2.get(f"{simulator.url}/v1/fine_tuning/jobs/nope").status_code == 404
    assert httpx2.get(f"{simulator.url}/v1/fine_tuning/jobs", params={"page_size": 0}).status_code == 422
    with pytest.raises(ValueError):
        simulator.update(fine_tunes=[{"id": "x", "status": "RUNNING", "fine_tuned_model": "ft:a"}])


@needs_jobs_api
def test_the_2x_sdk_validates_the_simulators_job_list_and_job(env, simulator):
    from shared.providers.clients import build_mistral

    client = build_mistral("sim-key", simulator.url, 10)
    page = client.fine_tuning.jobs.list(page=1, page_size=3)
    assert page.total == 20 and len(page.data) == 3
    one = client.fine_tuning.jobs.get(job_id=page.data[0].id)
    assert (one.id, one.status, one.model) == (page.data[0].id, page.data[0].status, "open-mistral-7b")


def test_simulator_fine_tunes_file_option(tmp_path):
    import typer

    from simulator.cli import read_fine_tunes

    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"id": "job-1", "suffix": "qa-v9", "status": "RUNNING"}]))
    assert read_fine_tunes(jobs) == [{"id": "job-1", "suffix": "qa-v9", "status": "RUNNING"}]
    jobs.write_text("[{")
    with pytest.raises(typer.BadParameter):
        read_fine_tunes(jobs)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_migration_0006_keeps_earlier_fine_tuning_rows(database_url):
    """Rows logged by hand before 0006 (all with source `manual`) get their id appended, so the
    unique index can be built and none is lost."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from shared.db import MIGRATIONS_DIR, get_engine

    if database_url.startswith("postgresql"):
        reset_postgres(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["engine"] = get_engine(database_url)
    command.upgrade(config, "0004")
    with get_engine(database_url).begin() as conn:
        for cost in (1.0, 2.0):
            conn.execute(text("INSERT INTO cost_entry (at, operation, input_tokens, output_tokens, cost_usd, source) "
                              "VALUES (CURRENT_TIMESTAMP, 'fine_tuning', 0, 0, :cost, 'manual')"), {"cost": cost})
        conn.execute(text("INSERT INTO cost_entry (at, operation, input_tokens, output_tokens, cost_usd, source) "
                          "VALUES (CURRENT_TIMESTAMP, 'manual', 0, 0, 0.5, 'manual')"))
    command.upgrade(config, "head")
    with get_engine(database_url).connect() as conn:
        rows = conn.execute(text("SELECT id, operation, source, cost_usd FROM cost_entry ORDER BY id")).all()
    assert [(op, source, cost) for _, op, source, cost in rows] == [
        ("fine_tuning", f"manual:{rows[0][0]}", 1.0), ("fine_tuning", f"manual:{rows[1][0]}", 2.0),
        ("manual", "manual", 0.5)]
    with pytest.raises(IntegrityError), get_engine(database_url).begin() as conn:
        conn.execute(text("INSERT INTO cost_entry (at, operation, input_tokens, output_tokens, cost_usd, source) "
                          f"VALUES (CURRENT_TIMESTAMP, 'fine_tuning', 0, 0, 1, 'manual:{rows[0][0]}')"))


def test_a_failed_call_whose_error_text_looks_like_markup_is_one_line(monkeypatch, capsys):
    """Provider error text is hostile: `[/v1]` in it is printed, not parsed as Rich markup."""
    import typer

    import shared.finetune
    from producer import finetune_cli

    def refuse(_client):
        raise RuntimeError("upstream said [/v1] [bold]no[/bold]")

    monkeypatch.setattr(shared.finetune, "fetch", refuse)
    with pytest.raises(typer.Exit) as exited:
        finetune_cli._fetch(object(), "http://127.0.0.1:1")
    assert exited.value.exit_code == 1
    assert "[/v1] [bold]no[/bold]" in capsys.readouterr().err
