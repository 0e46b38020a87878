"""Key pools (issue #29, design §14): the config's shapes, the limiter's pool choice, ceiling and
benched keys against real Redis, submit's check of every variable, and a revoked key with real
workers, real Redis and the simulator answering 401 in OpenAI's format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import ConfigError, Settings
from shared.keypools import KeyPool
from shared.limiter import Permit, RateLimiter, Refused
from tests.support.runs import ledger_rows, run_jobs, submit, wait_until_reported

TWO = ["A_KEY", "B_KEY"]


def backend(**fields: Any) -> dict:
    return {"provider": "openai", "model": "m", **fields}


# --- the config ------------------------------------------------------------------------------


def test_each_key_is_a_pool_named_after_its_variable_unless_grouped() -> None:
    settings = Settings(backends={
        "plain": backend(), "own": backend(api_key_env="OWN_KEY"), "two": backend(api_key_env=TWO),
        "grouped": backend(api_key_env=["C_KEY", "D_KEY", "E_KEY"], pools={"team": ["D_KEY", "E_KEY"]}),
    })
    assert settings.key_pools("plain") == (KeyPool("OPENAI_API_KEY", ("OPENAI_API_KEY",)),)
    assert settings.key_pools("own") == (KeyPool("OWN_KEY", ("OWN_KEY",)),)
    assert settings.key_pools("two") == (KeyPool("A_KEY", ("A_KEY",)), KeyPool("B_KEY", ("B_KEY",)))
    assert settings.key_pools("grouped") == (KeyPool("C_KEY", ("C_KEY",)), KeyPool("team", ("D_KEY", "E_KEY")))
    assert settings.key_variables("grouped") == ["C_KEY", "D_KEY", "E_KEY"]


def test_a_keys_pool_is_the_same_on_every_backend_naming_it_and_two_single_keys_never_share_one() -> None:
    settings = Settings(backends={
        "alone": backend(api_key_env="A_KEY"), "listed": backend(api_key_env=TWO), "other": backend(api_key_env="B_KEY"),
        "grouped": backend(api_key_env=["D_KEY", "E_KEY"], pools={"team": ["D_KEY", "E_KEY"]}),
        "also": backend(api_key_env="C_KEY"),
    })
    pool_of = {b: {v: p.name for p in settings.key_pools(b) for v in p.variables} for b in settings.backends}
    assert pool_of["alone"]["A_KEY"] == pool_of["listed"]["A_KEY"] == "A_KEY"  # one key, metered once
    assert pool_of["other"]["B_KEY"] == pool_of["listed"]["B_KEY"] == "B_KEY"
    assert pool_of["alone"]["A_KEY"] != pool_of["also"]["C_KEY"]  # two backends' single keys: two pools
    assert pool_of["grouped"] == {"D_KEY": "team", "E_KEY": "team"}


def test_a_providers_keys_serve_its_backends_that_name_none() -> None:
    settings = Settings(keys={"openai": {"api_key_env": TWO}},
                        backends={"uses": backend(), "own": backend(api_key_env="OWN_KEY")})
    assert settings.key_variables("uses") == TWO
    assert settings.key_variables("own") == ["OWN_KEY"]


@pytest.mark.parametrize("fields, named", [
    ({"api_key_env": []}, "empty list"),
    ({"api_key_env": ["A_KEY", "A_KEY"]}, "names a variable twice"),
    ({"api_key_env": ["A_KEY", "HOME"]}, "with KEY or TOKEN in its name"),
    ({"api_key_env": TWO, "pools": {"team": ["C_KEY"]}}, "'C_KEY', which is not in api_key_env"),
    ({"api_key_env": TWO, "pools": {"x": ["A_KEY"], "y": ["A_KEY"]}}, "in two pools"),
    ({"api_key_env": TWO, "pools": {"a b": ["A_KEY"]}}, "not a plain name"),
    ({"pools": {"team": TWO}}, "name them there too"),
    ({"api_key_env": ["K1_KEY", "K2_KEY"], "pools": {"K2_KEY": ["K1_KEY"]}},
     "pool 'K2_KEY' of backend 'b' is named after a key variable"),
    ({"api_key_env": TWO, "pools": {"A_KEY": TWO}}, "pool 'A_KEY' of backend 'b' is named after a key variable"),
    ({"api_key_env": TWO, "mode": "batch"}, r"backend 'b': batch mode takes one key variable \(it has A_KEY, B_KEY\)"),
])
def test_a_bad_key_configuration_is_refused_by_name(fields: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(backends={"b": backend(**fields)})


@pytest.mark.parametrize("config, named", [
    ({"backends": {"x": backend(api_key_env=TWO, pools={"team": TWO}), "y": backend(api_key_env="A_KEY")}},
     "key variable 'A_KEY' is in pool 'team' for backend 'x' but 'A_KEY' for backend 'y'"),
    ({"keys": {"openai": {"api_key_env": TWO}}, "backends": {"x": backend(mode="batch")}},
     "backend 'x': batch mode takes one key variable"),
    ({"keys": {"openai": {"api_key_env": TWO, "pools": {"team": TWO}}}, "backends": {"y": backend(api_key_env="B_KEY")}},
     r"'B_KEY' is in pool 'team' for \[keys.openai\] but 'B_KEY' for backend 'y'"),
])
def test_key_pools_that_contradict_each_other_across_backends_are_refused(config: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**config)


def test_a_refused_key_configuration_is_one_line_from_the_config_file(monkeypatch, tmp_path) -> None:
    from shared.config import load_settings

    path = tmp_path / "genesis.toml"
    path.write_text('[backends.b]\nprovider = "openai"\nmodel = "m"\nmode = "batch"\napi_key_env = ["A_KEY", "B_KEY"]\n')
    monkeypatch.setenv("GENESIS_CONFIG", str(path))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "\n" not in str(refused.value) and "batch mode takes one key variable" in str(refused.value)


def test_keys_of_something_not_a_provider_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"\[keys.openia\]: not a provider"):
        Settings(keys={"openia": {"api_key_env": TWO}})


def test_submit_checks_every_variable_of_every_pool_and_never_prints_a_value(monkeypatch) -> None:
    from producer.submit import select_work
    from shared.config import get_settings

    monkeypatch.setenv("GENESIS_KEYS", json.dumps({"openai": {"api_key_env": ["OPENAI_API_KEY", "OPENAI_TEAM_B_KEY"]}}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-value-of-the-first-key")
    monkeypatch.delenv("OPENAI_TEAM_B_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="missing OPENAI_TEAM_B_KEY in the environment") as refused:
            select_work(get_settings(), agents=["qa"], all_agents=False, backends=["openai"], suite=None, limit=2)
        assert "sk-the-value" not in str(refused.value)
        monkeypatch.setenv("OPENAI_TEAM_B_KEY", "sk-second")
        assert select_work(get_settings(), agents=["qa"], all_agents=False, backends=["openai"], suite=None,
                           limit=2).backends == ["openai"]
    finally:
        get_settings.cache_clear()


# --- the limiter, against real Redis ---------------------------------------------------------


@pytest.fixture
def limiter(redis_client, tmp_path, monkeypatch) -> RateLimiter:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("GENESIS_CONFIG", str(empty))
    return RateLimiter(redis_client, Settings(limits={"openai": {"rpm": 3}}))


POOLS = (KeyPool("A_KEY", ("A_KEY",)), KeyPool("B_KEY", ("B_KEY",)))


def test_each_pool_is_its_own_bucket_under_the_ceiling_and_a_call_takes_the_one_with_most_headroom(
        limiter, redis_client) -> None:
    first = limiter.acquire("openai", "m", 10, POOLS[:1], "run")  # pool A alone: 2 of its 3 left
    assert isinstance(first, Permit) and (first.pool, first.key_env) == ("A_KEY", "A_KEY")
    chosen = [limiter.acquire("openai", "m", 10, POOLS, "run") for _ in range(5)]
    assert all(isinstance(p, Permit) for p in chosen)
    assert chosen[0].key_env == "B_KEY"  # B had 3 left, A 2
    assert sorted(p.key_env for p in chosen) == ["A_KEY", "A_KEY", "B_KEY", "B_KEY", "B_KEY"]
    assert isinstance(limiter.acquire("openai", "m", 10, POOLS, "run"), float)  # 3 a pool: the ceiling holds
    keys = {k.decode() for k in redis_client.keys("genesis:rl:*")}
    assert {"genesis:rl:{openai:m#A_KEY}", "genesis:rl:{openai:m#B_KEY}"} <= keys
    assert "genesis:rl:{openai:m}" not in keys  # the single-key bucket is untouched
    assert {(v.scope, v.model, v.pool) for v in limiter.buckets()} == {("openai", "m", "A_KEY"), ("openai", "m", "B_KEY")}


def test_keys_declared_one_pool_share_one_bucket_and_take_turns(limiter) -> None:
    team = (KeyPool("team", ("A_KEY", "B_KEY")),)
    granted = [limiter.acquire("openai", "m", 10, team, "run") for _ in range(3)]
    assert all(isinstance(p, Permit) and p.pool == "team" for p in granted)
    assert {p.key_env for p in granted} == {"A_KEY", "B_KEY"}
    assert isinstance(limiter.acquire("openai", "m", 10, team, "run"), float)  # 3 for the pair, not 3 each


def test_each_pool_learns_its_own_limits(limiter) -> None:
    limiter.observe("openai", "m", {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1"},
                    pool="A_KEY")
    assert limiter.learned("openai", "m", "A_KEY").rpm == 2
    assert limiter.learned("openai", "m", "B_KEY").rpm is None
    assert limiter.learned("openai", "m").rpm is None


def test_a_benched_key_is_never_chosen_and_a_run_whose_every_key_is_benched_is_refused(limiter) -> None:
    assert limiter.bench("run", "B_KEY", "AuthenticationError, auth 401") is True
    assert limiter.bench("run", "B_KEY", "AuthenticationError, auth 401") is False  # the first says so, once
    chosen = [limiter.acquire("openai", "m", 10, POOLS, "run") for _ in range(3)]
    assert [p.key_env for p in chosen] == ["A_KEY"] * 3
    assert isinstance(limiter.acquire("openai", "m", 10, POOLS, "other-run"), Permit)  # benched for that run only
    limiter.bench("run", "A_KEY", "PermissionDeniedError, auth 403")
    refused = limiter.acquire("openai", "m", 10, POOLS, "run")
    assert isinstance(refused, Refused) and refused.error_type == "PermissionDeniedError"
    assert refused.reason == ("every key refused: A_KEY (PermissionDeniedError, auth 403); "
                              "B_KEY (AuthenticationError, auth 401)")


def test_a_key_refused_for_one_model_is_benched_for_that_model_only(limiter) -> None:
    assert limiter.bench("run", "B_KEY", "PermissionDeniedError, auth 403", ("openai", "m")) is True
    assert limiter.bench("run", "B_KEY", "PermissionDeniedError, auth 403", ("openai", "m")) is False
    assert [p.key_env for p in (limiter.acquire("openai", "m", 10, POOLS, "run") for _ in range(3))] == ["A_KEY"] * 3
    other_model = [limiter.acquire("openai", "m2", 10, POOLS, "run") for _ in range(3)]
    assert "B_KEY" in {p.key_env for p in other_model}  # the key still serves the run's other models
    assert "B_KEY" in {p.key_env for p in (limiter.acquire("anthropic", "m", 10, POOLS, "run") for _ in range(3))}
    assert limiter.benched("run", "openai", "m") == {"B_KEY": "PermissionDeniedError, auth 403"}
    assert limiter.benched("run", "openai", "m2") == {}
    limiter.bench("run", "A_KEY", "AuthenticationError, auth 401")  # the key itself: every model
    refused = limiter.acquire("openai", "m", 10, POOLS, "run")
    assert isinstance(refused, Refused) and refused.reason == (
        "every key refused: A_KEY (AuthenticationError, auth 401); B_KEY (PermissionDeniedError, auth 403)")
    assert [p.key_env for p in (limiter.acquire("openai", "m3", 10, POOLS, "run") for _ in range(2))] == ["B_KEY"] * 2


# --- a revoked key, with real workers --------------------------------------------------------


def two_keys(monkeypatch) -> dict[str, str]:
    """[keys.openai] with a second variable, for this process and the workers."""
    from shared.config import get_settings

    env = {"GENESIS_KEYS": json.dumps({"openai": {"api_key_env": ["OPENAI_API_KEY", "OPENAI_API_KEY_B"]}}),
           "OPENAI_API_KEY_B": "sk-sim-second-key"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return env


def completes_on_the_first_key() -> str:
    """An 8-job run of the openai backend whose every job and ledger row is OPENAI_API_KEY's."""
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "8")
    wait_until_reported(run_id, timeout=90)
    jobs = run_jobs(run_id)
    assert [j.status for j in jobs] == ["ok"] * 8
    assert {j.key_env for j in jobs} == {"OPENAI_API_KEY"}
    assert {row.key_env for row in ledger_rows(run_id)} == {"OPENAI_API_KEY"}
    return run_id


