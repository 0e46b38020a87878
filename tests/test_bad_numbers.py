"""Bad numbers never damage data (issue 19, part 3): every number a user types (CLI options,
GENESIS_* variables, the TOML, simulator knobs) is finite and in range, refused in one line with
exit 2 and nothing written; the ledger itself refuses a cost that is not a finite amount >= 0,
and a row damaged before that does not stop the budget's rebuild."""

from __future__ import annotations

import logging
import math
import sys

import pytest
from sqlalchemy import func, insert, text
from sqlmodel import select

from shared.config import ConfigError, load_settings
from shared.db import session_scope
from shared.models import BudgetEvent, CostEntry
from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.runs import one_line_error, producer

CONFIG = (ROOT / "config" / "genesis.toml").read_text()


@pytest.fixture
def world(tmp_path, monkeypatch, redis_client):
    """The shipped config on a fresh SQLite file and a flushed Redis, with one good ledger entry
    already written (so a rebuild has something to count)."""
    use_config(monkeypatch, tmp_path, CONFIG, SCRATCH_REDIS_URL)
    assert producer("budget", "log", "--operation", "manual", "--cost", "0.5").exit_code == 0
    return redis_client


def written(redis_client) -> tuple:
    """Everything a command could have written: ledger rows, budget events, Redis keys and values."""
    settings = load_settings()
    with session_scope(settings.database_url) as session:
        entries = session.exec(select(func.count()).select_from(CostEntry)).one()
        events = session.exec(select(func.count()).select_from(BudgetEvent)).one()
    keys = {key: redis_client.dump(key) for key in redis_client.keys("*")}
    return entries, events, keys




