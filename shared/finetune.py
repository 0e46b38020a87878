"""Fine-tuned Mistral models, the jobs that made them, and what they cost (`producer finetune`).

What the installed SDK can tell is what is shown, and the output says which it is:
- mistralai 3.x has no fine-tuning jobs API: `client.models.list()` gives the fine-tuned model
  cards (id, job id, base model, created, archived). A card exists only once its job succeeded,
  so an unarchived card is usable; job status, trained tokens and cost are unknown.
- mistralai 2.x (up to 2.4) also has `client.fine_tuning.jobs`: every job with its status
  (failed and running ones too), trained tokens and, where the API reports it, its cost.

Each model (or job) belongs to the one agent whose `[finetune] owner_pattern` matches its id.
An agent's `model_id.txt` is up to date when it names that agent's newest usable model (not
archived; its job succeeded where the status is known). Everything the API returns is treated
as hostile text: ids that are not plausible ids are left out, never written to a file or the
ledger.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from shared.config import ConfigError, Settings, read_model_id
from shared.files import replacing, writable_folder
from shared.models import FINE_TUNING, CostEntry
from shared.numbers import MAX_USD, is_cost

SUCCEEDED = "SUCCESS"
# A job in one of these states changes no more: its cost is final and can be ledgered.
FINAL_STATUSES = frozenset({"SUCCESS", "FAILED", "FAILED_VALIDATION", "CANCELLED"})
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,255}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # also what `budget log --source` takes
STATUS = re.compile(r"[A-Z_]{1,40}")
UNKNOWN_STATUS = "UNKNOWN"  # a status that is not one: never counts as succeeded
PAGE_SIZE = 100
MAX_PAGES = 1000  # a paging API that never ends is cut here


@dataclass
class FineTune:
    """One fine-tuned model, or one job without a model (yet), as far as the SDK tells."""

    model_id: str | None
    job_id: str | None
    base_model: str | None
    created: int | None  # UNIX seconds: the model's, else its job's
    archived: bool | None  # None: not known (a job without a model)
    status: str | None  # the job's; None when the SDK has no jobs API
    trained_tokens: int | None = None
    reported_cost: float | None = None  # what the API says the job cost
    cost_currency: str | None = None
    suffix: str | None = None
    agent: str | None = None
    listed: bool = True  # False: a job names its model, but the models list does not have it

    @property
    def usable(self) -> bool:
        """A model that can be benchmarked: listed, not archived, and its job succeeded."""
        return bool(self.model_id) and self.listed and self.archived is not True and self.status in (None, SUCCEEDED)

    @property
    def label(self) -> str | None:
        """What the owner rule is matched against: the model id, or `:<suffix>` for a job without one."""
        return self.model_id or (f":{self.suffix}" if self.suffix else None)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}


@dataclass
class Listing:
    """What the SDK returned, merged per job, and which SDK line said it."""

    sdk_version: str
    jobs_api: bool
    fine_tunes: list[FineTune]
    ignored: int = 0  # entries whose ids were not plausible ids

    @property
    def sdk(self) -> dict[str, Any]:
        line = f"{self.sdk_version.split('.')[0]}.x"
        if self.jobs_api:
            source = "client.models.list() and client.fine_tuning.jobs.list() (status, trained tokens, cost)"
        else:
            source = ("client.models.list() only: this SDK line has no fine-tuning jobs API, so job status, "
                      "trained tokens and cost are unknown (failed and running jobs are not listed)")
        return {"package": "mistralai", "version": self.sdk_version, "line": line, "jobs_api": self.jobs_api,
                "source": source}


@dataclass
class AgentState:
    agent: str
    model_id_file: str | None
    current: str | None  # what the file holds now
    newest_usable: str | None
    fine_tunes: list[FineTune] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.newest_usable is not None and self.current == self.newest_usable

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "model_id_file": self.model_id_file, "current": self.current,
                "newest_usable": self.newest_usable, "up_to_date": self.up_to_date,
                "fine_tunes": [item.as_dict() for item in self.fine_tunes]}


# --- reading the API ------------------------------------------------------------------------


def sdk_version() -> str:
    try:
        return version("mistralai")
    except PackageNotFoundError:  # an unpackaged checkout of the SDK
        return "unknown"


def fetch(client: Any, *, page_size: int = PAGE_SIZE) -> Listing:
    """Every fine-tuned model card (and every job, where the SDK has a jobs API), merged per job.
    SDK and transport errors are raised as they come (the caller classifies them)."""
    cards = [card for card in (client.models.list().data or []) if _str(card, "type") == "fine-tuned"]
    jobs_api = getattr(getattr(client, "fine_tuning", None), "jobs", None)
    jobs = list_jobs(jobs_api, page_size=page_size) if jobs_api is not None else []
    fine_tunes, ignored = merge(cards, jobs)
    return Listing(sdk_version(), jobs_api is not None, fine_tunes, ignored)


def list_jobs(jobs_api: Any, *, page_size: int = PAGE_SIZE) -> list[Any]:
    """Every job, page by page (`page`, `page_size`), until `total` are read or a page is empty."""
    jobs: list[Any] = []
    for page in range(MAX_PAGES):
        response = jobs_api.list(page=page, page_size=page_size)
        data = list(response.data or [])
        jobs += data
        total = _int(response, "total")
        if not data or (total is not None and len(jobs) >= total):
            break
    return jobs


def merge(cards: list[Any], jobs: list[Any]) -> tuple[list[FineTune], int]:
    """One FineTune per job (its model card and its job together), plus cards whose job is not
    listed; (them, how many entries were left out for implausible ids)."""
    by_job: dict[str, FineTune] = {}
    loose: list[FineTune] = []
    left_out: set[str] = set()  # ids of jobs left out: their model's card goes too
    ignored = 0
    for job in jobs:
        job_id, model_id = _id(job, "id", JOB_ID), _id(job, "fine_tuned_model", MODEL_ID)
        if job_id is None or (model_id is None and _str(job, "fine_tuned_model")):
            left_out.add(_str(job, "id") or "")
            ignored += 1
            continue
        metadata = getattr(job, "metadata", None)
        trained = _int(job, "trained_tokens")
        by_job[job_id] = FineTune(
            model_id=model_id, job_id=job_id, base_model=_id(job, "model", MODEL_ID), created=_int(job, "created_at"),
            archived=None, status=_id(job, "status", STATUS) or UNKNOWN_STATUS, listed=model_id is None,
            trained_tokens=trained if trained is not None else _int(metadata, "train_tokens"),
            reported_cost=_float(metadata, "cost"), cost_currency=_str(metadata, "cost_currency"),
            suffix=_id(job, "suffix", MODEL_ID),
        )
    for card in cards:
        model_id, job_id = _id(card, "id", MODEL_ID), _id(card, "job", JOB_ID)
        if _str(card, "job") in left_out - {""}:
            continue  # counted with its job
        if model_id is None:
            ignored += 1
            continue
        item = by_job.get(job_id) if job_id else None
        if item is None:
            loose.append(FineTune(model_id=model_id, job_id=job_id, base_model=_id(card, "root", MODEL_ID),
                                  created=_int(card, "created"), archived=bool(_bool(card, "archived")), status=None))
            continue
        item.model_id, item.listed = model_id, True
        item.archived = bool(_bool(card, "archived"))
        item.base_model = item.base_model or _id(card, "root", MODEL_ID)
        item.created = _int(card, "created") or item.created
    return [*by_job.values(), *loose], ignored


# --- per agent ------------------------------------------------------------------------------


def owner_of(label: str | None, agents: list[str], pattern: str) -> str | None:
    """The one agent whose rule matches `label`; None for no match or more than one."""
    if not label:
        return None
    owners = [agent for agent in agents if re.search(pattern.replace("{agent}", re.escape(agent)), label)]
    return owners[0] if len(owners) == 1 else None


def finetune_backend(settings: Settings) -> str:
    """The `[finetune] backend`: a Mistral backend whose ids come from `model_id_file`."""
    name = settings.finetune.backend
    backend = settings.backends.get(name)
    if backend is None:
        raise ConfigError(f"[finetune] backend {name!r} is not a backend (known: {', '.join(settings.backends)})")
    if backend.provider != "mistral" or not backend.model_id_file:
        raise ConfigError(f"[finetune] backend {name!r} must be a mistral backend with a model_id_file")
    return name


def by_agent(settings: Settings, listing: Listing, agents: list[str]) -> tuple[list[AgentState], list[FineTune]]:
    """Each agent's state (newest first), and the fine-tunes no agent (or more than one) owns."""
    backend = finetune_backend(settings)
    everyone = settings.agents.names
    for item in listing.fine_tunes:
        item.agent = owner_of(item.label, everyone, settings.finetune.owner_pattern)
    newest_first = sorted(listing.fine_tunes, key=lambda item: (item.created or 0, item.model_id or ""), reverse=True)
    states = []
    for agent in agents:
        path = settings.model_id_path(backend, agent)
        mine = [item for item in newest_first if item.agent == agent]
        newest = next((item.model_id for item in mine if item.usable), None)
        states.append(AgentState(agent, str(path) if path else None, _read_id(path), newest, mine))
    return states, [item for item in newest_first if item.agent is None]


