"""The three providers' batch APIs, with the shapes their SDKs validate:

- OpenAI: `POST /v1/files` (multipart, purpose `batch`), `POST /v1/batches`, `GET /v1/batches[/{id}]`,
  `POST /v1/batches/{id}/cancel`, `GET /v1/files/{id}/content` (output and error files);
- Anthropic: `POST /v1/messages/batches`, `GET /v1/messages/batches[/{id}]`,
  `POST .../{id}/cancel`, `GET .../{id}/results` (the batch's `results_url`, JSONL);
- Mistral: `POST /v1/files` (purpose `batch`), `POST /v1/batch/jobs`, `GET /v1/batch/jobs[/{id}]`,
  `POST /v1/batch/jobs/{id}/cancel`, `GET /v1/files/{id}/content`.

Each request of a batch is answered by the same logic as a realtime call (`Simulator.completion`),
so a batch gives the answers a realtime run of the same seed gives. Time drives a batch: its
requests finish one by one over `batch_delay_s`; a cancel keeps those already finished (billed)
and cancels the rest; a batch drawn to expire (`batch_expire_rate`) or to fail (`batch_fail_rate`)
ends with nothing answered; `batch_error_rate` fails single requests; `batch_create_delay_s` holds
back the answer to a creation after the batch exists; `batch_create_lost_rate` loses the answer to
a creation after the batch exists (`batch_create_lost_as`: the connection reset, a proxy's 502, or
the answer held `timeout_s`), as a reply lost on the way back does; `batch_corrupt_rate` cuts a
request's line of the results short (not JSON), on every read. Lists are newest first, as the providers'.
`stats()` counts what was batched and billed, and the HTTP requests the batch and file routes served."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Iterable

from simulator.batch_wire import (BATCH_FAILURE, Item, SimBatch, anthropic_batch, anthropic_line, file_line,
                                  mistral_batch, openai_batch)
from simulator.wire import Api, BadRequest, ChatRequest, error_body, parse_chat_request

if TYPE_CHECKING:
    from simulator.server import Simulator

JSON, BINARY = "application/json", "application/octet-stream"
PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches", "/v1/batch/jobs")


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = JSON
    dropped: bool = False  # no answer at all: the connection is closed unanswered (a reset)


BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class BatchStore:
    """Files and batches of every API, in memory; `handle` routes one HTTP request."""

    def __init__(self, simulator: "Simulator") -> None:
        self.simulator = simulator
        self._lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, SimBatch] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every file and batch, and the counters (a new scenario on the same server)."""
        with self._lock:
            self.files.clear()
            self.batches.clear()
            self._rng = random.Random(self.simulator.config.seed + 1)
            self.counts: Counter[str] = Counter()
            self.by_api: Counter[str] = Counter()
            self.billed_by_model: Counter[str] = Counter()
            self.input_tokens = 0
            self.output_tokens = 0

    def stats(self) -> dict:
        """What was batched: batches created, requests in them, and per outcome; `succeeded` are
        the billed answers, with their tokens (at the realtime count, before any discount)."""
        with self._lock:
            return {"batches": dict(self.by_api), **{k: self.counts[k] for k in
                    ("requests", "succeeded", "errored", "cancelled", "expired", "failed", "cancels",
                     "creates_lost", "corrupt_lines", "http_requests")},
                    "billed_by_model": dict(self.billed_by_model), "input_tokens": self.input_tokens,
                    "output_tokens": self.output_tokens}

    # --- routing ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        """None when the path is not a batch or file route."""
        path = path.split("?", 1)[0].rstrip("/")
        parts = path.strip("/").split("/")
        with self._lock:
            self.counts["http_requests"] += 1
        mistral = "mistral" in headers.get("user-agent", "").lower()
        try:
            if parts[:2] == ["v1", "files"]:
                return self._files(method, parts[2:], headers, body, Api.MISTRAL if mistral else Api.OPENAI)
            if parts[:3] == ["v1", "messages", "batches"]:
                return self._batches(method, parts[3:], headers, body, Api.ANTHROPIC)
            if parts[:2] == ["v1", "batches"]:
                return self._batches(method, parts[2:], headers, body, Api.OPENAI)
            if parts[:3] == ["v1", "batch", "jobs"]:
                return self._batches(method, parts[3:], headers, body, Api.MISTRAL)
        except (BadRequest, ValueError, KeyError) as error:
            return _error(Api.MISTRAL if mistral else Api.OPENAI, 400, f"bad batch request: {error}")
        return None

    def _files(self, method: str, rest: list[str], headers: dict[str, str], body: bytes, api: Api) -> Answer:
        if method == "POST" and not rest:
            return self._upload(headers, body, api)
        if method == "GET" and len(rest) == 2 and rest[1] == "content":
            found = self.files.get(rest[0])
            if found is None:
                return _error(api, 404, f"no file {rest[0]}")
            return Answer(200, found["data"], BINARY)
        if method == "GET" and len(rest) == 1 and rest[0] in self.files:
            return _json(200, self._file_object(rest[0], api))
        return _error(api, 404, "no such file route")

    def _batches(self, method: str, rest: list[str], headers: dict[str, str], body: bytes, api: Api) -> Answer:
        if method == "POST" and not rest:
            return self._create(api, json.loads(body or b"null"), headers)
        if method == "GET" and not rest:
            with self._lock:
                mine = sorted((b for b in self.batches.values() if b.api is api), key=lambda b: -b.created)
            bodies = [self._batch_object(b, headers) for b in mine]
            if api is Api.MISTRAL:
                return _json(200, {"object": "list", "data": bodies, "total": len(bodies)})
            return _json(200, {"object": "list", "data": bodies, "has_more": False,
                               "first_id": bodies[0]["id"] if bodies else None,
                               "last_id": bodies[-1]["id"] if bodies else None})
        batch = self.batches.get(rest[0]) if rest else None
        if batch is None or batch.api is not api:
            return _error(api, 404, f"no batch {rest[0] if rest else ''}")
        if method == "GET" and len(rest) == 1:
            return _json(200, self._batch_object(batch, headers))
        if method == "POST" and rest[1:] == ["cancel"]:
            self._cancel(batch)
            return _json(200, self._batch_object(batch, headers, cancelling=True))
        if method == "GET" and rest[1:] == ["results"] and api is Api.ANTHROPIC:
            self._advance(batch)
            if batch.outcome == "in_progress":
                return _error(api, 404, "results are not ready")
            lines = ((item, anthropic_line(item, kind, result)) for item, kind, result in batch.results)
            return Answer(200, _jsonl(lines), BINARY)
        return _error(api, 404, "no such batch route")

    # --- files ---------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes, api: Api) -> Answer:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers.get("content-type", "").encode() + b"\r\n\r\n" + body)
        data, filename, purpose = b"", "upload.jsonl", "batch"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                data, filename = part.get_payload(decode=True) or b"", part.get_filename() or filename
            elif name == "purpose":
                purpose = (part.get_payload(decode=True) or b"batch").decode()
        file_id = self._store_file(data, filename, purpose)
        return _json(200, self._file_object(file_id, api))

    def _store_file(self, data: bytes, filename: str, purpose: str) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self._lock:
            self.files[file_id] = {"data": data, "filename": filename, "purpose": purpose, "created": int(time.time())}
        return file_id

    def _file_object(self, file_id: str, api: Api) -> dict:
        found = self.files[file_id]
        if api is Api.MISTRAL:
            kind = {"batch": "batch_request", "batch_output": "batch_result", "batch_error": "batch_error"}
            return {"id": file_id, "object": "file", "bytes": len(found["data"]), "created_at": found["created"],
                    "filename": found["filename"], "purpose": "batch",
                    "sample_type": kind.get(found["purpose"], "batch_request"), "source": "upload",
                    "num_lines": found["data"].count(b"\n")}
        return {"id": file_id, "object": "file", "bytes": len(found["data"]), "created_at": found["created"],
                "filename": found["filename"], "purpose": found["purpose"], "status": "processed"}

    # --- batches -------------------------------------------------------------------------

    def _create(self, api: Api, body: Any, headers: dict[str, str]) -> Answer:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if api is Api.ANTHROPIC:
            lines = [(r["custom_id"], r["params"]) for r in body.get("requests") or []]
            model = None
        else:
            file_ids = [body["input_file_id"]] if api is Api.OPENAI else list(body.get("input_files") or [])
            lines = []
            for file_id in file_ids:
                if file_id not in self.files:
                    return _error(api, 404, f"no file {file_id}")
                for raw in self.files[file_id]["data"].splitlines():
                    if raw.strip():
                        line = json.loads(raw)
                        lines.append((str(line["custom_id"]), line["body"]))
            model = body.get("model")
        if not lines:
            return _error(api, 400, "a batch needs at least one request")
        config = self.simulator.config
        with self._lock:
            fate = "completed"
            if config.batch_expire_rate or config.batch_fail_rate:
                draw = self._rng.random()
                fate = "expired" if draw < config.batch_expire_rate else (
                    "failed" if draw < config.batch_expire_rate + config.batch_fail_rate else "completed")
            items = []
            for custom_id, params in lines:
                fails = self._rng.random() < config.batch_error_rate if config.batch_error_rate else False
                corrupt = self._rng.random() < config.batch_corrupt_rate if config.batch_corrupt_rate else False
                items.append(Item(custom_id, _parse(api, params, model), fails, corrupt))
            # drawn only when the knob is set, so the draws of other configs are unchanged
            lost = bool(config.batch_create_lost_rate) and self._rng.random() < config.batch_create_lost_rate
        prefix = {Api.OPENAI: "batch_", Api.ANTHROPIC: "msgbatch_", Api.MISTRAL: ""}[api]
        batch = SimBatch(id=f"{prefix}{uuid.uuid4().hex[:24]}", api=api, items=items, created=time.time(),
                         delay_s=config.batch_delay_s, fate=fate, model=model,
                         endpoint=body.get("endpoint", "/v1/chat/completions"),
                         input_file_id=body.get("input_file_id") or ",".join(body.get("input_files") or []),
                         metadata=dict(body.get("metadata") or {}))
        with self._lock:
            self.batches[batch.id] = batch
            self.by_api[str(api)] += 1
            self.counts["requests"] += len(items)
            self.counts["creates_lost"] += lost
        if config.batch_create_delay_s:  # the batch exists; its creator learns its id only later
            time.sleep(config.batch_create_delay_s)
        if lost and config.batch_create_lost_as == "reset":  # the connection closes unanswered
            return Answer(0, b"", dropped=True)
        if lost and config.batch_create_lost_as == "502":  # a proxy's, without the provider's body
            return Answer(502, BAD_GATEWAY, "text/html")
        if lost:  # "timeout": answered after any client has given up
            self.simulator.stopping.wait(config.timeout_s)
        return _json(200, self._batch_object(batch, headers))

    def _cancel(self, batch: SimBatch) -> None:
        with self._lock:
            if batch.outcome == "in_progress" and batch.cancelled_at is None:
                batch.cancelled_at = time.time()
                self.counts["cancels"] += 1
        self._advance(batch)

    def _advance(self, batch: SimBatch) -> None:
        """End the batch once its time has come (or it was cancelled), writing its results once."""
        now = time.time()
        with self._lock:
            if batch.outcome != "in_progress":
                return
            if batch.cancelled_at is not None:
                cut, outcome = batch.cancelled_at, "cancelled"
            elif now >= batch.created + batch.delay_s:
                cut, outcome = now, batch.fate
                if outcome == "failed" and batch.api is Api.ANTHROPIC:
                    outcome = "completed"  # a Message Batch cannot fail: every request of it errors
            else:
                return
            batch.outcome, batch.ended_at = outcome, now
        results = []
        for index, item in enumerate(batch.items):
            if outcome in ("expired", "failed"):
                results.append((item, outcome, None))
            elif batch.fate == "failed" and outcome == "completed":  # an Anthropic batch drawn to fail
                results.append((item, "errored", {"message": BATCH_FAILURE}))
            elif batch.finished_by(index) > cut:
                results.append((item, "canceled", None))
            elif item.request is None or item.fails:
                results.append((item, "errored", None))
            else:
                body, completion = self.simulator.completion(item.request)
                results.append((item, "succeeded", body))
                with self._lock:
                    self.billed_by_model[item.request.model] += 1
                    self.input_tokens += completion.input_tokens
                    self.output_tokens += completion.output_tokens
        with self._lock:
            batch.results = results
            for item, kind, _ in results:
                self.counts[{"canceled": "cancelled"}.get(kind, kind)] += 1
                self.counts["corrupt_lines"] += item.corrupt
        if batch.api is not Api.ANTHROPIC:
            self._write_files(batch)

    def _write_files(self, batch: SimBatch) -> None:
        ok = [(item, file_line(batch.api, item, result)) for item, kind, result in batch.results if kind == "succeeded"]
        failed = [(item, file_line(batch.api, item, None)) for item, kind, _ in batch.results if kind == "errored"]
        if ok:
            batch.output_file_id = self._store_file(_jsonl(ok), f"{batch.id}_output.jsonl", "batch_output")
        if failed:
            batch.error_file_id = self._store_file(_jsonl(failed), f"{batch.id}_error.jsonl", "batch_error")

    def _batch_object(self, batch: SimBatch, headers: dict[str, str], cancelling: bool = False) -> dict:
        self._advance(batch)
        kinds = Counter(kind for _, kind, _ in batch.results)
        done = sum(1 for i in range(len(batch.items)) if batch.finished_by(i) <= time.time())
        if batch.api is Api.ANTHROPIC:
            return anthropic_batch(batch, kinds, headers, cancelling)
        if batch.api is Api.MISTRAL:
            return mistral_batch(batch, kinds, done)
        return openai_batch(batch, kinds, done, cancelling)


def _parse(api: Api, params: Any, model: str | None) -> ChatRequest | None:
    try:
        if model and isinstance(params, dict) and "model" not in params:
            params = {**params, "model": model}
        return parse_chat_request(api, params)
    except BadRequest:
        return None


def _jsonl(lines: Iterable[tuple[Item, dict]]) -> bytes:
    """A results file; the line of a request drawn `corrupt` is cut in half (its custom id, near
    its start, survives; the rest is not JSON), as a mangled download or a provider's bug."""
    out = []
    for item, line in lines:
        raw = json.dumps(line).encode()
        out.append((raw[: len(raw) // 2] if item.corrupt else raw) + b"\n")
    return b"".join(out)


def _json(status: int, payload: object) -> Answer:
    return Answer(status, json.dumps(payload).encode())


def _error(api: Api, status: int, message: str) -> Answer:
    return _json(status, error_body(api, status, message))
