"""Every table of genesis-bench, in one place. SQL is the source of truth; Redis only holds
queues, report-sent markers and the limiter/budget counters, all rebuildable from these rows."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, Text, TypeDecorator, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from shared.numbers import MAX_USD, is_cost


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """SQLite hands datetimes back naive; they were written as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    halted = "halted"
    completed = "completed"
    cancelled = "cancelled"


FINAL_RUN_STATUSES = (RunStatus.completed, RunStatus.cancelled)  # nothing more will happen to the run


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    ok = "ok"
    error = "error"
    halted = "halted"
    # A sequential run's job recorded but not yet released (its look is still to come): never
    # claimed, never sent, and not unfinished for the completion check (design §13).
    waiting = "waiting"
    # A sequential run's job its agent's verdict did not need (settled before its look): never
    # sent, never paid; neither missing, halted nor an error.
    not_needed = "not_needed"


# A job done as far as a run's progress goes (nothing more happens to it unless resumed): what
# `status --watch` counts as done and the stall watch as progress.
DONE_JOBS = (JobStatus.ok, JobStatus.error, JobStatus.halted, JobStatus.not_needed)


class Run(SQLModel, table=True):
    __tablename__ = "run"

    id: str = Field(primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    suite: str
    agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    backends: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=RunStatus.queued, index=True)
    total_jobs: int = 0
    simulated: bool = False
    finished_at: datetime | None = None
    report_path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # A sequential run's latest released look, 1..looks (NULL: a fixed run). Its design, looks
    # and seed are in `config` (the snapshot the run was submitted under, as every rule is); the
    # current look is a column because advancing it is the look step's claim: a conditional
    # UPDATE from look k to k + 1 that one caller wins (shared.lifecycle.looks).
    look: int | None = None


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        # One row per repeated trial (submit --epochs k): epoch 1..k of the same (agent, task, backend).
        UniqueConstraint("run_id", "agent", "task_id", "backend", "epoch", name="uq_job_slot"),
        # Covers "is any job of this run still active?" (after every job) and `producer
        # status`'s one grouped query, without reading the rows. The timestamps cost almost
        # nothing here: they change exactly when the status does, which moves the entry anyway.
        Index("ix_job_run_progress", "run_id", "status", "backend", "started_at", "finished_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    agent: str
    task_id: str
    difficulty: str = "medium"
    cluster: str | None = Field(default=None, max_length=100)  # the suite task's family (None: its own)
    backend: str
    # Which repeated trial of its (agent, task, backend) this job is, 1..k (submit --epochs k):
    # each its own paid call; the decision pairs the task's mean over its epochs.
    epoch: int = Field(default=1, sa_column_kwargs={"server_default": text("1")})
    # A sequential run's look that releases this job, 1..looks (NULL: a fixed run): every
    # backend and epoch of an agent's task shares it.
    look: int | None = None
    provider: str
    model: str
    status: str = Field(default=JobStatus.queued, index=True)
    output: str | None = Field(default=None, sa_column=Column(Text))
    score: float | None = None
    scorer_detail: str | None = Field(default=None, sa_column=Column(Text))
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None  # reasoning or thinking included, as billed
    reasoning_tokens: int | None = None  # of output_tokens, spent reasoning (never shown)
    truncated: bool | None = None  # the answer was cut off by its output allowance
    cost_usd: float | None = None
    attempts: int = 0
    error_type: str | None = None
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    worker: str | None = None  # the Celery node name that ran it (for people: reports, export)
    key_env: str | None = Field(default=None, max_length=100)  # the key variable of its answer's call (never the key)
    # The process incarnation holding its lease (shared.fleet.incarnation): a worker restarted
    # under the same node name, or another prefork child, is another holder (design §12).
    holder: str | None = Field(default=None, max_length=255)
    # The paid call its holder is making now, as reserved in the budget (`<call key>#<call id>`,
    # written before the reservation, cleared by the next claim) and its worst case: a budget
    # rebuilt after Redis lost its data restores that reservation under its holder and id, so a
    # dead holder's call is still ledgered as outcome unknown (design §12).
    paid_call: str | None = Field(default=None, max_length=80)
    paid_call_usd: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # What would be sent (shared.calls.request_key): identical keys, identical answers at temperature 0.
    request_key: str | None = Field(default=None, index=True, max_length=64)
    # Set when the answer was taken from an earlier paid job (submit --reuse): no call, $0.
    reused_from_job_id: int | None = None
    reused_from_run_id: str | None = Field(default=None, max_length=32)
    # Whether the answer came from the genesis simulator (its response header said so), recorded
    # with the answer (None: no answer yet). The report's banner and reuse read it, answer by answer.
    simulated: bool | None = None

    # Set while the job sits in a provider batch (backend mode "batch"): the batch, not a
    # worker's lease, answers for it until its result is written (shared/batches.py).
    provider_batch_id: int | None = Field(default=None, foreign_key="provider_batch.id", index=True)


class BatchState(StrEnum):
    open = "open"  # taking jobs
    submitting = "submitting"  # one worker is reserving its worst case and sending it
    submitted = "submitted"  # at the provider, polled
    ended = "ended"  # every result written
    expired = "expired"  # the provider's window passed: its jobs went back or ended `error`
    failed = "failed"  # the provider refused or failed it: likewise
    cancelled = "cancelled"  # cancelled (a budget halt): answered jobs written, the rest halted
    halted = "halted"  # never submitted: the budget refused its worst case


OPEN_BATCH_STATES = (BatchState.open, BatchState.submitting, BatchState.submitted)


class ProviderBatch(SQLModel, table=True):
    """One provider batch (OpenAI Batch API, Anthropic Message Batches, Mistral batch jobs) of
    jobs of one backend and model. Its provider id and state live here, so polling resumes from
    SQL after a lost worker, a restart or Redis losing everything."""

    __tablename__ = "provider_batch"

    id: int | None = Field(default=None, primary_key=True)
    provider: str
    backend: str
    model: str
    state: str = Field(default=BatchState.open, index=True)
    provider_batch_id: str | None = Field(default=None, max_length=128)
    provider_status: str | None = None  # the provider's own word for its state
    job_count: int = 0  # jobs enrolled; once submitted, the jobs sent
    succeeded: int = 0
    errored: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    due_at: datetime  # submitted by then even when not full
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    last_polled_at: datetime | None = None
    polls: int = 0
    poll_token: str | None = Field(default=None, max_length=32)  # the one live poll chain
    reserved_usd: float = 0.0  # the worst case the budget guard holds for it
    attempts: int = 0  # submissions tried
    cancel_requested: bool = False
    error: str | None = Field(default=None, sa_column=Column(Text))
    # reads of its results file that found unreadable lines: read again up to a bound, then
    # those requests are taken as billed and lost (worker/batches.py)
    result_reads: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})


