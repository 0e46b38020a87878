"""What a process pays once before its first call (one TLS context, the Mistral SDK's wrapper
classes built once per type), and what a provider worker does not load (the report code)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import ConfigDict, ValidationError

from shared.providers import ChatRequest, clients, complete
from shared.providers.mistral_models import cache_wrapper_models


def test_racing_threads_build_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real = clients._httpx().create_ssl_context

    def slow_build(*args, **kwargs):
        time.sleep(0.05)  # wide enough for every thread to arrive while the first one builds
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(clients, "_tls_context", None)
    monkeypatch.setattr(clients._httpx(), "create_ssl_context", slow_build)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(clients.tls_context())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert len(seen) == 16 and all(context is seen[0] for context in seen)


def test_mistral_wrapper_classes_are_built_once_per_type_and_still_validate() -> None:
    from mistralai.client.utils import serializers

    assert cache_wrapper_models() and cache_wrapper_models()  # idempotent
    config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)
    first = serializers.create_model("Unmarshaller", body=(int, ...), __config__=config)
    assert serializers.create_model("Unmarshaller", body=(int, ...), __config__=config) is first
    assert serializers.create_model("Unmarshaller", body=(str, ...), __config__=config) is not first
    # anything but the SDK's one-field wrapper is built as before, every time
    assert serializers.create_model("Other", x=(int, ...)) is not serializers.create_model("Other", x=(int, ...))
    assert serializers.unmarshal("5", int) == 5
    with pytest.raises(ValidationError):
        serializers.unmarshal("not a number", int)


def test_mistral_calls_answer_alike_before_and_after_their_wrappers_are_cached(simulator, monkeypatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    monkeypatch.setenv("MISTRAL_BASE_URL", simulator.url)
    simulator.update(sampling="never")  # no temperature sent is Mistral's default (0.7): alike only unsampled
    request = ChatRequest(model="mistral-small-latest", prompt="What is the capital of France?",
                          system="Answer briefly.", max_tokens=40, timeout_s=10)
    answers = [complete("mistral", request) for _ in range(3)]
    assert answers[0].text and answers[0].input_tokens > 0 and answers[0].output_tokens > 0
    assert {(a.text, a.input_tokens, a.output_tokens, a.finish_reason) for a in answers} == {
        (answers[0].text, answers[0].input_tokens, answers[0].output_tokens, answers[0].finish_reason)}


def _maps_numpy(pid: int) -> bool:
    return "numpy" in Path(f"/proc/{pid}/maps").read_text()


def test_a_provider_worker_loads_no_report_code_and_a_reports_worker_loads_it_at_start(start_worker) -> None:
    provider_only = start_worker("calls", queues="openai", concurrency=2)
    every_queue = start_worker("all", concurrency=2)
    assert not _maps_numpy(provider_only.proc.pid)
    assert _maps_numpy(every_queue.proc.pid)  # before its first report: not inside the run's last step
