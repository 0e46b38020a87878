"""Bad input that used to bring a traceback, be accepted, or damage the budget (issue 27: bounded
amounts, bad input): each is one clear line with a non-zero exit, and nothing is written: no
ledger row or budget event, no Redis key, no file."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from shared.config import ConfigError, load_settings
from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.runs import producer
from tests.test_bad_numbers import CONFIG, world, written  # noqa: F401  (world: a fixture)
from tests.test_clean_edges import one_line_error

AGENTS = ("qa", "content", "legal", "support", "analyst")


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under `root`, but SQLite's own (`written` compares what SQL holds)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and not path.name.startswith("t.db")}


# --- bounded amounts (M6, P2b) ---------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["budget", "log", "--operation", "manual", "--cost", "1e13"],
    ["budget", "log", "--operation", "manual", "--cost", "1e300"],
    ["budget", "log", "--operation", "manual", "--cost", "1000000.01"],
    ["budget", "log", "--operation", "fine_tuning", "--source", "ftjob-1", "--cost", "1e13"],
    ["budget", "resume", "--limit", "1e300"],
    ["budget", "resume", "--limit", "1000001"],
], ids=" ".join)
def test_an_amount_past_the_bound_is_one_line_and_writes_nothing(world, args):
    """`budget log --cost 1e13` overflowed Redis' int64 counter and bricked every later settle."""
    before = written(world)
    assert "less than or equal to 1000000" in one_line_error(producer(*args), 2)
    assert written(world) == before
    assert producer("budget", "log", "--operation", "manual", "--cost", "1").exit_code == 0  # still working


def test_an_amount_at_the_bound_is_taken_and_the_budget_keeps_settling(world):
    for _ in range(3):
        result = producer("budget", "log", "--operation", "manual", "--cost", "1000000", "--json")
        assert result.exit_code == 0, result.output
    assert producer("budget", "resume", "--limit", "1000000").exit_code == 0
    result = producer("budget", "log", "--operation", "manual", "--cost", "1", "--json")
    assert result.exit_code == 0, result.output
    assert '"spent_usd": 3000001.5' in result.stdout


def test_the_ledger_and_the_guard_refuse_an_amount_past_the_bound_whoever_writes_it(world):
    """The bound lives in shared.numbers and holds on the write path itself, not only in the CLI."""
    from sqlalchemy import insert

    from shared.budget import BudgetGuard
    from shared.db import session_scope
    from shared.finetune import FineTune, fine_tuning_entry, job_cost
    from shared.models import CostEntry

    settings = load_settings()
    before = written(world)
    with pytest.raises(Exception, match="a ledger cost must be a finite number of dollars from 0 to 1,000,000"):
        with session_scope(settings.database_url) as session:
            session.add(CostEntry(operation="manual", cost_usd=1e13, source="manual"))
    with pytest.raises(Exception, match="a ledger cost must be a finite number of dollars from 0 to 1,000,000"):
        with session_scope(settings.database_url) as session:
            session.execute(insert(CostEntry.__table__).values(operation="inference", cost_usd=1e13))
    with pytest.raises(ConfigError, match="fine-tuning cost"):
        fine_tuning_entry("ftjob-1", 1e13)  # a provider-reported cost (`finetune status --ledger`)
    huge = FineTune(model_id=None, job_id="ftjob-2", base_model="open-mistral-7b", created=None, archived=None,
                    status="SUCCESS", trained_tokens=10**15)  # $1/Mtok: $1e9
    assert job_cost(settings, huge) is None  # no known cost, never a ledger entry
    assert job_cost(settings, replace(huge, trained_tokens=10**6)) == (1.0, "trained tokens x training_per_mtok")
    with pytest.raises(ValueError, match="at most"):
        BudgetGuard(world, settings).resume(limit_usd=1e300)
    assert written(world) == before


def test_a_command_redis_refuses_is_not_called_an_outage(world):
    """The counter already past int64 (as `--cost 1e13` left it): the SQL row is written, then
    Redis refuses the settle. That is no outage, and "nothing more was done" would be false."""
    assert world.hget("genesis:budget:state", "spent") is not None
    world.hset("genesis:budget:state", "spent", str(2**63 - 10))
    line = one_line_error(producer("budget", "log", "--operation", "manual", "--cost", "1"), 1)
    assert "refused a command" in line and "kept" in line
    assert "not answering" not in line and "nothing more was done" not in line


