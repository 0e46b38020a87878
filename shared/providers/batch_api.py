"""The providers' batch APIs over their official SDKs (design §11): submit a batch of chat
requests, poll it, read its results, cancel it. OpenAI and Mistral take a JSONL file (uploaded
through their files API) and answer with output and error files; Anthropic takes the requests
inline (`messages.batches`) and streams JSONL results from the batch's `results_url`.

Every request's `custom_id` names its job, so results match jobs whatever their order. Every
SDK failure comes out as a classified ProviderError (keys scrubbed), as for realtime calls."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

from shared.providers.adapters import SIMULATOR_HEADER, ChatRequest, ChatResponse, _messages, thinking_tokens
from shared.providers.params import anthropic_arguments, mistral_arguments, openai_arguments
from shared.providers.errors import ProviderError, classify

ENDPOINT = "/v1/chat/completions"
# What a poll found, in our words: the batch is still running, or ended (results to read),
# or ended without results the provider will ever give (expired, failed).
RUNNING, ENDED, EXPIRED, FAILED = "running", "ended", "expired", "failed"


@dataclass(frozen=True)
class Polled:
    phase: str  # RUNNING | ENDED | EXPIRED | FAILED
    status: str  # the provider's own word
    reason: str | None = None  # why it expired or failed, in the provider's words


@dataclass(frozen=True)
class Result:
    """One request's outcome: an answer, or why there is none (`kind`: errored, canceled, expired)."""

    custom_id: str
    kind: str  # succeeded | errored | canceled | expired
    response: ChatResponse | None = None
    error: str | None = None


