"""Generation settings without any service: each provider's mapping against the request shape its
API documents, the checks at config load, the reuse key, cut-off answers and refused settings."""

from __future__ import annotations

import pytest

from shared.providers.params import Generation, anthropic_arguments, mistral_arguments, openai_arguments
from tests.support.env import ROOT, use_config

SHIPPED = (ROOT / "config" / "genesis.toml").read_text()
EVERYTHING = Generation(temperature=0.2, top_p=0.9, seed=7, reasoning_effort="low")


def test_openai_takes_max_completion_tokens_and_its_own_names():
    # platform.openai.com chat.completions.create: max_completion_tokens, temperature, top_p, seed, reasoning_effort
    assert openai_arguments(512, EVERYTHING) == {
        "max_completion_tokens": 512, "temperature": 0.2, "top_p": 0.9, "seed": 7, "reasoning_effort": "low"}
    assert openai_arguments(512, Generation()) == {"max_completion_tokens": 512}  # nothing else sent


def test_an_older_openai_compatible_server_gets_max_tokens_when_its_backend_says_so():
    assert openai_arguments(64, Generation(allowance_field="max_tokens")) == {"max_tokens": 64}


def test_anthropic_thinking_is_an_enabled_budget_inside_max_tokens():
    # Anthropic extended thinking: thinking={"type": "enabled", "budget_tokens": N}, N >= 1024, N < max_tokens
    assert anthropic_arguments(2048, Generation(reasoning_budget_tokens=1024)) == {
        "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert anthropic_arguments(300, Generation(temperature=0.5, top_p=0.8)) == {
        "max_tokens": 300, "temperature": 0.5, "top_p": 0.8}