def _read_id(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return read_model_id(path) or None


def write_model_ids(states: list[AgentState]) -> list[dict[str, str | None]]:
    """Point each agent's model_id.txt at its newest usable model. A file already naming it is
    not touched (its mtime stays); an agent with no usable model keeps its file as it is."""
    changes = []
    for state in states:
        if state.newest_usable is None or state.up_to_date or state.model_id_file is None:
            continue
        path = Path(state.model_id_file)
        writable_folder(path.parent)
        with replacing(path) as out:  # a worker reads the old id or the new one, never half of one
            out.write(state.newest_usable + "\n")
        changes.append({"agent": state.agent, "file": str(path), "old": state.current, "new": state.newest_usable})
        state.current = state.newest_usable
    return changes


# --- cost and the ledger --------------------------------------------------------------------


def job_cost(settings: Settings, item: FineTune) -> tuple[float, str] | None:
    """(USD, where it came from) for a job whose cost is final and known: the API's figure
    (in USD), else its trained tokens at the base model's `training_per_mtok`. A figure past
    shared.numbers' bound is no known cost (the ledger would refuse it)."""
    from shared.budget.pricing import training_cost  # the pricing code, when a cost is asked for

    if item.job_id is None or item.status not in FINAL_STATUSES:
        return None
    if item.reported_cost is not None and (item.cost_currency or "USD").upper() == "USD":
        return item.reported_cost, "api"
    if item.trained_tokens is not None and item.base_model:
        cost = training_cost(settings, item.base_model, item.trained_tokens)
        if cost is not None and is_cost(cost):
            return cost, "trained tokens x training_per_mtok"
    return None


def fine_tuning_entry(job_id: str, cost_usd: float, *, agent: str | None = None, model: str | None = None,
                      trained_tokens: int = 0) -> CostEntry:
    """The ledger entry of a fine-tuning job: its id is the source (unique for the operation,
    so a second entry of the same job is refused by SQL); trained tokens go in input_tokens."""
    if not JOB_ID.fullmatch(job_id or ""):
        raise ConfigError(f"a fine-tuning job id is letters, digits and . _ : - (got {job_id!r})")
    if not is_cost(cost_usd):
        raise ConfigError(f"a fine-tuning cost must be a finite number of dollars from 0 to {MAX_USD:,} "
                          f"(got {cost_usd})")
    return CostEntry(operation=FINE_TUNING, source=job_id, agent=agent, model=model, backend=None,
                     input_tokens=trained_tokens, cost_usd=cost_usd)


def ledgered(session: Session, job_ids: list[str]) -> dict[str, float]:
    """job id → the cost its fine-tuning entry holds, for the jobs already in the ledger."""
    if not job_ids:
        return {}
    rows = session.exec(select(CostEntry.source, CostEntry.cost_usd)
                        .where(CostEntry.operation == FINE_TUNING, col(CostEntry.source).in_(job_ids))).all()
    return dict(rows)


# --- reading hostile attributes -------------------------------------------------------------


def _str(obj: Any, name: str) -> str | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, str) else None


def _id(obj: Any, name: str, shape: re.Pattern[str]) -> str | None:
    value = _str(obj, name)
    return value if value is not None and shape.fullmatch(value) else None


def _int(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _float(obj: Any, name: str) -> float | None:
    value = getattr(obj, name, None)
    return float(value) if is_cost(value) else None


def _bool(obj: Any, name: str) -> bool | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, bool) else None
