"""How our batches are known at their provider (design §11, §12): the names we give them (our
deployment's id and the batch's, in its metadata and every request's custom id), what we know
of a submission whose batch id never reached SQL (`LostSubmission`, for the providers' `find`),
and which failed creates the provider certainly refused: any other may have created the batch,
which is then looked up, never sent again blindly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.providers.errors import ProviderError

METADATA_KEY = "genesis_batch"  # our deployment and batch id in the provider's metadata


@dataclass(frozen=True)
class LostSubmission:
    """A batch whose provider id never reached SQL (its submitter died, or the create's reply was
    lost): what we know to recognise it at the provider. OpenAI and Mistral carry our `metadata`; an Anthropic Message
    Batch carries none, so there it is a batch created since `started_at` with as many
    requests, not already ours (`known`), whose results, once it has ended, name our requests
    (`custom_ids`: they carry our batch id). Size alone is never enough: two lost batches of
    one size, or another client's, would be taken for each other, and one of them paid twice."""

    metadata: dict[str, str]
    custom_ids: frozenset[str]
    started_at: datetime  # when the submitter took the batch (our clock; with its zone)
    known: frozenset[str]  # provider batch ids our other batches hold

    @property
    def since(self) -> datetime:
        """Batches created before this are not it (the provider's clock may be off ours)."""
        return self.started_at - CLOCK_SLACK


class Undecided(Exception):
    """The provider cannot tell yet whether it holds the lost batch (a batch that could be it is
    still running, or more were created since than we look through): ask again later; sending
    it again could pay twice."""


CLOCK_SLACK = timedelta(minutes=5)  # the provider's clock against ours, when matching by creation time
SCAN_LIMIT = 1000  # batches created since a lost submission began that we look through, at most
_CUSTOM_ID = re.compile(r"g([0-9a-f]+)-b(\d+)-job(\d+)")
_LEGACY_CUSTOM_ID = re.compile(r"b(\d+)-job(\d+)")  # sent before deployments had an id
_NAMED = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')  # the request an unreadable line names


@dataclass(frozen=True)
class OurBatch:
    """How one of our batches is named at its provider: our deployment's id (one per database,
    shared.batches.deployment_id) and the batch's SQL id, in its metadata and in every request's
    custom id. Two deployments sharing one API key number their batches and jobs alike; with
    the deployment in every name, neither adopts nor reads the other's batch."""

    deployment: str
    batch_id: int

    @property
    def metadata(self) -> dict[str, str]:
        return {METADATA_KEY: f"{self.deployment}-{self.batch_id}"}

    def custom_id(self, job_id: int) -> str:
        """A request's id: its job in this batch of this deployment."""
        return f"g{self.deployment}-b{self.batch_id}-job{job_id}"

    def job_of(self, custom: str) -> int | None:
        """The job a result of this batch answers (None: not a request of this batch). A batch
        sent before deployments had an id (polled by its provider id, so ours) names its jobs
        without one."""
        found = _CUSTOM_ID.fullmatch(custom)
        if found:
            return int(found[3]) if found[1] == self.deployment and int(found[2]) == self.batch_id else None
        legacy = _LEGACY_CUSTOM_ID.fullmatch(custom)
        return int(legacy[2]) if legacy and int(legacy[1]) == self.batch_id else None


class CreateUnanswered(ProviderError):
    """A batch create whose outcome is unknown (a read timeout, a reset, a 5xx, a proxy's
    included): the provider may hold the batch and bill it. Never sent again before `find`
    says the provider has none (design §12)."""

    def __init__(self, err: ProviderError) -> None:
        super().__init__(err.kind, f"create outcome unknown: {err}", status=err.status, headers=err.headers,
                         error_type=err.error_type)


_NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout"})  # httpx: no connection, so no request went out


def refused_for_certain(exc: BaseException, status: int | None) -> bool:
    """A create the provider certainly did not take: a 4xx it answered with a body (not 408, a
    proxy's "request timeout"), or no connection at all. Anything else may have created it."""
    if status is not None and 400 <= status < 500 and status != 408:
        response = getattr(exc, "response", None) or getattr(exc, "raw_response", None)
        return bool(getattr(exc, "body", None) or getattr(response, "content", None))
    link: BaseException | None = exc
    while link is not None:
        if type(link).__name__ in _NEVER_SENT:
            return True
        link = link.__cause__ or link.__context__
    return False


def named_request(raw: bytes) -> str | None:
    """The custom id a (possibly unreadable) results line names, if one can be found in it."""
    found = _NAMED.search(raw)
    return found[1].decode() if found else None