def test_a_revoked_key_is_benched_with_one_line_and_the_run_completes_on_the_other(
        monkeypatch, start_worker, simulator, tmp_path) -> None:
    env = two_keys(monkeypatch)
    simulator.update(revoked_keys=["sk-sim-second-key"])
    start_worker("w1", env=env, concurrency=4)
    start_worker("w2", env=env, concurrency=4)
    run_id = completes_on_the_first_key()
    assert simulator.stats()["by_status"].get("401", 0) >= 1  # the second key was tried, and refused
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("w1", "w2"))
    lines = [line for line in logs.splitlines() if "refused by openai" in line]
    assert len(lines) == 1
    assert f"key OPENAI_API_KEY_B refused by openai (auth 401): benched for run {run_id}" in lines[0]
    assert "sk-sim-second-key" not in logs


def test_a_key_forbidden_one_model_is_benched_for_that_model_with_one_line_saying_so(
        monkeypatch, start_worker, simulator, redis_url, tmp_path) -> None:
    import redis

    from shared.config import get_settings

    env = two_keys(monkeypatch)
    model = get_settings().backends["openai"].model
    simulator.update(forbidden_models={"sk-sim-second-key": [model]})
    start_worker("w1", env=env, concurrency=4)
    run_id = completes_on_the_first_key()
    assert simulator.stats()["by_status"].get("403", 0) >= 1  # the second key was tried, and refused
    benched = redis.Redis.from_url(redis_url).hgetall(f"genesis:rl:benched:{run_id}")
    assert set(benched) == {f"OPENAI_API_KEY_B@openai:{model}".encode()}  # that model's, not the run's
    lines = [line for line in (tmp_path / "w1.log").read_text().splitlines() if "refused by openai" in line]
    assert len(lines) == 1, lines
    assert f"key OPENAI_API_KEY_B refused by openai (auth 403): benched for run {run_id} for model {model} only" \
        in lines[0]