class Deployment(SQLModel, table=True):
    """This database's deployment id, made once (shared.batches.deployment_id): it namespaces
    what we leave at providers (batch metadata, request custom ids), so deployments that share
    one API key, each with its own database, never adopt or read each other's batches."""

    __tablename__ = "deployment"

    id: int = Field(default=1, primary_key=True)  # one row
    deployment_id: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class LedgerCost(TypeDecorator):
    """A FLOAT column that refuses to store anything but a finite amount >= 0: every write of a
    ledger row (ORM or Core insert, whoever builds it) passes here, so an `inf` or `NaN` can
    never reach the ledger that the budget is rebuilt from."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is not None and not is_cost(value):
            raise ValueError(f"a ledger cost must be a finite number of dollars from 0 to {MAX_USD:,} (got {value!r})")
        return value


FINE_TUNING = "fine_tuning"  # the ledger operation of a fine-tuning job; its source is the job id


class CostEntry(SQLModel, table=True):
    """The ledger. (job_id, operation) is unique when job_id is set, so a redelivered job never
    costs twice, while its judge call (operation `judge`) is a second entry of the same job.
    A fine-tuning job is ledgered once: (operation, source) is unique for `fine_tuning` rows,
    whose source is the provider's job id."""

    __tablename__ = "cost_entry"
    __table_args__ = (
        UniqueConstraint("job_id", "operation", name="uq_cost_entry_job_operation"),
        Index("uq_cost_entry_fine_tuning_job", "operation", "source", unique=True,
              sqlite_where=text(f"operation = '{FINE_TUNING}'"), postgresql_where=text(f"operation = '{FINE_TUNING}'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    run_id: str | None = Field(default=None, index=True, max_length=32)
    job_id: int | None = None
    agent: str | None = None
    backend: str | None = None
    model: str | None = None
    operation: str = "inference"  # inference | judge | fine_tuning | manual | ...
    input_tokens: int = 0
    output_tokens: int = 0  # reasoning or thinking included, as the providers bill them
    reasoning_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # of output_tokens
    cost_usd: float = Field(default=0.0, sa_type=LedgerCost)
    source: str = "api"  # api (usage the provider returned) | manual | a fine-tuning job's id | outcome unknown | ...
    # The paid call this entry is for (worker/paid_call.py): its reservation, journal entry and
    # settled member carry the same id, so one payment is never ledgered or counted twice.
    call_id: str | None = Field(default=None, max_length=32, unique=True, index=True)
    # The variable whose key made the call (design §14's key pools): its name, never the key.
    key_env: str | None = Field(default=None, max_length=100)


class BudgetEvent(SQLModel, table=True):
    __tablename__ = "budget_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    kind: str  # warning | critical | emergency | halt | resume | limit
    level: str
    spent_usd: float
    limit_usd: float
    run_id: str | None = Field(default=None, max_length=32)
    message: str = Field(default="", sa_column=Column(Text))


class RunReport(SQLModel, table=True):
    """A run's last built report (JSON data, markdown, HTML): SQL carries it to whichever host
    asks, wherever the report was built."""

    __tablename__ = "run_report"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=32)
    built_at: datetime = Field(default_factory=utcnow)
    partial: bool = False
    overall: str  # GO | NO-GO | INCONCLUSIVE
    data_json: str = Field(sa_column=Column(Text, nullable=False))
    markdown: str = Field(sa_column=Column(Text, nullable=False))
    html: str = Field(sa_column=Column(Text, nullable=False))
