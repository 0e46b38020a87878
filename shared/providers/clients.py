"""SDK clients, built once per (worker thread, provider, endpoint) and reused: creating one
costs ~35 ms of CPU, and one client shared by many threads contends on its connection pool
(design §8). SDK retries are off: retries are ours, so they respect the global limiter and budget."""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Any

from shared.providers.deadline import LATE_READ_FACTOR
from shared.providers.errors import ProviderError
from shared.providers.mistral_models import cache_wrapper_models

if TYPE_CHECKING:
    from shared.providers.registry import ProviderSpec

_local = threading.local()


def credentials(spec: "ProviderSpec") -> tuple[str | None, str | None]:
    """The key and base URL from this process's environment only (never passed around)."""
    return os.environ.get(spec.key_env) or None, os.environ.get(spec.base_url_env) or None


def client_for(spec: "ProviderSpec", timeout_s: float) -> Any:
    key, base_url = credentials(spec)
    if not key:
        raise ProviderError("config", f"{spec.key_env} is not set in the worker's environment")
    cache: dict = _local.__dict__.setdefault("clients", {})
    cache_key = (spec.name, base_url, hash(key), timeout_s)
    client = cache.get(cache_key)
    if client is None:
        client = cache[cache_key] = spec.build_client(key, base_url, read_timeout_s(timeout_s))
    return client


def close_thread_clients() -> None:
    """Close this thread's SDK clients and their connections (a helper thread that abandoned
    a call past its deadline, on its way out)."""
    for client in _local.__dict__.pop("clients", {}).values():
        # openai/anthropic close their own; Mistral's is the httpx client we gave it (build_mistral)
        http = client if hasattr(client, "close") else getattr(client.sdk_configuration, "client", None)
        try:
            if http is not None:
                http.close()
        except Exception:  # noqa: BLE001 - closing is tidying; the thread ends either way
            pass


def read_timeout_s(deadline_s: float) -> float:
    """The SDK's per-read timeout: longer than the call's deadline, so a late answer still
    arrives to be ledgered (the deadline, not the SDK, bounds how long the worker waits)."""
    return deadline_s * LATE_READ_FACTOR


def _httpx() -> Any:
    """The HTTP library the installed SDKs are built on (httpx2 in current releases, httpx before)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # older SDK generations
        import httpx

        return httpx


_tls_lock = threading.Lock()
_tls_context: Any = None


def tls_context() -> Any:
    """One TLS context per process, shared by every client (thread-safe): each SDK client would
    otherwise load the CA bundle into a context of its own (~21 ms of CPU and ~0.8 MB each).
    Built under a lock, and by workers at start (`prepare`): the first jobs reach every thread
    at once, and 32 threads each building one left ~1 MB apiece of freed OpenSSL heap resident."""
    global _tls_context
    if _tls_context is None:
        with _tls_lock:
            if _tls_context is None:
                _tls_context = _httpx().create_ssl_context()
    return _tls_context


def prepare(spec: "ProviderSpec") -> None:
    """What a process that will call `spec`'s provider pays once, before its first job: the SDK
    import (~0.4-1 s of CPU, 6-42 MB) and the TLS context."""
    importlib.import_module(spec.sdk_module)
    tls_context()


def build_openai(key: str, base_url: str | None, timeout_s: float) -> Any:
    import openai

    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s,
                         http_client=openai.DefaultHttpxClient(verify=tls_context()))


def build_anthropic(key: str, base_url: str | None, timeout_s: float) -> Any:
    import anthropic

    return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s,
                               http_client=anthropic.DefaultHttpxClient(verify=tls_context()))


def build_mistral(key: str, base_url: str | None, timeout_s: float) -> Any:
    from mistralai.client import Mistral

    cache_wrapper_models()  # here, so every process that calls Mistral gets it (idempotent, <1 µs once applied)
    httpx = _httpx()
    return Mistral(api_key=key, server_url=base_url, timeout_ms=int(timeout_s * 1000),
                   client=httpx.Client(verify=tls_context(), follow_redirects=True),
                   async_client=httpx.AsyncClient(verify=tls_context(), follow_redirects=True))
