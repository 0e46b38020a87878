"""Provider calls behind one function, `complete(provider, request)`: the registry says which
SDK adapter, client and environment variables a provider uses; every failure comes out as a
classified `ProviderError`. Keys and base URLs are read from this process's environment only."""

from __future__ import annotations

from shared.providers.adapters import TEMPERATURE, ChatRequest, ChatResponse
from shared.providers.clients import client_for
from shared.providers.clients import credentials as _credentials
from shared.providers.errors import RETRYABLE_KINDS, ProviderError, classify, scrub_secrets
from shared.providers.registry import PROVIDER_NAMES, PROVIDER_QUEUES, PROVIDERS, ProviderSpec, queue_for

__all__ = [
    "PROVIDERS", "PROVIDER_NAMES", "PROVIDER_QUEUES", "RETRYABLE_KINDS", "TEMPERATURE", "ChatRequest", "ChatResponse",
    "ProviderError", "ProviderSpec", "classify", "complete", "credentials", "key_env", "queue_for", "scrub_secrets",
]


def credentials(provider: str) -> tuple[str | None, str | None]:
    return _credentials(PROVIDERS[provider])


def key_env(provider: str) -> str:
    """The variable that must hold this provider's API key on the worker hosts."""
    return PROVIDERS[provider].key_env


def complete(provider: str, req: ChatRequest) -> ChatResponse:
    """Make one call; any failure comes out as a classified ProviderError."""
    spec = PROVIDERS[provider]
    try:
        return spec.call(client_for(spec, req.timeout_s), req)
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ProviderError
        raise classify(exc) from exc
