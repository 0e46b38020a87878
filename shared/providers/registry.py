"""The one list of providers. Config validation (shared.config), the Celery queues (worker.app),
key checks at submit and the adapters all derive from it, so adding a provider is one entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from shared.providers import adapters, clients
from shared.providers.adapters import ChatRequest, ChatResponse
from shared.providers.errors import register_key_variable


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # what `provider = "..."` in a backend table takes
    queue: str  # the Celery queue its jobs go to
    key_env: str  # API key variable, read only by the worker making the call
    base_url_env: str  # endpoint override, in the form the SDK takes
    build_client: Callable[[str, str | None, float], Any]
    call: Callable[[Any, ChatRequest], ChatResponse]
    sdk_module: str  # imported at worker start by workers that consume `queue`


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("openai", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", clients.build_openai, adapters.call_openai,
                     "openai"),
        ProviderSpec("anthropic", "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", clients.build_anthropic,
                     adapters.call_anthropic, "anthropic"),
        ProviderSpec("mistral", "mistral", "MISTRAL_API_KEY", "MISTRAL_BASE_URL", clients.build_mistral,
                     adapters.call_mistral, "mistralai.client"),
    )
}
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)
for _spec in PROVIDERS.values():
    register_key_variable(_spec.key_env)
PROVIDER_QUEUES: tuple[str, ...] = tuple(dict.fromkeys(spec.queue for spec in PROVIDERS.values()))


def queue_for(provider: str) -> str:
    return PROVIDERS[provider].queue
