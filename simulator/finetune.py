"""Mistral's fine-tuning side, simulated: `GET /v1/models` (base and fine-tuned model cards, what
mistralai 3.x lists), `GET /v1/fine_tuning/jobs` (paged by `page` and `page_size`, newest first)
and `GET /v1/fine_tuning/jobs/{id}` (what mistralai 2.x's `client.fine_tuning.jobs` reads), in
the shapes both SDK lines validate.

The jobs are the `fine_tunes` knob of the simulator's config; by default, per agent, a failed
v1, a succeeded v2 whose model is archived, a succeeded v3 whose model is the shipped
`models/{agent}_mistral/model_id.txt` id, and a v4 still running."""

from __future__ import annotations

import uuid
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

JobStatus = Literal["QUEUED", "STARTED", "VALIDATING", "VALIDATED", "RUNNING", "FAILED_VALIDATION", "FAILED",
                    "SUCCESS", "CANCELLED", "CANCELLATION_REQUESTED"]
DEFAULT_AGENTS = ("qa", "content", "legal", "support", "analyst")
DEFAULT_BASE = "open-mistral-7b"
EPOCH = 1_764_547_200  # 2025-12-01T00:00:00Z: the default jobs' creation times count from here
DAY_S = 86_400
MAX_PAGE_SIZE = 1000


class FineTuneJob(BaseModel):
    """One simulated fine-tuning job. `fine_tuned_model` is the model it made (None while it
    runs, or when it failed); `cost` (USD) and `trained_tokens` are reported when set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    model: str = DEFAULT_BASE
    status: JobStatus = "SUCCESS"
    suffix: str | None = None
    fine_tuned_model: str | None = None
    created_at: int = Field(default=EPOCH, ge=0)
    modified_at: int | None = Field(default=None, ge=0)
    archived: bool = False
    trained_tokens: int | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0)
    cost_currency: str = "USD"

    @model_validator(mode="after")
    def _a_model_only_once_succeeded(self) -> FineTuneJob:
        if self.fine_tuned_model and self.status != "SUCCESS":
            raise ValueError(f"job {self.id}: only a SUCCESS job has a fine_tuned_model (status {self.status})")
        return self

    @property
    def updated_at(self) -> int:
        return self.modified_at if self.modified_at is not None else self.created_at


def job_id_for(name: str) -> str:
    """A stable UUID per name, so the default jobs have the same ids in every process."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"genesis-bench/fine-tune/{name}"))


def default_fine_tunes(agents: tuple[str, ...] = DEFAULT_AGENTS) -> list[FineTuneJob]:
    jobs = []
    for rank, agent in enumerate(agents):
        start = EPOCH + rank * 3600

        def job(version: int, **fields: object) -> FineTuneJob:
            created = start + version * 7 * DAY_S
            return FineTuneJob(id=job_id_for(f"{agent}-v{version}"), suffix=f"{agent}-v{version}",
                               created_at=created, modified_at=created + 5400, **fields)

        model = f"ft:{DEFAULT_BASE}:genesis:{agent}"
        jobs += [
            job(1, status="FAILED", trained_tokens=0),
            # no cost reported: ledgered at its trained tokens x [pricing] training_per_mtok ($0.80 at $1/M)
            job(2, fine_tuned_model=f"{model}-v2", archived=True, trained_tokens=800_000),
            # the shipped model_id.txt; the API reports its cost: $2.00 per agent in all, $10 for five
            job(3, fine_tuned_model=f"{model}-v3", trained_tokens=1_200_000, cost=1.2),
            job(4, status="RUNNING"),
        ]
    return jobs


# --- the wire shapes ------------------------------------------------------------------------


def base_card(model: str) -> dict:
    return {"id": model, "object": "model", "created": EPOCH, "owned_by": "mistralai", "type": "base",
            "capabilities": {"completion_chat": True, "function_calling": True, "fine_tuning": True},
            "max_context_length": 32768, "aliases": []}


def fine_tuned_card(job: FineTuneJob) -> dict:
    return {"id": job.fine_tuned_model, "object": "model", "created": job.updated_at, "owned_by": "genesis",
            "type": "fine-tuned", "job": job.id, "root": job.model, "archived": job.archived,
            "capabilities": {"completion_chat": True, "function_calling": False, "fine_tuning": False},
            "max_context_length": 32768, "aliases": []}


def job_body(job: FineTuneJob, *, details: bool = False) -> dict:
    metadata = None
    if job.cost is not None or job.trained_tokens is not None:
        metadata = {"cost": job.cost, "cost_currency": job.cost_currency if job.cost is not None else None,
                    "train_tokens": job.trained_tokens, "expected_duration_seconds": 5400}
    body = {
        "id": job.id, "object": "job", "job_type": "completion", "auto_start": True, "model": job.model,
        "status": job.status, "created_at": job.created_at, "modified_at": job.updated_at,
        "training_files": [job_id_for(f"{job.id}/training-file")], "validation_files": [],
        "hyperparameters": {"training_steps": 100, "learning_rate": 0.0001},
        "fine_tuned_model": job.fine_tuned_model, "suffix": job.suffix, "integrations": [],
        "trained_tokens": job.trained_tokens, "metadata": metadata, "repositories": [],
    }
    if details:
        body["events"] = [{"name": "status-updated", "created_at": job.updated_at, "data": {"status": job.status}}]
        body["checkpoints"] = []
    return body


def models_list(jobs: list[FineTuneJob]) -> dict:
    bases = dict.fromkeys([DEFAULT_BASE, *(job.model for job in jobs)])
    cards = [base_card(model) for model in bases]
    cards += [fine_tuned_card(job) for job in jobs if job.fine_tuned_model]
    return {"object": "list", "data": cards}


def _validation_error(field: str, message: str) -> tuple[int, dict]:
    return 422, {"object": "error", "detail": [{"loc": ["query", field], "msg": message, "type": "value_error"}]}


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int | None:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


def jobs_page(jobs: list[FineTuneJob], query: dict[str, list[str]]) -> tuple[int, dict]:
    page = _int_param(query, "page", 0, 0, 10**9)
    page_size = _int_param(query, "page_size", 100, 1, MAX_PAGE_SIZE)
    if page is None:
        return _validation_error("page", "page must be an integer >= 0")
    if page_size is None:
        return _validation_error("page_size", f"page_size must be an integer between 1 and {MAX_PAGE_SIZE}")
    newest_first = sorted(jobs, key=lambda job: (job.created_at, job.id), reverse=True)
    chunk = newest_first[page * page_size : (page + 1) * page_size]
    return 200, {"object": "list", "total": len(jobs), "data": [job_body(job) for job in chunk]}


def fine_tuning_route(jobs: list[FineTuneJob], path: str) -> tuple[int, dict] | None:
    """(status, JSON body) for a GET this module serves, or None for any other path."""
    parts = urlsplit(path)
    route = parts.path.rstrip("/")
    if route == "/v1/models":
        return 200, models_list(jobs)
    if route == "/v1/fine_tuning/jobs":
        return jobs_page(jobs, parse_qs(parts.query))
    prefix = "/v1/fine_tuning/jobs/"
    if route.startswith(prefix) and "/" not in route[len(prefix):]:
        wanted = route[len(prefix):]
        for job in jobs:
            if job.id == wanted:
                return 200, job_body(job, details=True)
        return 404, {"object": "error", "message": f"No fine-tuning job with id {wanted}", "type": "not_found",
                     "param": None, "code": "404"}
    return None
