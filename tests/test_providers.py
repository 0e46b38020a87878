"""Provider errors are classified for the retry policy, and keys never leak through them."""

from __future__ import annotations

import httpx2
import openai
import pytest

from shared.providers import ProviderError, classify, scrub_secrets


def _status_error(status: int, body: str = "boom") -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers={"retry-after": "3"}, text=body)
    return openai.APIStatusError(body, response=response, body=None)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(429, "rate_limit", True), (500, "server", True), (503, "server", True), (529, "server", True),
     (401, "auth", False), (403, "auth", False), (400, "client", False), (404, "client", False),
     (422, "client", False)],
)
def test_status_codes_map_to_kinds(status, kind, retryable):
    err = classify(_status_error(status))
    assert (err.kind, err.status, err.retryable) == (kind, status, retryable)
    assert err.headers["retry-after"] == "3"


def test_transport_failures_are_retryable():
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    assert classify(httpx2.ReadTimeout("slow", request=request)).kind == "timeout"
    assert classify(httpx2.ConnectError("refused", request=request)).kind == "connection"
    import json

    try:
        json.loads("{not json")
    except json.JSONDecodeError as exc:
        assert classify(exc).kind == "malformed"


def _wrapped(transport_error: Exception) -> Exception:
    """As the SDKs raise it: their connection error, caused by the transport's."""
    try:
        try:
            raise transport_error
        except Exception as cause:
            raise openai.APIConnectionError(request=transport_error.request) from cause
    except openai.APIConnectionError as exc:
        return exc


@pytest.mark.parametrize(("error", "may_be_billed"), [
    (httpx2.RemoteProtocolError("Server disconnected without sending a response."), True),
    (httpx2.ReadError("connection reset"), True),
    (httpx2.ReadTimeout("slow"), True),
    (httpx2.ConnectError("refused"), False),
    (httpx2.ConnectTimeout("no route"), False),
    (httpx2.WriteError("broken pipe"), False),
])
def test_a_failure_after_the_request_was_sent_may_have_been_billed(error, may_be_billed):
    """One rule for "the provider may have billed this" (worker/paid_call.py ledgers it at its
    worst case): the request reached the provider and no usable reply came back."""
    error.request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(error).outcome_unknown is may_be_billed
    assert classify(_wrapped(error)).outcome_unknown is may_be_billed
    assert classify(_status_error(500)).outcome_unknown is False  # an HTTP error reply: not billed


def test_a_200_that_cannot_be_read_may_have_been_billed_and_a_request_refused_locally_not():
    import json

    from pydantic import BaseModel, ValidationError

    try:
        json.loads('{"choices": [{"mess')
    except json.JSONDecodeError as exc:
        assert (classify(exc).kind, classify(exc).outcome_unknown) == ("malformed", True)

    class Request(BaseModel):
        max_tokens: int

    try:
        Request(max_tokens="many")
    except ValidationError as exc:  # the SDK refused to build the request: nothing was sent
        assert classify(exc).outcome_unknown is False


def test_a_bug_is_not_retried_as_a_provider_fault():
    assert classify(TypeError("unexpected keyword argument")).retryable is False


def test_keys_are_scrubbed_from_error_messages(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdefghijklmnop")
    err = classify(_status_error(401, "Incorrect API key provided: sk-live-abcdefghijklmnop"))
    assert "abcdefghijklmnop" not in str(err) and "[redacted]" in str(err)
    assert "sk-proj-" not in scrub_secrets("key sk-proj-****abcd was rejected")
    assert scrub_secrets("a key-value store for task-12345") == "a key-value store for task-12345"
    assert isinstance(err, ProviderError)


def test_config_queues_and_key_checks_derive_from_the_provider_registry() -> None:
    from typing import get_args

    from shared.config.tables import Provider
    from shared.providers import PROVIDERS, key_env, queue_for
    from shared.messaging import app
    from shared.providers import PROVIDER_QUEUES

    assert set(get_args(Provider)) == set(PROVIDERS) == {"openai", "anthropic", "mistral"}
    assert set(PROVIDER_QUEUES) == {queue_for(name) for name in PROVIDERS}
    assert {q.name for q in app.conf.task_queues} == set(PROVIDER_QUEUES) | {"reports", "batches"}
    assert key_env("anthropic") == "ANTHROPIC_API_KEY" and PROVIDERS["openai"].base_url_env == "OPENAI_BASE_URL"