def test_the_run_level_limit_is_bounded():
    line = one_line_error(producer("submit", "--all-agents", "--dry-run", "--limit", "99999999999999999999999"), 2)
    assert "--limit" in line and "less than or equal to" in line


# --- bad input in the config and its files (P1, P2) --------------------------------------------


@pytest.fixture
def config_tree(tmp_path, monkeypatch, redis_client):
    """The shipped config in tmp_path with its own model_id.txt files (one per agent), its
    SQLite file in tmp_path too (so `files_under` sees any SQL write) and a flushed Redis."""
    for agent in AGENTS:
        folder = tmp_path / "models" / f"{agent}_mistral"
        folder.mkdir(parents=True)
        shutil.copy(ROOT / "models" / f"{agent}_mistral" / "model_id.txt", folder / "model_id.txt")
    text = CONFIG.replace('model_id_file = "models/', f'model_id_file = "{tmp_path}/models/', 1)
    assert text != CONFIG
    use_config(monkeypatch, tmp_path, text, SCRATCH_REDIS_URL)
    return tmp_path


def _edit_config(tree: Path, old: str, new: str) -> None:
    config = tree / "genesis.toml"
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))


def _append_config(tree: Path, added: str) -> None:
    with (tree / "genesis.toml").open("a") as config:
        config.write(f"\n{added}\n")


def _write_model_id(tree: Path, content: bytes) -> None:
    (tree / "models" / "qa_mistral" / "model_id.txt").write_bytes(content)


CONFIG_CASES = {
    "non-UTF-8 TOML": (lambda tree: (tree / "genesis.toml").write_bytes(
        (tree / "genesis.toml").read_bytes() + b"\n# caf\xe9\n"), "not UTF-8 text (byte 0xe9"),
    "model_id_file with {0}": (lambda tree: _edit_config(tree, "{agent}_mistral", "{0}_mistral"),
                               "model_id_file may hold {agent} and no other {field}"),
    "model_id_file with {agent.x}": (lambda tree: _edit_config(tree, "{agent}_mistral", "{agent.x}_mistral"),
                                     "model_id_file may hold {agent}"),
    "non-UTF-8 model_id.txt": (lambda tree: _write_model_id(tree, b"ft:open-mistral-7b:genesis:qa-\xff\n"),
                               "qa_mistral/model_id.txt: not UTF-8 text (byte 0xff"),
    "two-line model_id.txt": (lambda tree: _write_model_id(
        tree, b"ft:open-mistral-7b:genesis:qa-v3\nrm -rf / ; <script>alert(1)</script>\n"),
        "qa_mistral/model_id.txt: has a second line; a model id is one line"),
    "model_id.txt with an escape": (lambda tree: _write_model_id(tree, b"ft:open-mistral-7b:genesis:qa\x1bc\n"),
                                    "has a control character"),
    "limit_usd = 1e300": (lambda tree: _edit_config(tree, "limit_usd = 30.0", "limit_usd = 1e300"),
                          "budget.limit_usd: Input should be less than or equal to 1000000"),
    "call_timeout_s = 1e308": (lambda tree: _edit_config(tree, "call_timeout_s = 60.0", "call_timeout_s = 1e308"),
                               "retry.call_timeout_s: Input should be less than or equal to"),
    "lease_s = 1e308": (lambda tree: _edit_config(tree, "# lease_s = 90.0", "lease_s = 1e308"),
                        "recovery.lease_s: Input should be less than or equal to"),
    "a price past the bound": (lambda tree: _append_config(
        tree, '[pricing."x"]\ninput_per_mtok = 1e13\noutput_per_mtok = 1'), "input_per_mtok: Input should be less"),
    "agent name ../": (lambda tree: _edit_config(tree, '"analyst"]', '"../../../tmp/evil"]'),
                       "agent name '../../../tmp/evil' is not a plain name"),
    "agent name with a space": (lambda tree: _edit_config(tree, '"analyst"]', '"an alyst"]'), "not a plain name"),
}