def test_mistral_takes_random_seed_and_max_tokens():
    # docs.mistral.ai chat completion: temperature, top_p, max_tokens, random_seed
    assert mistral_arguments(100, Generation(temperature=0.2, top_p=0.9, seed=7)) == {
        "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "random_seed": 7}


def _with_openai_params(params: str, provider_block: str = "openai") -> str:
    old = 'params = { reasoning_effort = "low", max_output_tokens = 1024 }'
    assert old in SHIPPED
    return SHIPPED.replace(old, params)


@pytest.mark.parametrize(("params", "says"), [
    ("params = { temprature = 0.2 }", "unknown key backends.openai.params.temprature"),
    ("params = { temperature = nan }", "backends.openai.params.temperature"),
    ("params = { top_p = inf }", "backends.openai.params.top_p"),
    ("params = { temperature = -0.5 }", "greater than or equal to 0"),
    ("params = { max_output_tokens = -1 }", "backends.openai.params.max_output_tokens"),
    ("params = { reasoning_effort = \"extreme\" }", "backends.openai.params.reasoning_effort"),
    ("params = { reasoning_budget_tokens = 2048, max_output_tokens = 4096 }",
     "reasoning_budget_tokens is not a setting the openai API takes"),
    ("params = {}\nmax_tokens_field = \"max_length\"", "backends.openai.max_tokens_field"),
])
def test_bad_settings_are_refused_at_load_in_one_line(monkeypatch, tmp_path, params, says):
    from shared.config import ConfigError, load_settings

    use_config(monkeypatch, tmp_path, _with_openai_params(params), "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(("params", "says"), [
    ("params = { seed = 7 }", "seed is not a setting the anthropic API takes"),
    ("params = { reasoning_effort = \"low\" }", "reasoning_effort is not a setting the anthropic API takes"),
    ("params = { reasoning_budget_tokens = 1024, max_output_tokens = 1024 }", "must be less than max_output_tokens"),
    ("params = { reasoning_budget_tokens = 1024 }", "must be less than max_output_tokens (None)"),
    ("params = { reasoning_budget_tokens = 512, max_output_tokens = 2048 }", "greater than or equal to 1024"),
    ("params = { reasoning_budget_tokens = 1024, max_output_tokens = 2048, temperature = 0.3 }",
     "does not work with temperature"),
])
def test_anthropic_settings_follow_its_documented_rules(monkeypatch, tmp_path, params, says):
    from shared.config import ConfigError, load_settings

    block = 'model = "claude-haiku-4-5"\n'
    use_config(monkeypatch, tmp_path, SHIPPED.replace(block, block + params + "\n"), "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert says in str(refused.value)


def test_a_bad_setting_exits_2_from_the_cli_and_writes_nothing(monkeypatch, tmp_path):
    from tests.support.runs import producer

    use_config(monkeypatch, tmp_path, _with_openai_params('params = { reasoning_effort = "extreme" }'),
               "redis://127.0.0.1:1/0")
    result = producer("submit", "--all-agents", "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "reasoning_effort" in result.stderr
    assert not (tmp_path / "t.db").exists()


def test_the_backend_allowance_wins_over_the_task_and_is_the_worst_case(monkeypatch, tmp_path):
    """max_output_tokens is the whole allowance (reasoning included): it is sent and reserved
    whatever the task's max_tokens; without it the task's max_tokens (capped) is."""
    from types import SimpleNamespace

    from shared.budget import call_cost, max_output_tokens, task_worst_case
    from shared.calls import job_request
    from shared.config import load_settings
    from shared.tokens import estimate_prompt_tokens

    use_config(monkeypatch, tmp_path, SHIPPED, "redis://127.0.0.1:1/0")
    settings = load_settings()
    task = SimpleNamespace(prompt="What is 2+2?", system=None, max_tokens=16)
    assert max_output_tokens(settings, "openai", 16) == 1024
    assert job_request(settings, "openai", "gpt-5-mini", task).max_tokens == 1024
    assert task_worst_case(settings, task, "openai", "gpt-5-mini") == pytest.approx(
        call_cost(settings, "gpt-5-mini", estimate_prompt_tokens(task.prompt), 1024))
    assert max_output_tokens(settings, "anthropic", 16) == 16  # no allowance of its own: the task's


def test_every_setting_that_changes_the_answer_is_in_the_reuse_key():
    from shared.calls import request_key
    from shared.providers import ChatRequest

    def key(**params) -> str:
        return request_key("openai", ChatRequest(model="m", prompt="p", system=None, max_tokens=8, timeout_s=1,
                                                 params=Generation(**params)))

    keys = [key(), key(temperature=0.2), key(temperature=0.3), key(top_p=0.9), key(seed=7), key(seed=8),
            key(reasoning_effort="low"), key(reasoning_effort="high"), key(reasoning_budget_tokens=1024)]
    assert len(set(keys)) == len(keys)
    assert key(allowance_field="max_tokens") == key()  # the field's name changes no answer
    assert key(temperature=0.0) == key(temperature=0)


def test_a_request_at_temperature_0_keeps_the_key_it_had_before_settings_existed():
    """Earlier answers (all sent at temperature 0) stay reusable by a backend set to 0."""
    import hashlib
    import json

    from shared.calls import REQUEST_KEY_VERSION, request_key
    from shared.providers import ChatRequest

    before = {"v": REQUEST_KEY_VERSION, "provider": "mistral", "model": "m", "system": "s", "prompt": "p",
              "max_tokens": 8, "temperature": 0}
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    request = ChatRequest(model="m", prompt="p", system="s", max_tokens=8, timeout_s=1, params=Generation(temperature=0.0))
    assert request_key("mistral", request) == expected


@pytest.mark.parametrize(("finish", "text", "reasoning", "cut"), [
    ("length", "Canb", 0, True), ("max_tokens", "Canb", 0, True), ("stop", "", 40, True),
    ("stop", "Canberra", 40, False), ("stop", "", 0, False), ("end_turn", "Canberra", 0, False),
])
def test_an_answer_cut_off_by_its_allowance_is_known(finish, text, reasoning, cut):
    from shared.providers import ChatResponse

    response = ChatResponse(text=text, input_tokens=5, output_tokens=50, latency_ms=1, finish_reason=finish,
                            reasoning_tokens=reasoning)
    assert response.truncated is cut


def test_a_400_naming_a_setting_is_a_refused_setting_and_not_retried():
    import openai

    from shared.providers import classify
    from shared.providers.clients import _httpx

    httpx = _httpx()
    body = {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                 "Use 'max_completion_tokens' instead.", "type": "invalid_request_error",
                      "param": "max_tokens", "code": "unsupported_parameter"}}
    response = httpx.Response(400, json=body, request=httpx.Request("POST", "https://api.openai.com/v1/chat/completions"))
    error = classify(openai.BadRequestError("Error code: 400", response=response, body=body["error"]))
    assert (error.kind, error.param, error.retryable) == ("refused_setting", "max_tokens", False)
    other = classify(openai.BadRequestError("Error code: 400", response=response,
                                            body={"message": "bad", "param": "messages", "code": None}))
    assert other.kind == "client"