@dataclass(frozen=True)
class LostSubmission:
    """A batch whose submitter died before it wrote the provider's batch id: what we know to
    recognise it at the provider. OpenAI and Mistral carry our `metadata`; an Anthropic Message
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
_CUSTOM_ID = re.compile(r"b(\d+)-job(\d+)")


def custom_id(batch_id: int, job_id: int) -> str:
    """A request's id: its job in our batch, so only our batch's own requests match its jobs."""
    return f"b{batch_id}-job{job_id}"


def job_of(custom: str, batch_id: int) -> int | None:
    """The job a result of our batch `batch_id` answers (None: not a request of that batch)."""
    found = _CUSTOM_ID.fullmatch(custom)
    return int(found[2]) if found and int(found[1]) == batch_id else None


def _created_since(listing: Callable[[], Iterable[Any]], since: datetime,
                   created: Callable[[Any], datetime]) -> list[Any]:
    """The provider's batches created since `since`, from a newest-first listing that pages on
    by itself; Undecided when there are more than we look through (an incomplete list could
    make a lost batch look absent)."""
    def scan() -> list[Any]:
        found = []
        for batch in listing():
            if created(batch) < since:
                return found
            if len(found) >= SCAN_LIMIT:
                raise Undecided(f"more than {SCAN_LIMIT} batches created since {since:%Y-%m-%d %H:%M:%S}")
            found.append(batch)
        return found

    return _sdk(scan)


def _sdk(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified, as realtime calls are
        raise classify(exc) from None


# --- OpenAI and Mistral: a JSONL file in, output and error files out ---------------------------


def _jsonl(lines: Iterable[dict]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def _openai_line(cid: str, req: ChatRequest) -> dict:
    return {"custom_id": cid, "method": "POST", "url": ENDPOINT,
            "body": {"model": req.model, "messages": _messages(req), **openai_arguments(req.max_tokens, req.params)}}


def _simulator_mark(headers: Any) -> dict[str, str]:
    """The simulator's header of the response that carried a batch's results (answers from it
    are recorded as simulated, as a realtime call's are), else nothing."""
    value = headers.get(SIMULATOR_HEADER)
    return {SIMULATOR_HEADER: value} if value is not None else {}


def _chat_result(cid: str, line: dict, mark: dict[str, str]) -> Result:
    """A line of an OpenAI or Mistral output/error file: a chat completion body, or an error."""
    response = line.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    if response.get("status_code") == 200 and isinstance(body, dict) and body.get("choices"):
        choice = body["choices"][0]
        content = (choice.get("message") or {}).get("content") or ""
        if not isinstance(content, str):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        usage = body.get("usage")
        details = (usage or {}).get("completion_tokens_details") or {}
        return Result(cid, "succeeded", ChatResponse(
            text=content, input_tokens=(usage or {}).get("prompt_tokens") or 0,
            output_tokens=(usage or {}).get("completion_tokens") or 0, latency_ms=0.0,
            finish_reason=choice.get("finish_reason"), headers=mark, usage_reported=usage is not None,
            reasoning_tokens=(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0))
    error = line.get("error") or (body or {}).get("error") or body or "no answer"
    message = error.get("message") if isinstance(error, dict) else str(error)
    return Result(cid, "errored", error=f"{response.get('status_code') or 'error'}: {message}"[:500])


def _file_lines(raw: bytes) -> list[dict]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _result_files(file_ids: Iterable[str | None], download: Callable[[str], Any]) -> list[Result]:
    """Every line of a batch's output and error files (OpenAI, Mistral); `download(file_id)`
    answers an HTTP response whose headers say whether the simulator served it."""
    found: list[Result] = []
    for file_id in file_ids:
        if file_id:
            response = _sdk(lambda: download(file_id))
            mark = _simulator_mark(response.headers)
            found += [_chat_result(line.get("custom_id", ""), line, mark) for line in _file_lines(_sdk(response.read))]
    return found


def _carrying(listed: list[Any], lost: LostSubmission) -> str | None:
    """The listed batch whose metadata names our lost one (OpenAI, Mistral)."""
    return next((b.id for b in listed if bool(lost.metadata) and all(
        (b.metadata or {}).get(key) == value for key, value in lost.metadata.items())), None)


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class OpenAIBatches:
    def submit(self, cli: Any, model: str, lines: list[tuple[str, ChatRequest]], metadata: dict[str, str]) -> str:
        data = _jsonl(_openai_line(cid, req) for cid, req in lines)
        uploaded = _sdk(lambda: cli.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch"))
        batch = _sdk(lambda: cli.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                                completion_window="24h", metadata=metadata))
        return batch.id

    def poll(self, cli: Any, batch_id: str) -> Polled:
        batch = _sdk(lambda: cli.batches.retrieve(batch_id))
        reason = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else None
        phase = {"completed": ENDED, "cancelled": ENDED, "expired": EXPIRED, "failed": FAILED}.get(batch.status,
                                                                                                   RUNNING)
        if batch.status == "expired" and (batch.output_file_id or batch.error_file_id):
            phase = ENDED  # what it answered before expiring is billed: read it; the rest is missing
        return Polled(phase, batch.status, reason or (f"batch {batch.status}" if phase in (EXPIRED, FAILED) else None))

    def results(self, cli: Any, batch_id: str) -> list[Result]:
        batch = _sdk(lambda: cli.batches.retrieve(batch_id))
        return _result_files((batch.output_file_id, batch.error_file_id),
                             lambda file_id: cli.files.content(file_id).response)

    def cancel(self, cli: Any, batch_id: str) -> None:
        _sdk(lambda: cli.batches.cancel(batch_id))

    def find(self, cli: Any, lost: LostSubmission) -> str | None:
        """The provider batch whose metadata says it is ours (None: the provider never got it)."""
        return _carrying(_created_since(lambda: cli.batches.list(limit=100), lost.since,
                                        lambda b: _epoch(b.created_at)), lost)


class MistralBatches:
    def submit(self, cli: Any, model: str, lines: list[tuple[str, ChatRequest]], metadata: dict[str, str]) -> str:
        data = _jsonl({"custom_id": cid, "body": {"messages": _messages(req),
                                                   **mistral_arguments(req.max_tokens, req.params)}}
                      for cid, req in lines)
        uploaded = _sdk(lambda: cli.files.upload(file={"file_name": "batch.jsonl", "content": data},
                                                 purpose="batch", retries=None))
        job = _sdk(lambda: cli.batch.jobs.create(endpoint=ENDPOINT, input_files=[uploaded.id], model=model,
                                                 metadata=metadata, retries=None))
        return job.id

    def poll(self, cli: Any, batch_id: str) -> Polled:
        job = _sdk(lambda: cli.batch.jobs.get(job_id=batch_id, retries=None))
        status = str(job.status)
        reason = "; ".join(e.message for e in job.errors or []) or None
        if status in ("SUCCESS", "CANCELLED") or (status in ("TIMEOUT_EXCEEDED", "FAILED") and
                                                 (job.output_file or job.error_file)):
            return Polled(ENDED, status, reason)
        if status == "TIMEOUT_EXCEEDED":
            return Polled(EXPIRED, status, reason or "batch job timed out")
        if status == "FAILED":
            return Polled(FAILED, status, reason or "batch job failed")
        return Polled(RUNNING, status)

    def results(self, cli: Any, batch_id: str) -> list[Result]:
        job = _sdk(lambda: cli.batch.jobs.get(job_id=batch_id, retries=None))
        return _result_files((job.output_file, job.error_file),
                             lambda file_id: cli.files.download(file_id=file_id, retries=None))

    def cancel(self, cli: Any, batch_id: str) -> None:
        _sdk(lambda: cli.batch.jobs.cancel(job_id=batch_id, retries=None))

    def find(self, cli: Any, lost: LostSubmission) -> str | None:
        def pages() -> Iterator[Any]:  # newest first, page by page
            page = 0
            while True:
                listed = cli.batch.jobs.list(page=page, page_size=100, created_after=lost.since, retries=None)
                yield from listed.data or []
                page += 1
                if not listed.data or page * 100 >= (listed.total or 0):
                    return

        return _carrying(_created_since(pages, lost.since, lambda j: _epoch(j.created_at)), lost)


# --- Anthropic: requests inline, JSONL results at the batch's results_url ----------------------


class AnthropicBatches:
    def submit(self, cli: Any, model: str, lines: list[tuple[str, ChatRequest]], metadata: dict[str, str]) -> str:
        requests = [{"custom_id": cid, "params": {"model": req.model, **anthropic_arguments(req.max_tokens, req.params),
                                                  "messages": [{"role": "user", "content": req.prompt}],
                                                  **({"system": req.system} if req.system else {})}}
                    for cid, req in lines]
        return _sdk(lambda: cli.messages.batches.create(requests=requests)).id

    def poll(self, cli: Any, batch_id: str) -> Polled:
        batch = _sdk(lambda: cli.messages.batches.retrieve(batch_id))
        return Polled(ENDED if batch.processing_status == "ended" else RUNNING, batch.processing_status)

    def results(self, cli: Any, batch_id: str) -> list[Result]:
        found = []
        decoder = _sdk(lambda: cli.messages.batches.results(batch_id))
        mark = _simulator_mark(decoder.http_response.headers)
        for entry in _sdk(lambda: list(decoder)):
            result = entry.result
            if result.type == "succeeded":
                message = result.message
                usage = getattr(message, "usage", None)
                found.append(Result(entry.custom_id, "succeeded", ChatResponse(
                    text="".join(getattr(block, "text", "") for block in message.content),
                    input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
                    latency_ms=0.0, finish_reason=message.stop_reason, headers=mark,
                    usage_reported=usage is not None,
                    reasoning_tokens=thinking_tokens(message.content, usage.output_tokens if usage else 0))))
            elif result.type == "errored":
                found.append(Result(entry.custom_id, "errored",
                                    error=f"{result.error.error.type}: {result.error.error.message}"[:500]))
            else:
                found.append(Result(entry.custom_id, result.type, error=f"request {result.type}"))
        return found

    def cancel(self, cli: Any, batch_id: str) -> None:
        _sdk(lambda: cli.messages.batches.cancel(batch_id))

    def find(self, cli: Any, lost: LostSubmission) -> str | None:
        """Message Batches carry no metadata: a batch created since the submission began, of its
        size, is ours once it has ended and its first result names one of our requests. Until
        then it is undecided (its jobs wait for it either way); None when no batch could be."""
        counts = ("processing", "succeeded", "errored", "canceled", "expired")
        candidates = [b for b in _created_since(lambda: cli.messages.batches.list(limit=100), lost.since,
                                                lambda b: b.created_at)
                      if b.id not in lost.known
                      and sum(getattr(b.request_counts, name) for name in counts) == len(lost.custom_ids)]
        running = 0
        for batch in candidates:
            if batch.processing_status != "ended":
                running += 1
            elif _first_custom_id(cli, batch.id) in lost.custom_ids:
                return batch.id
        if running:
            raise Undecided(f"{running} running Anthropic batch(es) of its size created since "
                            f"{lost.since:%H:%M:%S}: told apart by their results once ended")
        return None


def _first_custom_id(cli: Any, batch_id: str) -> str | None:
    """Of an ended Message Batch: its first result's custom id (streamed; the rest is not read)."""
    first = _sdk(lambda: next(iter(cli.messages.batches.results(batch_id)), None))
    return first.custom_id if first is not None else None


BATCH_APIS: dict[str, Any] = {"openai": OpenAIBatches(), "mistral": MistralBatches(), "anthropic": AnthropicBatches()}
