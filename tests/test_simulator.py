"""The provider simulator, exercised through the real OpenAI, Anthropic and Mistral SDKs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import anthropic
import openai
import pytest
import typer
from mistralai.client import Mistral
from mistralai.client.errors import ResponseValidationError, SDKError
from typer.testing import CliRunner

from shared.scoring import score
from simulator.wrong import WRONG_MAX_SCORE
from shared.suite import load_suite
from simulator.answers import Oracle
from simulator.cli import simulator_command
from simulator.config import SimulatorConfig
from simulator.ratelimit import RateLimiter
from simulator.server import SimulatorHandle, draw_latency_s, start_simulator
from simulator.text import count_prompt_tokens, count_tokens, truncate_to_tokens
from tests.support.resources import uses

TASKS = [
    {
        "id": "capital",
        "agent": "qa",
        "prompt": "What is the capital of France? Reply with the city name only.",
        "difficulty": "easy",
        "max_tokens": 16,
        "scorer": {"type": "exact", "expected": "Paris", "distractors": ["Lyon", "Marseille"]},
    },
    {
        "id": "sum",
        "agent": "analyst",
        "prompt": "A shop sells 17 apples in the morning and 25 in the afternoon. How many in total?",
        "difficulty": "easy",
        "scorer": {"type": "numeric", "expected": 42},
    },
    {
        "id": "refund",
        "agent": "support",
        "prompt": "Summarise our refund policy for a customer in two sentences.",
        "system": "You are a support agent.",
        "difficulty": "medium",
        "scorer": {"type": "keywords", "keywords": ["30 days", "receipt", "original payment method"]},
    },
]
BASELINE = dict(latency_ms=0.0, quality={"*": 1.0}, default_quality=1.0)


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("suite")
    (folder / "tasks.jsonl").write_text("\n".join(json.dumps(task) for task in TASKS) + "\n")
    return folder


@pytest.fixture(scope="module")
@uses("simulator")
def server(suite_dir: Path):
    handle = start_simulator(SimulatorConfig(suite=str(suite_dir), **BASELINE))
    yield handle
    handle.stop()


@pytest.fixture
def sim(server: SimulatorHandle, suite_dir: Path) -> SimulatorHandle:
    """The shared server with every knob back at the test baseline and zeroed counters."""
    server.update(**SimulatorConfig(suite=str(suite_dir), **BASELINE).model_dump())
    server.reset()
    return server


def openai_client(sim: SimulatorHandle, **options) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test", base_url=sim.url + "/v1", max_retries=0, _strict_response_validation=True, **options
    )


def anthropic_client(sim: SimulatorHandle, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="x", base_url=sim.url, max_retries=0, _strict_response_validation=True, **options
    )


def ask_openai(client: openai.OpenAI, prompt: str, model: str = "gpt-4o-mini", **extra):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **extra)


def http_json(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- wire formats --------------------------------------------------------------------------


def test_openai_chat_is_strictly_valid_with_real_usage(sim: SimulatorHandle) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello, please!"}]
    completion = openai_client(sim).chat.completions.create(model="gpt-4o-mini", messages=messages)

    text = completion.choices[0].message.content
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].finish_reason == "stop"
    assert text and count_tokens(text) == completion.usage.completion_tokens
    # "Be brief." = 3 tokens, "Say hello, please!" = 5 tokens, plus 4 per message
    assert completion.usage.prompt_tokens == 3 + 5 + 2 * 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_usage_scale_bills_more_tokens_than_served_and_omit_usage_drops_the_block(sim: SimulatorHandle) -> None:
    plain = ask_openai(openai_client(sim), "Say hello, please!", temperature=0)  # greedy: the same answer
    sim.update(usage_scale=3.0)
    scaled = ask_openai(openai_client(sim), "Say hello, please!", temperature=0)
    assert scaled.choices[0].message.content == plain.choices[0].message.content  # same answer, billed 3×
    assert scaled.usage.prompt_tokens == 3 * plain.usage.prompt_tokens
    assert scaled.usage.completion_tokens == 3 * plain.usage.completion_tokens
    assert sim.stats()["output_tokens"] == plain.usage.completion_tokens * 4  # the stats count what was billed

    sim.update(usage_scale=1.0, omit_usage_rate=1.0)
    bare = ask_openai(openai_client(sim), "Say hello, please!")
    assert bare.usage is None and bare.choices[0].message.content
    lenient = anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)  # as the workers build it
    message = lenient.messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert getattr(message, "usage", None) is None and message.content[0].text


def test_openai_max_tokens_truncates_with_finish_reason_length(sim: SimulatorHandle) -> None:
    completion = ask_openai(openai_client(sim), "Tell me something long.", max_tokens=5)

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert count_tokens(completion.choices[0].message.content) == 5


def test_anthropic_message_is_strictly_valid_and_truncates(sim: SimulatorHandle) -> None:
    client = anthropic_client(sim)
    message = client.messages.create(
        model="claude-sim-1",
        max_tokens=500,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
    )
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == "claude-sim-1"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == count_prompt_tokens(["You are terse.", "Hello there"])
    assert message.usage.output_tokens == count_tokens(message.content[0].text)

    cut = client.messages.create(
        model="claude-sim-1", max_tokens=4, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 4


def test_anthropic_requires_max_tokens_like_the_real_api(sim: SimulatorHandle) -> None:
    status, body = http_json(sim.url + "/v1/messages", {"model": "c", "messages": [{"role": "user", "content": "x"}]})
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_mistral_chat_parses_and_truncates(sim: SimulatorHandle) -> None:
    client = Mistral(api_key="x", server_url=sim.url)
    response = client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "Hi!"}])
    assert response.model == "open-mistral-7b" and response.object == "chat.completion"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == 2 + 4
    assert response.usage.completion_tokens == count_tokens(response.choices[0].message.content)

    cut = client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "Hi!"}], max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    assert sim.stats()["by_api"] == {"mistral": 2}


def test_latency_jitter_is_uniform_around_the_fixed_latency_and_never_negative() -> None:
    rng = random.Random(1)
    around_100 = SimulatorConfig(latency_ms=100, latency_jitter_ms=50, suite=None)
    jittered = [draw_latency_s(around_100, rng) for _ in range(500)]
    assert 0.05 <= min(jittered) < 0.06 and 0.14 < max(jittered) <= 0.15
    assert sum(jittered) / len(jittered) == pytest.approx(0.1, abs=0.005)
    around_10 = SimulatorConfig(latency_ms=10, latency_jitter_ms=50, suite=None)
    clipped = [draw_latency_s(around_10, rng) for _ in range(200)]
    assert min(clipped) == 0.0


def test_truncation_keeps_the_text_up_to_the_last_kept_token() -> None:
    assert truncate_to_tokens("One, two three.", 3) == ("One, two", 3, True)
    assert truncate_to_tokens("One, two three.", 5) == ("One, two three.", 5, False)


# --- quality -------------------------------------------------------------------------------


def test_quality_one_answers_every_suite_task_correctly(sim: SimulatorHandle, suite_dir: Path) -> None:
    client = openai_client(sim)
    for task in load_suite(str(suite_dir)).tasks:
        messages = [{"role": "system", "content": task.system}] if task.system else []
        messages.append({"role": "user", "content": task.prompt})
        completion = client.chat.completions.create(model="ft:open-mistral-7b:qa", messages=messages, max_tokens=200)
        assert score(task, completion.choices[0].message.content).score == 1.0, task.id


def test_quality_zero_answers_wrong_and_the_same_way_twice(sim: SimulatorHandle, suite_dir: Path) -> None:
    sim.update(quality={"open-mistral-7b": 0.0})
    client = Mistral(api_key="x", server_url=sim.url)
    for task in load_suite(str(suite_dir)).tasks:
        answers = [
            client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": task.prompt}],
                                 temperature=0)  # greedy (Mistral's default, 0.7, samples)
            .choices[0]
            .message.content
            for _ in range(2)
        ]
        assert answers[0] == answers[1]
        assert score(task, answers[0]).score <= WRONG_MAX_SCORE, task.id


def test_the_shipped_suite_is_answered_right_at_quality_one() -> None:
    oracle = Oracle(SimulatorConfig().suite)
    assert oracle.suite is not None and len(oracle.suite.tasks) >= 50
    for task in oracle.suite.tasks:
        assert score(task, oracle.answer(task.prompt, "ft:any", 1.0, seed=7)).score == 1.0, task.key


def test_quality_patterns_first_match_wins_then_default() -> None:
    config = SimulatorConfig(quality={"ft:*": 0.9, "ft:special*": 0.1, "open-mistral-7b": 0.6}, default_quality=0.3)
    assert config.quality_for("ft:special-1") == 0.9
    assert config.quality_for("open-mistral-7b") == 0.6
    assert config.quality_for("gpt-4o") == 0.3


def test_answers_depend_on_seed_model_and_prompt_not_arrival_order(suite_dir: Path) -> None:
    oracle = Oracle(str(suite_dir))
    task = load_suite(str(suite_dir)).tasks[0]
    models = [f"model-{i}" for i in range(400)]
    first = [oracle.answer(task.prompt, model, 0.6, seed=7) for model in models]
    backwards = [oracle.answer(task.prompt, model, 0.6, seed=7) for model in reversed(models)]
    assert first == backwards[::-1]
    correct = sum(score(task, answer).score == 1.0 for answer in first) / len(models)
    assert 0.5 < correct < 0.7  # quality is the probability of a right answer
    other_seed = [oracle.answer(task.prompt, model, 0.6, seed=8) for model in models]
    assert other_seed != first


# --- rate limits ---------------------------------------------------------------------------


def test_rpm_admits_a_full_bucket_then_answers_429_with_headers(sim: SimulatorHandle) -> None:
    sim.update(rpm=60)
    client = openai_client(sim)
    started, served = time.monotonic(), 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(200):
            response = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
            assert response.headers["x-ratelimit-limit-requests"] == "60"
            served += 1
    refilled = time.monotonic() - started  # at rpm=60 the bucket regains 1 request per second
    assert 60 <= served <= 60 + refilled + 1

    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert sim.stats()["by_status"]["429"] == 1


def test_rpm_buckets_are_per_key_and_model_for_anthropic_and_mistral(sim: SimulatorHandle) -> None:
    sim.update(rpm=2)
    client = anthropic_client(sim)
    for _ in range(2):
        client.messages.create(model="claude-a", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-a", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-requests-limit"] == "2"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"]).tzinfo is not None
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    # another model has its own bucket
    client.messages.create(model="claude-b", max_tokens=5, messages=[{"role": "user", "content": "hi"}])

    mistral = Mistral(api_key="mistral-key", server_url=sim.url)
    for _ in range(2):
        mistral.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(SDKError) as mistral_refused:
        mistral.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "hi"}])
    assert mistral_refused.value.status_code == 429
    assert int(mistral_refused.value.raw_response.headers["retry-after"]) >= 1


def test_tpm_charges_prompt_plus_max_tokens_at_admission(sim: SimulatorHandle) -> None:
    sim.update(tpm=100)
    client = openai_client(sim)
    ok = ask_openai(client, "hi", max_tokens=80)  # charges 1 + 4 + 80 = 85 tokens
    assert ok.usage.completion_tokens <= 80
    with pytest.raises(openai.RateLimitError) as refused:
        ask_openai(client, "hi", max_tokens=80)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 85
    assert int(headers["retry-after"]) >= 1


def test_token_bucket_refills_at_limit_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(rpm=60, tpm=None, clock=lambda: now[0])
    assert all(limiter.admit("k", "m", 10).allowed for _ in range(60))
    refused = limiter.admit("k", "m", 10)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.0)
    assert refused.requests is not None and refused.requests.reset_s == pytest.approx(60.0)
    now[0] = 2.5
    assert [limiter.admit("k", "m", 10).allowed for _ in range(3)] == [True, True, False]
    assert limiter.admit("other-key", "m", 10).allowed


@pytest.mark.parametrize(("api", "expected"), [
    ("openai", {"requests": (60, "x-ratelimit-limit-requests"), "tokens": (5000, "x-ratelimit-limit-tokens")}),
    ("mistral", {"requests": (60, "x-ratelimit-limit-req-minute"), "tokens": (5000, "x-ratelimit-limit-tokens-minute")}),
    ("anthropic", {"requests": (60, "anthropic-ratelimit-requests-limit"),
                   "tokens": (5000, "anthropic-ratelimit-tokens-limit"),
                   "input-tokens": (4000, "anthropic-ratelimit-input-tokens-limit"),
                   "output-tokens": (800, "anthropic-ratelimit-output-tokens-limit")}),
])
def test_each_api_states_its_limits_in_its_own_headers_which_the_workers_read(api, expected) -> None:
    from shared.retry import read_quotas
    from simulator.wire import Api, rate_limit_headers

    limiter = RateLimiter(rpm=60, tpm=5000, itpm=4000, otpm=800)
    admission = limiter.admit("k", "m", 300, input_tokens=100 if api == "anthropic" else None)
    reading = read_quotas(rate_limit_headers(Api(api), admission))
    assert reading.bogus == ()
    assert {dim: (q.limit, q.source) for dim, q in reading.quotas.items()} == expected
    if api == "anthropic":  # the prompt counted as input, max_tokens as output, each in its own bucket
        assert (reading.quotas["input-tokens"].remaining, reading.quotas["output-tokens"].remaining) == (3900, 600)


def test_anthropic_output_tokens_limit_refuses_on_its_own() -> None:
    limiter = RateLimiter(rpm=None, tpm=None, itpm=None, otpm=500, clock=lambda: 0.0)
    assert limiter.admit("k", "m", 100, input_tokens=100).allowed  # no output asked: within any otpm
    assert limiter.admit("k", "m", 500, input_tokens=100).allowed  # 400 of 500 output
    refused = limiter.admit("k", "m", 300, input_tokens=100)  # 200 more: only 100 left
    assert not refused.allowed and refused.output_tokens.remaining == 100
    assert limiter.admit("k", "m", 10**6).allowed  # an OpenAI-format call: no split limits


def test_limits_changed_mid_run_start_fresh_buckets_at_the_new_limit() -> None:
    from simulator.server import Simulator

    sim = Simulator(SimulatorConfig(rpm=100, suite=None))
    sim.update(rpm=10)
    limiter = sim._limiter
    assert [limiter.admit("k", "m", 1).allowed for _ in range(11)] == [True] * 10 + [False]
    assert limiter.admit("k", "m", 1).requests.limit == 10


# --- faults --------------------------------------------------------------------------------


def test_injected_500_and_503_in_each_providers_format(sim: SimulatorHandle) -> None:
    sim.update(error_rates={500: 1.0})
    with pytest.raises(openai.InternalServerError) as server_error:
        ask_openai(openai_client(sim), "hi")
    assert server_error.value.status_code == 500
    assert server_error.value.body["type"] == "server_error"

    sim.update(error_rates={503: 1.0})
    with pytest.raises(SDKError) as mistral_error:
        Mistral(api_key="x", server_url=sim.url).chat.complete(model="m", messages=[{"role": "user", "content": "hi"}])
    assert mistral_error.value.status_code == 503
    assert json.loads(mistral_error.value.body)["object"] == "error"
    assert sim.stats()["faults"] == {"500": 1, "503": 1}


def test_injected_529_is_anthropics_overloaded_error(sim: SimulatorHandle) -> None:
    sim.update(error_rates={529: 1.0})
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        anthropic_client(sim).messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


def test_injected_429_carries_retry_after(sim: SimulatorHandle) -> None:
    sim.update(error_rates={429: 1.0})
    with pytest.raises(openai.RateLimitError) as refused:
        ask_openai(openai_client(sim), "hi")
    assert refused.value.response.headers["retry-after"] == "1"


def test_fault_rates_are_drawn_at_the_configured_rate(sim: SimulatorHandle) -> None:
    sim.update(error_rates={500: 0.3})
    client = openai_client(sim)
    failures = 0
    for _ in range(100):
        try:
            ask_openai(client, "hi", max_tokens=2)
        except openai.InternalServerError:
            failures += 1
    assert 15 <= failures <= 45
    assert sim.stats()["by_status"] == {"200": 100 - failures, "500": failures}


def test_timeout_fault_makes_the_sdks_time_out(sim: SimulatorHandle) -> None:
    sim.update(timeout_rate=1.0, timeout_s=1.0)
    with pytest.raises(openai.APITimeoutError):
        ask_openai(openai_client(sim, timeout=0.3), "hi")
    with pytest.raises(anthropic.APITimeoutError):
        anthropic_client(sim, timeout=0.3).messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert sim.stats()["in_flight"] == 2  # both answers are still being held back
    deadline = time.monotonic() + 3
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["faults"] == {"timeout": 2}


@pytest.mark.parametrize(("knob", "fault", "errors"), [
    # openai and anthropic let the JSON decode error through; mistral wraps it
    ("malformed_rate", "malformed", (json.JSONDecodeError, json.JSONDecodeError, ResponseValidationError)),
    # the request was taken and answered, then the connection closed with no reply
    ("drop_rate", "drop", (openai.APIConnectionError, anthropic.APIConnectionError, Exception)),
])
def test_a_reply_lost_on_the_way_fails_each_sdk_and_is_billed(sim: SimulatorHandle, knob, fault, errors) -> None:
    sim.update(**{knob: 1.0})
    openai_error, anthropic_error, mistral_error = errors
    with pytest.raises(openai_error):
        ask_openai(openai_client(sim), "hi")
    with pytest.raises(anthropic_error):
        anthropic_client(sim).messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(mistral_error):
        Mistral(api_key="x", server_url=sim.url).chat.complete(model="m", messages=[{"role": "user", "content": "hi"}])
    stats = sim.stats()
    assert stats["faults"] == {fault: 3} and stats["input_tokens"] > 0
    assert stats["completions_ok"] == stats["by_status"]["200"] == 3  # billed, as a provider bills what it generated


# --- counters, concurrency, live config -----------------------------------------------------


def test_concurrent_requests_overlap_and_are_counted(sim: SimulatorHandle) -> None:
    sim.update(latency_ms=300.0)
    clients = [openai_client(sim) for _ in range(20)]
    barrier = threading.Barrier(20)
    outputs: list[int] = []

    def call(client: openai.OpenAI) -> None:
        barrier.wait()
        outputs.append(ask_openai(client, "hi", model="ft:qa").usage.completion_tokens)

    threads = [threading.Thread(target=call, args=(client,)) for client in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    stats = sim.stats()
    assert elapsed < 1.5
    assert stats["peak_in_flight"] >= 15 and stats["in_flight"] == 0
    assert stats["requests_total"] == 20 and stats["completions_ok"] == 20
    assert stats["by_model_status"] == {"ft:qa": {"200": 20}}
    assert stats["output_tokens"] == sum(outputs)
    assert stats["input_tokens"] == 20 * (1 + 4)


def test_sixty_four_requests_in_flight_are_not_serialised(sim: SimulatorHandle) -> None:
    sim.update(latency_ms=500.0)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def call() -> None:
        request = urllib.request.Request(sim.url + "/v1/chat/completions", data=body)
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    threads = [threading.Thread(target=call) for _ in range(64)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 2.0
    assert sim.stats()["by_status"] == {"200": 64}


def test_stats_config_and_reset_over_http(sim: SimulatorHandle) -> None:
    ask_openai(openai_client(sim), "hi")
    status, stats = http_json(sim.url + "/_sim/stats")
    assert status == 200 and stats == sim.stats() and stats["by_status"] == {"200": 1}

    status, config = http_json(sim.url + "/_sim/config", {"rpm": 1, "error_rates": {"500": 0.25}})
    assert status == 200 and config["rpm"] == 1 and config["error_rates"] == {"500": 0.25}
    assert sim.config.error_rates == {500: 0.25}
    assert http_json(sim.url + "/_sim/config")[1] == config

    status, error = http_json(sim.url + "/_sim/config", {"timeout_rate": 2})
    assert status == 400 and "timeout_rate" in error["error"]["message"]
    status, error = http_json(sim.url + "/_sim/config", {"error_rates": {"500": 0.7}, "malformed_rate": 0.5})
    assert status == 400 and "more than 1" in error["error"]["message"]
    assert sim.config.rpm == 1  # a refused update changes nothing

    status, after_reset = http_json(sim.url + "/_sim/reset", {})
    assert status == 200 and after_reset["requests_total"] == 0 and after_reset["by_status"] == {}


# --- command line --------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulator_command)
    return app


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--error-rate", "500=2"], "--error-rate"),
        (["--error-rate", "oops=0.1"], "--error-rate"),
        (["--quality", "ft:*"], "--quality"),
        (["--timeout-rate", "1.5"], "--timeout-rate"),
        (["--error-rate", "500=0.6", "--malformed-rate", "0.6"], "more than 1"),
        (["--suite", "no-such-suite"], "--suite"),
        (["--usage-scale", "-1"], "--usage-scale"),
        (["--omit-usage-rate", "2"], "--omit-usage-rate"),
    ],
)
def test_cli_rejects_bad_input_with_exit_code_2(arguments: list[str], named: str) -> None:
    result = CliRunner().invoke(cli_app(), ["--port", "0", *arguments])
    assert result.exit_code == 2
    assert named in result.output


@pytest.mark.processes
@pytest.mark.simulator
def test_python_dash_m_simulator_serves_and_announces_the_urls(suite_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--latency-ms", "0", "--suite", str(suite_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = process.stdout.readline()
        url = line.split()[3]
        assert f"OPENAI_BASE_URL={url}/v1" in line and f"MISTRAL_BASE_URL={url}" in line
        assert f"ANTHROPIC_BASE_URL={url}" in line
        client = openai.OpenAI(api_key="k", base_url=url + "/v1", max_retries=0, _strict_response_validation=True)
        assert ask_openai(client, "hi").choices[0].finish_reason == "stop"
    finally:
        process.terminate()
        process.wait(timeout=5)
