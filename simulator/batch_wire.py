"""A simulated batch (its requests, fate and results) and what the simulator's batch APIs say of
it, in each provider's shape (the objects and result lines their SDKs validate): a batch as
OpenAI, Mistral and Anthropic describe it, and one line of a results file.
simulator/batches.py routes the requests and drives the batches; this module only holds and
renders them."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.wire import Api, ChatRequest, error_body

REQUEST_ERROR = "Injected batch request error from the simulator."
BATCH_FAILURE = "Injected batch failure from the simulator."


@dataclass
class Item:
    custom_id: str
    request: ChatRequest | None  # None: the line could not be read (answered as an error)
    fails: bool  # drawn at creation: this request errors
    corrupt: bool = False  # drawn at creation: its line of the results is cut short (not JSON)


@dataclass
class SimBatch:
    id: str
    api: Api
    items: list[Item]
    created: float
    delay_s: float
    fate: str  # completed | expired | failed: how it ends if nobody cancels it
    endpoint: str = "/v1/chat/completions"
    model: str | None = None
    input_file_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    cancelled_at: float | None = None
    ended_at: float | None = None
    outcome: str = "in_progress"  # in_progress | completed | expired | failed | cancelled
    results: list[tuple[Item, str, dict | None]] = field(default_factory=list)  # (item, kind, body)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def finished_by(self, index: int) -> float:
        """When request `index` is answered: spread evenly over the batch's delay."""
        return self.created + self.delay_s * (index + 1) / max(1, len(self.items))


def openai_batch(batch: SimBatch, kinds: Counter, done: int, cancelling: bool) -> dict:
    status = {"in_progress": "in_progress", "completed": "completed", "expired": "expired", "failed": "failed",
              "cancelled": "cancelling" if cancelling else "cancelled"}[batch.outcome]
    created = int(batch.created)
    ended = int(batch.ended_at) if batch.ended_at else None
    total = len(batch.items)
    errors = {"object": "list", "data": [{"code": "simulated_failure", "message": BATCH_FAILURE, "param": None,
                                          "line": None}]} if batch.outcome == "failed" else None
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": errors,
        "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
        "created_at": created, "in_progress_at": created, "expires_at": created + 24 * 3600,
        "completed_at": ended if batch.outcome == "completed" else None,
        "expired_at": ended if batch.outcome == "expired" else None,
        "failed_at": ended if batch.outcome == "failed" else None,
        "cancelling_at": int(batch.cancelled_at) if batch.cancelled_at else None,
        "cancelled_at": ended if batch.outcome == "cancelled" else None,
        "request_counts": {"total": total, "completed": kinds["succeeded"] if batch.results else min(done, total),
                           "failed": kinds["errored"] + kinds["expired"] + kinds["failed"]},
        "metadata": batch.metadata or None,
    }


def mistral_batch(batch: SimBatch, kinds: Counter, done: int) -> dict:
    status = {"in_progress": "RUNNING", "completed": "SUCCESS", "expired": "TIMEOUT_EXCEEDED", "failed": "FAILED",
              "cancelled": "CANCELLED"}[batch.outcome]
    total = len(batch.items)
    completed = len(batch.results) - kinds["canceled"] if batch.results else min(done, total)
    errors = {"expired": [{"message": "batch timed out", "count": total}],
              "failed": [{"message": BATCH_FAILURE, "count": total}]}.get(batch.outcome, [])
    return {
        "id": batch.id, "object": "batch", "input_files": batch.input_file_id.split(","), "endpoint": batch.endpoint,
        "model": batch.model, "errors": errors, "status": status, "created_at": int(batch.created),
        "total_requests": total,
        "completed_requests": completed, "succeeded_requests": kinds["succeeded"],
        "failed_requests": kinds["errored"] + kinds["expired"] + kinds["failed"], "output_file": batch.output_file_id,
        "error_file": batch.error_file_id, "metadata": batch.metadata or None, "started_at": int(batch.created),
        "completed_at": int(batch.ended_at) if batch.ended_at else None,
    }


def anthropic_batch(batch: SimBatch, kinds: Counter, headers: dict[str, str], cancelling: bool) -> dict:
    def iso(moment: float | None) -> str | None:
        return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z") if moment else None

    ended = batch.outcome != "in_progress"
    processing = 0 if ended else len(batch.items)
    host = headers.get("host", "127.0.0.1")
    return {
        "id": batch.id, "type": "message_batch",
        "processing_status": "canceling" if cancelling and ended and batch.outcome == "cancelled" else
        ("ended" if ended else "in_progress"),
        "request_counts": {"processing": processing, "succeeded": kinds["succeeded"], "errored": kinds["errored"],
                           "canceled": kinds["canceled"], "expired": kinds["expired"]},
        "created_at": iso(batch.created), "expires_at": iso(batch.created + 24 * 3600),
        "ended_at": iso(batch.ended_at) if ended else None, "cancel_initiated_at": iso(batch.cancelled_at),
        "archived_at": None,
        "results_url": f"http://{host}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def anthropic_line(item: Item, kind: str, body: dict | None) -> dict:
    if kind == "succeeded":
        return {"custom_id": item.custom_id, "result": {"type": "succeeded", "message": body}}
    if kind == "errored":
        message = (body or {}).get("message") or (REQUEST_ERROR if item.request else "invalid request")
        return {"custom_id": item.custom_id, "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "api_error", "message": message}}}}
    return {"custom_id": item.custom_id, "result": {"type": kind}}


def file_line(api: Api, item: Item, body: dict | None) -> dict:
    """One line of an OpenAI or Mistral output (body) or error (no body) file."""
    request_id = uuid.uuid4().hex
    if body is not None:
        return {"id": f"batch_req_{request_id}", "custom_id": item.custom_id,
                "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": None}
    message = REQUEST_ERROR if item.request else "invalid request"
    return {"id": f"batch_req_{request_id}", "custom_id": item.custom_id,
            "response": {"status_code": 500, "request_id": request_id, "body": error_body(api, 500, message)},
            "error": {"code": "server_error", "message": message}}
