"""Every failure of a provider call becomes a `ProviderError` with a `kind` the worker's retry
policy understands; keys are scrubbed from whatever an error echoes."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

DEADLINE_EXCEEDED = "DeadlineExceeded"
RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection", "malformed"})


class ProviderError(Exception):
    """A failed call, classified: rate_limit | server | timeout | connection | malformed |
    client | auth | config | refused_setting (a 400 naming a generation setting the model does
    not take, in `param`: a configuration error of the backend). Only the first five are worth
    retrying."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
        billed: tuple[int, int] | None = None,
        usage_reported: bool = True,
        param: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        # (input, output) tokens of a failure the provider billed anyway (a 200 without choices)
        self.billed = billed
        # The request reached the provider but no usable reply came back (a 200 that cannot be
        # parsed, a connection lost after sending): it may have been billed, at an unknown cost.
        self.outcome_unknown = outcome_unknown
        self.usage_reported = usage_reported
        self.status = status
        self.headers = dict(headers or {})
        self.error_type = error_type or kind
        self.param = param

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    @property
    def past_deadline(self) -> bool:
        """The call was abandoned at its deadline and goes on: its outcome comes to `on_late`."""
        return self.error_type == DEADLINE_EXCEEDED



# The error codes OpenAI's (and compatible servers') 400s give a setting a model does not take.
REFUSED_SETTING_CODES = frozenset({"unsupported_parameter", "unsupported_value"})


def refused_setting_line(backend: str, model: str, err: ProviderError) -> str:
    """The one line a user reads when a backend's model refuses one of its settings."""
    return (f"backend {backend!r}: model {model!r} refuses the setting {err.param!r} "
            f"(a configuration error: change [backends.{backend}]; not retried): {err}")


def _error_fields(exc: BaseException) -> dict[str, Any]:
    """The provider's error object (`param`, `code`, ...) from an SDK exception, if it has one."""
    body = getattr(exc, "body", None)
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status in (408, 409) or status >= 500:  # 529 = Anthropic overloaded
        return "server"
    return "client"


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}")  # OpenAI/Anthropic key shapes, masked or not
# The variables that hold keys: each provider's (the registry) and each backend's api_key_env
# (the clients, when they read one). Told to this module, so it imports neither.
_KEY_VARIABLES: set[str] = set()


def register_key_variable(name: str) -> None:
    _KEY_VARIABLES.add(name)


def scrub_secrets(text: str) -> str:
    """Error bodies can echo a (masked) key; keys never reach SQL, logs or reports."""
    for key_var in sorted(_KEY_VARIABLES):
        value = os.environ.get(key_var)
        if value and len(value) >= 12:  # real keys are long; short dummies would mangle words
            text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", "[redacted]", text)
    return _KEY_LIKE.sub("[redacted]", text)


# Transport failures that happen before a request is wholly sent (refused, unresolved, no
# connection from the pool, the request's own write failing): the provider never had it.
_BEFORE_SENDING = ("connecterror", "connecttimeout", "pooltimeout", "writeerror", "writetimeout",
                   "localprotocolerror", "unsupportedprotocol", "proxyerror", "invalidurl")


def _sent(exc: BaseException) -> bool:
    """Whether a failed call's request may have reached the provider: yes unless the exception or
    what it wraps (an SDK's connection error wraps the transport's) failed before sending."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__.lower() in _BEFORE_SENDING:
            return False
        exc = exc.__cause__ or exc.__context__
    return True


def _unreadable_reply(lowered_name: str) -> bool:
    """A 200 whose body cannot be decoded or validated: the provider answered, so it billed it.
    (A bare validation error may be the SDK refusing to build a request: nothing was sent.)"""
    return "decode" in lowered_name or "response" in lowered_name


def classify(exc: BaseException) -> ProviderError:
    """Map any SDK or transport exception to a ProviderError, without importing SDKs eagerly."""
    name = type(exc).__name__
    message = scrub_secrets(str(exc) or name)
    if len(message) > 500:
        message = message[:500] + "…"

    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None) or getattr(exc, "raw_response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    headers = {}
    if response is not None and getattr(response, "headers", None) is not None:
        headers = {k.lower(): v for k, v in dict(response.headers).items()}
    elif getattr(exc, "headers", None) is not None:
        headers = {k.lower(): v for k, v in dict(exc.headers).items()}

    if status == 400:
        fields = _error_fields(exc)
        if fields.get("code") in REFUSED_SETTING_CODES and isinstance(fields.get("param"), str):
            return ProviderError("refused_setting", message, status=status, headers=headers, error_type=name,
                                 param=fields["param"])
    if isinstance(status, int) and status >= 400:
        return ProviderError(_kind_for_status(status), message, status=status, headers=headers, error_type=name)
    lowered = name.lower()
    if "timeout" in lowered:
        return ProviderError("timeout", message, error_type=name, outcome_unknown=_sent(exc))
    if ("connect" in lowered or "network" in lowered or "remoteprotocol" in lowered or "noresponse" in lowered
            or "readerror" in lowered):  # a connection reset while reading the reply
        return ProviderError("connection", message, error_type=name, outcome_unknown=_sent(exc))
    if "validation" in lowered or "decode" in lowered:  # a reply that cannot be read, or a request refused locally
        return ProviderError("malformed", message, error_type=name, outcome_unknown=_unreadable_reply(lowered))
    if "transport" in lowered or "protocol" in lowered:
        return ProviderError("connection", message, error_type=name, outcome_unknown=_sent(exc))
    return ProviderError("client", message, error_type=name)
