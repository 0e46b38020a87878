"""The providers' batch APIs over their official SDKs (design §11): submit a batch of chat
requests, poll it, read its results, cancel it. OpenAI and Mistral take a JSONL file (uploaded
through their files API) and answer with output and error files; Anthropic takes the requests
inline (`messages.batches`) and streams JSONL results from the batch's `results_url`.

Every request's `custom_id` names its job, its batch and our deployment (`OurBatch`), so results
match jobs whatever their order, and deployments sharing one API key never take each other's
batches. Every SDK failure comes out as a classified ProviderError (keys scrubbed), as for
realtime calls; a batch create whose outcome is unknown comes out as `CreateUnanswered`.
A results line that cannot be read is a Result of kind `unreadable`, not a failed read."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from shared.providers.adapters import SIMULATOR_HEADER, ChatRequest, ChatResponse, _messages, thinking_tokens
from shared.providers.batch_names import (SCAN_LIMIT, CreateUnanswered, LostSubmission, Undecided, named_request,
                                         refused_for_certain)
from shared.providers.params import anthropic_arguments, mistral_arguments, openai_arguments
from shared.providers.errors import ProviderError, classify

ENDPOINT = "/v1/chat/completions"
# What a poll found, in our words: the batch is still running, or ended (results to read),
# or ended without results the provider will ever give (expired, failed).
RUNNING, ENDED, EXPIRED, FAILED = "running", "ended", "expired", "failed"
UNREADABLE = "unreadable"  # a Result whose line of the results file could not be read


@dataclass(frozen=True)
class Polled:
    phase: str  # RUNNING | ENDED | EXPIRED | FAILED
    status: str  # the provider's own word
    reason: str | None = None  # why it expired or failed, in the provider's words


@dataclass(frozen=True)
class Result:
    """One request's outcome: an answer, or why there is none (`kind`: errored, canceled, expired,
    unreadable)."""

    custom_id: str  # "" when an unreadable line names no request
    kind: str  # succeeded | errored | canceled | expired | unreadable
    response: ChatResponse | None = None
    error: str | None = None


def _create(call: Callable[[], Any]) -> Any:
    """A batch create: a failure the provider certainly refused is a ProviderError (submitting
    again is safe); any other is CreateUnanswered."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - classified, as realtime calls are
        err = exc if isinstance(exc, ProviderError) else classify(exc)
        if refused_for_certain(exc, err.status):
            raise err from None
        raise CreateUnanswered(err) from None


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


def _unreadable(raw: bytes, why: Exception) -> Result:
    """A results line that cannot be read: the request it names, if its custom id can be found."""
    return Result(named_request(raw) or "", UNREADABLE,
                  error=f"its results line could not be read ({type(why).__name__})")


def _read_lines(raw: bytes, read: Callable[[dict], Result]) -> list[Result]:
    """Every line of a results file, each read on its own: one corrupt line costs that request
    (an `unreadable` Result), not the whole file."""
    found = []
    for line in raw.splitlines():
        if line.strip():
            try:
                parsed = json.loads(line)
                found.append(read(parsed if isinstance(parsed, dict) else {}))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as why:
                found.append(_unreadable(line, why))
    return found


def _result_files(file_ids: Iterable[str | None], download: Callable[[str], Any]) -> list[Result]:
    """Every line of a batch's output and error files (OpenAI, Mistral); `download(file_id)`
    answers an HTTP response whose headers say whether the simulator served it."""
    found: list[Result] = []
    for file_id in file_ids:
        if file_id:
            response = _sdk(lambda: download(file_id))
            mark = _simulator_mark(response.headers)
            found += _read_lines(_sdk(response.read), lambda line: _chat_result(str(line["custom_id"]), line, mark))
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
        batch = _create(lambda: cli.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
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
        job = _create(lambda: cli.batch.jobs.create(endpoint=ENDPOINT, input_files=[uploaded.id], model=model,
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
        return _create(lambda: cli.messages.batches.create(requests=requests)).id

    def poll(self, cli: Any, batch_id: str) -> Polled:
        batch = _sdk(lambda: cli.messages.batches.retrieve(batch_id))
        return Polled(ENDED if batch.processing_status == "ended" else RUNNING, batch.processing_status)

    def results(self, cli: Any, batch_id: str) -> list[Result]:
        decoder = _sdk(lambda: cli.messages.batches.results(batch_id))  # read line by line here, not by the SDK
        mark = _simulator_mark(decoder.http_response.headers)
        return _read_lines(_sdk(decoder.http_response.read), lambda entry: _anthropic_result(entry, mark))

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


def _anthropic_result(entry: dict, mark: dict[str, str]) -> Result:
    """A line of a Message Batch's results: a message, an error, or why there is none."""
    result = entry["result"]
    if result["type"] == "succeeded":
        message = result["message"]
        usage = message.get("usage")
        return Result(str(entry["custom_id"]), "succeeded", ChatResponse(
            text="".join(block.get("text") or "" for block in message["content"]),
            input_tokens=(usage or {}).get("input_tokens") or 0, output_tokens=(usage or {}).get("output_tokens") or 0,
            latency_ms=0.0, finish_reason=message.get("stop_reason"), headers=mark, usage_reported=usage is not None,
            reasoning_tokens=thinking_tokens(message["content"], (usage or {}).get("output_tokens") or 0)))
    if result["type"] == "errored":
        error = result["error"]["error"]
        return Result(str(entry["custom_id"]), "errored", error=f"{error['type']}: {error['message']}"[:500])
    if result["type"] in ("canceled", "expired"):
        return Result(str(entry["custom_id"]), result["type"], error=f"request {result['type']}")
    raise ValueError(f"unknown result type {result['type']!r}")


def _first_custom_id(cli: Any, batch_id: str) -> str | None:
    """Of an ended Message Batch: the first custom id its results name (streamed line by line;
    the rest is not read)."""
    def first() -> str | None:
        decoder = cli.messages.batches.results(batch_id)
        try:
            for line in decoder.http_response.iter_lines():
                found = named_request(line.encode())
                if found:
                    return found
            return None
        finally:
            decoder.close()

    return _sdk(first)


BATCH_APIS: dict[str, Any] = {"openai": OpenAIBatches(), "mistral": MistralBatches(), "anthropic": AnthropicBatches()}
