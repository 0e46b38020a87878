"""Provider calls behind one function, `complete(provider, request)`: the registry says which
SDK adapter, client and environment variables a provider uses; every failure comes out as a
classified `ProviderError`. Keys and base URLs are read from this process's environment only."""

from __future__ import annotations

from typing import Callable

from shared.providers.adapters import ChatRequest, ChatResponse
from shared.providers.clients import client_for, close_thread_clients
from shared.providers.deadline import DeadlineExceeded, within
from shared.providers.errors import DEADLINE_EXCEEDED, RETRYABLE_KINDS, ProviderError, classify, scrub_secrets
from shared.providers.registry import PROVIDER_NAMES, PROVIDER_QUEUES, PROVIDERS, ProviderSpec, queue_for

__all__ = [
    "PROVIDERS", "PROVIDER_NAMES", "PROVIDER_QUEUES", "RETRYABLE_KINDS", "ChatRequest", "ChatResponse",
    "ProviderError", "ProviderSpec", "classify", "complete", "key_env", "queue_for", "scrub_secrets",
]


def key_env(provider: str, api_key_env: str | None = None) -> str:
    """The variable that must hold the key on the worker hosts: a backend's own `api_key_env`,
    else its provider's."""
    return api_key_env or PROVIDERS[provider].key_env


def complete(provider: str, req: ChatRequest, *,
             on_late: Callable[[ChatResponse | ProviderError], None] | None = None) -> ChatResponse:
    """Make one call within a total deadline of `req.timeout_s`; any failure comes out as a
    classified ProviderError. A call past its deadline goes on: its outcome (an answer, which
    was billed, or a ProviderError) is handed to `on_late` when it ends, and its connection is
    closed then (shared.providers.deadline)."""
    def late(done) -> None:
        if on_late is not None:
            error = done.exception()
            on_late(done.result() if error is None else error if isinstance(error, ProviderError) else classify(error))

    try:
        return within(req.timeout_s, lambda: _complete_here(provider, req), on_late=late, on_exit=close_thread_clients)
    except DeadlineExceeded:
        raise ProviderError("timeout", f"no complete answer within the {req.timeout_s:g}s deadline",
                            error_type=DEADLINE_EXCEEDED) from None


def _complete_here(provider: str, req: ChatRequest) -> ChatResponse:
    spec = PROVIDERS[provider]
    try:
        return spec.call(client_for(spec, req.timeout_s, req.base_url, req.key_env), req)
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ProviderError
        # `from None`: the SDK's own exception (whose text may echo a key) is not chained
        # under the scrubbed one, so no traceback prints it.
        raise classify(exc) from None