def test_a_run_whose_every_key_is_refused_fails_its_jobs_with_that_reason(monkeypatch, start_worker, simulator) -> None:
    env = two_keys(monkeypatch)
    simulator.update(revoked_keys=["sk-sim", "sk-sim-second-key"])
    start_worker("w1", env=env, concurrency=4)
    run_id = submit("--agent", "qa", "--backend", "openai", "--limit", "4")
    wait_until_reported(run_id, timeout=90)

    jobs = run_jobs(run_id)
    assert [j.status for j in jobs] == ["error"] * 4
    every_key = ("every key refused: OPENAI_API_KEY (AuthenticationError, auth 401); "
                 "OPENAI_API_KEY_B (AuthenticationError, auth 401)")
    for job in jobs:  # the last key's refusal in the provider's words, or (no call made) every key's
        assert job.error_type == "AuthenticationError" and job.attempts == 1
        assert job.error_message.startswith(("auth 401: ", every_key)), job.error_message
    # each job meets each key's 401 at most once (a refused key is benched before the job goes back)
    assert 2 <= simulator.stats()["by_status"].get("401", 0) <= 4 * 2


def test_the_reports_cost_section_shows_each_keys_calls_and_cost_when_a_backend_used_several() -> None:
    from shared.report.costs import Spend, run_costs
    from shared.report.document import _cost_lines

    one = run_costs([], {}, 0.0, {}, {("openai", "OPENAI_API_KEY"): Spend(0.5, 3)})
    assert one["keys"] == [{"backend": "openai", "key_env": "OPENAI_API_KEY", "calls": 3, "usd": 0.5}]
    assert not any(line.startswith("by key") for line in _cost_lines(one))  # one key: nothing to tell apart
    two = run_costs([], {}, 0.0, {}, {("openai", "B_KEY"): Spend(0.25, 2), ("openai", "A_KEY"): Spend(0.5, 3)})
    assert _cost_lines(two)[-1] == "by key (openai A_KEY: 3 calls, $0.500000; openai B_KEY: 2 calls, $0.250000)"