def redis_keys(redis_client) -> dict:
    return {key: redis_client.dump(key) for key in redis_client.keys("*")}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_input_is_one_line_and_writes_nothing(config_tree, redis_client, monkeypatch, case):
    monkeypatch.setenv("MISTRAL_API_KEY", "not-used")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-used")
    break_it, named = CONFIG_CASES[case]
    break_it(config_tree)
    before_files, before_keys = files_under(config_tree), redis_keys(redis_client)
    assert not list(config_tree.glob("t.db*"))
    for command in (["submit", "--all-agents", "--dry-run"], ["submit", "--all-agents"], ["budget"]):
        if command == ["budget"] and "model_id.txt" in case:
            continue  # the budget reads no model id
        assert named in one_line_error(producer(*command), 2)
    assert files_under(config_tree) == before_files and redis_keys(redis_client) == before_keys
    assert not list(config_tree.glob("t.db*"))  # no database made either


@pytest.mark.parametrize("url", ["garbage", "http://127.0.0.1:6385/0", "redis://127.0.0.1:port/0",
                                 "redis://:s3cret-pw@127.0.0.1:6385/zero"])
def test_a_garbage_redis_url_is_one_line_without_its_password(world, monkeypatch, url):
    from shared.config import get_settings

    before = written(world)
    monkeypatch.setenv("GENESIS_REDIS_URL", url)
    get_settings.cache_clear()
    for command in (["budget"], ["budget", "log", "--operation", "manual", "--cost", "1"], ["runs"]):
        line = one_line_error(producer(*command), 2)
        assert "redis_url" in line and "s3cret-pw" not in line
    monkeypatch.delenv("GENESIS_REDIS_URL")
    get_settings.cache_clear()
    assert written(world) == before


# --- files and folders that cannot be written (P1) ---------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into: mode 0555, and immutable when we are root (root
    writes through modes)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        immutable = False
    try:
        if os.access(folder, os.W_OK) and not immutable:
            pytest.skip("no way to make a folder read-only for this user here (root without chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.fixture
def a_run(world, monkeypatch):
    """One submitted run (queued, no workers), for `export` and `report`."""
    import json

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    result = producer("submit", "--agent", "qa", "--backend", "openai", "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def _unwritable_output(kind: str, tmp_path: Path, read_only: Path) -> Path:
    if kind == "a directory":
        (tmp_path / "a-dir").mkdir()
        return tmp_path / "a-dir"
    return read_only / "out.csv"


@pytest.mark.parametrize("kind", ["a directory", "in a read-only folder"])
@pytest.mark.parametrize("command", [["export", "RUN"], ["budget", "export"]], ids=" ".join)
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(a_run, world, tmp_path, read_only_folder,
                                                                        kind, command):
    output = _unwritable_output(kind, tmp_path, read_only_folder)
    args = [a_run if part == "RUN" else part for part in command]
    before_files, before = files_under(tmp_path), written(world)
    line = one_line_error(producer(*args, "--output", str(output)), 2)
    assert f"cannot write {output}" in line
    assert files_under(tmp_path) == before_files and written(world) == before


@pytest.mark.parametrize("kind", ["read-only", "under a regular file"])
@pytest.mark.parametrize("command", [["report", "RUN", "--partial"], ["budget", "report"]], ids=" ".join)
def test_a_reports_folder_that_cannot_be_written_is_one_line(a_run, world, tmp_path, monkeypatch, read_only_folder,
                                                            kind, command):
    from shared.config import get_settings

    if kind == "read-only":
        reports = read_only_folder
    else:
        (tmp_path / "a-file").write_text("not a folder\n")
        reports = tmp_path / "a-file" / "reports"
    monkeypatch.setenv("GENESIS_REPORTS_DIR", str(reports))
    get_settings.cache_clear()
    before_files = files_under(tmp_path)
    line = one_line_error(producer(*[a_run if part == "RUN" else part for part in command]), 2)
    assert "cannot write" in line and str(reports) in line
    assert files_under(tmp_path) == before_files


@pytest.mark.sockets
def test_a_simulator_port_in_use_is_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(producer("simulator", "--port", str(port)), 2)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line