@pytest.mark.parametrize(("args", "named"), [
    (["budget", "log", "--operation", "manual", "--cost", "inf"], "finite"),
    (["budget", "log", "--operation", "manual", "--cost", "nan"], "finite"),
    (["budget", "log", "--operation", "manual", "--cost", "-inf"], "finite"),
    (["budget", "log", "--operation", "manual", "--cost", "1e999"], "finite"),
    (["budget", "log", "--operation", "manual", "--cost", "-0.01"], "greater than or equal to 0"),
    (["budget", "resume", "--limit", "inf"], "finite"),
    (["budget", "resume", "--limit", "nan"], "finite"),
    (["budget", "resume", "--limit", "0"], "greater than 0"),
    (["metrics", "--port", "99999"], "less than or equal to 65535"),
    (["metrics", "--port", "-1"], "greater than or equal to 0"),
    (["runs", "--limit", "0"], "greater than or equal to 1"),
    (["submit", "--all-agents", "--limit", "nan"], "valid integer"),
    (["simulator", "--port", "70000"], "less than or equal to 65535"),
    (["simulator", "--latency-ms", "nan"], "--latency-ms"),
    (["simulator", "--latency-jitter-ms", "inf"], "--latency-jitter-ms"),
    (["simulator", "--timeout-s", "inf"], "--timeout-s"),
    (["simulator", "--usage-scale", "nan"], "--usage-scale"),
    (["simulator", "--default-quality", "nan"], "--default-quality"),
    (["simulator", "--quality", "ft:*=nan"], "--quality"),
    (["simulator", "--error-rate", "500=inf"], "--error-rate"),
    (["simulator", "--rpm", "0"], "--rpm"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_number_on_the_command_line_is_one_line_and_writes_nothing(world, args, named):
    before = written(world)
    line = one_line_error(producer(*args))
    assert named in line
    assert written(world) == before


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("GENESIS_BUDGET__LIMIT_USD", "nan", "budget.limit_usd: Input should be a finite number"),
    ("GENESIS_BUDGET__LIMIT_USD", "inf", "budget.limit_usd: Input should be a finite number"),
    ("GENESIS_BUDGET__LIMIT_USD", "0", "budget.limit_usd: Input should be greater than 0"),
    ("GENESIS_BUDGET__WARNING", "nan", "budget.warning"),
    ("GENESIS_RETRY__CALL_TIMEOUT_S", "inf", "retry.call_timeout_s"),
    ("GENESIS_RETRY__BACKOFF_BASE_S", "-1", "retry.backoff_base_s"),
    ("GENESIS_DECISION__MIN_IMPROVEMENT", "nan", "decision.min_improvement"),
    ("GENESIS_RECOVERY__LEASE_S", "inf", "recovery.lease_s"),
    ("GENESIS_REUSE__MAX_AGE_DAYS", "nan", "reuse.max_age_days"),
    ("GENESIS_WORKER__CONCURRENCY", "0", "worker.concurrency"),
    ("GENESIS_DECISION__SEED", "-1", "decision.seed"),
])
def test_a_bad_number_in_the_environment_is_one_line_and_writes_nothing(world, monkeypatch, variable, value, named):
    from shared.config import get_settings

    before = written(world)
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    for command in (["budget"], ["budget", "log", "--operation", "manual", "--cost", "1"], ["budget", "resume"]):
        assert named in one_line_error(producer(*command))
    monkeypatch.delenv(variable)
    assert written(world) == before


@pytest.mark.parametrize(("added", "named"), [
    ('[pricing."x-model"]\ninput_per_mtok = inf\noutput_per_mtok = 1', "input_per_mtok: Input should be a finite number"),
    ('[pricing."x-model"]\ninput_per_mtok = 1\noutput_per_mtok = nan', "output_per_mtok: Input should be a finite number"),
    ("[limits.x-provider]\nrpm = 0", "limits.x-provider.rpm: Input should be greater than 0"),
    ("limit_usd = -inf", "budget.limit_usd: Input should be a finite number"),
    ("limit_usd = nan", "budget.limit_usd: Input should be a finite number"),
    ("max_tokens = 1000000000000", "judge.max_tokens: Input should be less than or equal to 1000000"),
])
def test_a_bad_number_in_the_toml_is_one_line(tmp_path, monkeypatch, redis_client, added, named):
    """TOML itself has inf and nan literals."""
    replaced = next((line for line in ("limit_usd = 30.0", "max_tokens = 200")
                     if added.split(" =")[0] == line.split(" =")[0]), None)
    edited = CONFIG.replace(replaced, added, 1) if replaced else f"{CONFIG}\n{added}\n"
    assert edited != CONFIG
    use_config(monkeypatch, tmp_path, edited, SCRATCH_REDIS_URL)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert named in str(refused.value)
    assert named in one_line_error(producer("budget"))


def test_the_simulator_config_refuses_non_finite_knobs():
    from pydantic import ValidationError

    from simulator.config import SimulatorConfig

    for knobs in ({"latency_ms": math.inf}, {"timeout_s": math.nan}, {"quality": {"ft:*": math.nan}},
                  {"error_rates": {500: math.inf}}, {"usage_scale": math.inf}, {"batch_create_delay_s": math.inf}):
        with pytest.raises(ValidationError, match="finite number"):
            SimulatorConfig(**knobs)
    with pytest.raises(ValidationError, match="batch_expire_rate and batch_fail_rate add up to more than 1"):
        SimulatorConfig(batch_expire_rate=0.6, batch_fail_rate=0.5)
    assert SimulatorConfig(batch_expire_rate=0.5, batch_fail_rate=0.5).batch_fail_rate == 0.5


@pytest.mark.parametrize("cost", [math.inf, -math.inf, math.nan, -0.5])
def test_the_ledger_refuses_a_bad_cost_on_every_write_path(world, cost):
    """An ORM add (manual entries, the judge's entry) and a Core insert (a job's result) alike."""
    settings = load_settings()
    before = written(world)
    with pytest.raises(Exception, match="a ledger cost must be a finite number"):
        with session_scope(settings.database_url) as session:
            session.add(CostEntry(operation="manual", cost_usd=cost, source="manual"))
    with pytest.raises(Exception, match="a ledger cost must be a finite number"):
        with session_scope(settings.database_url) as session:
            session.execute(insert(CostEntry.__table__).values(operation="inference", cost_usd=cost))
    assert written(world) == before


def test_a_damaged_ledger_row_is_left_out_of_the_rebuild_with_one_line(world, caplog):
    """A row written before the ledger refused it (SQLite reads 9e999 as infinity): every later
    budget rebuild used to fail on it."""
    from shared.budget import BudgetGuard

    settings = load_settings()
    with session_scope(settings.database_url) as session:
        session.execute(text("INSERT INTO cost_entry (at, operation, input_tokens, output_tokens, cost_usd, source) "
                             "VALUES ('2026-01-01 00:00:00', 'manual', 0, 0, 9e999, 'manual')"))
        session.execute(text("INSERT INTO budget_event (at, kind, level, spent_usd, limit_usd, message) "
                             "VALUES ('2026-01-01 00:00:00', 'limit', 'ok', 0, 9e999, 'resume --limit inf')"))
    world.flushdb()  # Redis lost: the next command rebuilds from SQL
    guard = BudgetGuard(world, settings)
    with caplog.at_level(logging.WARNING, logger="genesis.budget"):
        state = guard.status()
    assert state["spent_usd"] == pytest.approx(0.5) and state["limit_usd"] == settings.budget.limit_usd
    damaged = [r.getMessage() for r in caplog.records if "not a finite amount" in r.getMessage()
               or "not a positive finite amount" in r.getMessage()]
    assert len(damaged) == 2, caplog.text
    result = producer("budget", "--json")
    assert result.exit_code == 0, result.output


def test_a_postgresql_url_without_the_postgres_extra_is_one_line(tmp_path, monkeypatch, redis_client):
    use_config(monkeypatch, tmp_path, CONFIG, SCRATCH_REDIS_URL)
    monkeypatch.setenv("GENESIS_DATABASE_URL", "postgresql+psycopg://genesis@127.0.0.1:1/no-driver-here")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    from shared.config import get_settings

    get_settings.cache_clear()
    for command in (["runs"], ["status", "r"], ["budget"]):
        line = one_line_error(producer(*command))
        assert "pip install 'genesis-bench[postgres]'" in line and "ModuleNotFoundError" not in line
