"""The one settings object: defaults < config/genesis.toml (or $GENESIS_CONFIG) < environment.

API keys are deliberately *not* part of it: they are read from the environment only by the
worker process that makes the call (see shared.providers), so they can never end up in a
config snapshot, a task argument, SQL or a report.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.providers.registry import PROVIDER_NAMES

Provider = Literal[PROVIDER_NAMES]  # type: ignore[valid-type]  # derived from the provider registry
PROVIDERS: tuple[str, ...] = PROVIDER_NAMES
DEFAULT_CONFIG_PATH = "config/genesis.toml"


class ConfigError(ValueError):
    """Bad configuration or bad input: the CLI turns it into one line and exit code 2."""


class Strict(BaseModel):
    """A TOML table: a key this project does not know (a typo, `limit` for `limit_usd`) is refused
    by name rather than silently ignored while the default stays in force."""

    model_config = ConfigDict(extra="forbid")


class AgentsConfig(Strict):
    names: list[str] = ["qa", "content", "legal", "support", "analyst"]


class BackendConfig(Strict):
    provider: Provider
    role: Literal["candidate", "baseline", "reference"] = "reference"
    baseline: str | None = None
    model: str | None = None
    models: dict[str, str] = {}
    model_id_file: str | None = None
    max_tokens: int | None = None  # caps every task's own max_tokens when set
    enabled: bool = True
    # realtime: one call per job; batch: through the provider's batch API (design §11)
    mode: Literal["realtime", "batch"] = "realtime"
    batch_max_jobs: int | None = Field(default=None, gt=0)  # None: [batch] max_jobs
    batch_max_wait_s: float | None = Field(default=None, gt=0)  # None: [batch] max_wait_s

    @model_validator(mode="after")
    def _has_a_model_source(self) -> "BackendConfig":
        if not (self.model or self.models or self.model_id_file):
            raise ValueError("needs one of model, models or model_id_file")
        if self.role == "candidate" and not self.baseline:
            raise ValueError("a candidate needs `baseline = \"<backend name>\"`")
        return self


class Price(Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    # what a call through the provider's batch API costs, as a fraction of the realtime price
    batch_discount: float = Field(default=0.5, gt=0, le=1)


class RateLimit(Strict):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)


class BudgetConfig(Strict):
    limit_usd: float = 30.0
    warning: float = 0.25
    critical: float = 0.50
    emergency: float = 0.83
    webhook_url: str | None = None

    @model_validator(mode="after")
    def _sane(self) -> "BudgetConfig":
        if self.limit_usd <= 0:
            raise ValueError(f"budget.limit_usd must be > 0 (got {self.limit_usd})")
        if not (0 < self.warning < self.critical < self.emergency <= 1):
            raise ValueError(
                "budget thresholds must satisfy 0 < warning < critical < emergency <= 1 "
                f"(got {self.warning}, {self.critical}, {self.emergency})"
            )
        return self


class DecisionConfig(Strict):
    min_improvement: float = Field(default=0.08, ge=0)  # relative to the baseline's accuracy
    confidence: float = Field(default=0.95, gt=0.5, lt=1)  # GO needs this interval above zero
    # The sign-flip test is exact for 0/1 scores; otherwise Monte Carlo, seeded so a report
    # rebuilt from the same rows gives the same numbers.
    resamples: int = Field(default=20_000, ge=1_000)
    seed: int = 20261201


class ReuseConfig(Strict):
    """Take an identical earlier `ok` answer instead of paying again (off unless enabled here
    or by `submit --reuse`); answers older than max_age_days are not reused."""

    enabled: bool = False
    max_age_days: float = Field(default=30, gt=0)


class JudgeConfig(Strict):
    """The backend that grades `judge` scorers; `model` defaults to that backend's own model."""

    backend: str = "openai"
    model: str | None = None
    max_tokens: int = Field(default=200, gt=0)


class BatchConfig(Strict):
    """Provider batch APIs (backends with `mode = "batch"`): a batch is submitted when it holds
    `max_jobs` jobs or its oldest job is `max_wait_s` old (a backend's batch_max_jobs /
    batch_max_wait_s override them); open batches are polled from every `poll_min_s`, backing
    off to `poll_max_s`; a job whose batch expired or failed goes into another batch until it
    has been claimed `max_attempts` times, then ends `error` with the provider's reason."""

    max_jobs: int = Field(default=100, gt=0)
    max_wait_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    poll_min_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    poll_max_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    max_attempts: int = Field(default=3, ge=1)


class RetryConfig(Strict):
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    call_timeout_s: float = 60.0


class WorkerConfig(Strict):
    concurrency: int = 16
    pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    task_time_limit_s: int = 300
    # PostgreSQL connections per worker process; None: sized from its threads (shared/db.py).
    db_pool_size: int | None = Field(default=None, gt=0)


class RecoveryConfig(Strict):
    """Recovery without a human (design §10): with these defaults a dead worker's jobs run again
    elsewhere within about a minute of its death (heartbeat_ttl_s + 2 sweeps + a delivery)."""

    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=20.0, gt=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)
    lease_s: float | None = Field(default=None, gt=0)  # default: retry.call_timeout_s + 30 s
    claim_retry_max_s: float = Field(default=10.0, gt=0)  # backoff cap while the database is down
    stall_after_s: float = Field(default=60.0, gt=0)  # `submit --wait`: no progress this long = stalled
    give_up_after_s: float = Field(default=1800.0, gt=0)  # `submit --wait` stops waiting (exit 1)

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> "RecoveryConfig":
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("recovery.heartbeat_ttl_s must exceed recovery.heartbeat_interval_s")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENESIS_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = "sqlite:///genesis.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    reports_dir: str = "reports"
    suite: str = "genesis-custom"
    agents: AgentsConfig = AgentsConfig()
    backends: dict[str, BackendConfig] = {}
    pricing: dict[str, Price] = {}
    limits: dict[str, RateLimit] = {}
    budget: BudgetConfig = BudgetConfig()
    decision: DecisionConfig = DecisionConfig()
    retry: RetryConfig = RetryConfig()
    worker: WorkerConfig = WorkerConfig()
    reuse: ReuseConfig = ReuseConfig()
    judge: JudgeConfig = JudgeConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    batch: BatchConfig = BatchConfig()
    # Where relative paths in the TOML (model_id_file) are resolved from; set by load_settings.
    config_dir: str = "."

    @field_validator("backends")
    @classmethod
    def _baselines_exist(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for name, b in backends.items():
            if b.baseline and b.baseline not in backends:
                raise ValueError(f"backend {name!r}: baseline {b.baseline!r} is not a backend")
        return backends

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # --- derived views -------------------------------------------------------------

    def enabled_backends(self) -> list[str]:
        return [n for n, b in self.backends.items() if b.enabled]

    def is_batch(self, backend: str) -> bool:
        """Whether a backend's jobs go through its provider's batch API (design §11)."""
        b = self.backends.get(backend)
        return b is not None and b.mode == "batch"

    def batch_limits(self, backend: str) -> tuple[int, float]:
        """(max jobs, max wait in seconds) of a batch backend's batches."""
        b = self.backends[backend]
        return b.batch_max_jobs or self.batch.max_jobs, b.batch_max_wait_s or self.batch.max_wait_s

    def model_for(self, backend: str, agent: str) -> str:
        """The model id a backend uses for an agent (fine-tuned ids differ per agent)."""
        b = self.backends[backend]
        if agent in b.models:
            return b.models[agent]
        if b.model_id_file:
            path = self._resolve(b.model_id_file.format(agent=agent))
            if path.is_file() and (model := path.read_text().strip()):
                return model
            if not b.model:
                raise ConfigError(
                    f"backend {backend!r}: no model id for agent {agent!r} ({path} missing or empty)"
                )
        if b.model:
            return b.model
        raise ConfigError(f"backend {backend!r}: no model id for agent {agent!r}")

    def judge_model(self, agent: str) -> tuple[str, str]:
        """(provider, model) of the judge that grades an agent's `judge` tasks."""
        if self.judge.backend not in self.backends:
            raise ConfigError(f"[judge] backend {self.judge.backend!r} is not a backend (known: {', '.join(self.backends)})")
        return self.backends[self.judge.backend].provider, self.judge.model or self.model_for(self.judge.backend, agent)

    def _resolve(self, relative: str) -> Path:
        """A path from the TOML: as given, else next to the config file or its parent."""
        path = Path(relative)
        if path.is_absolute() or path.exists():
            return path
        for base in (Path(self.config_dir), Path(self.config_dir).parent):
            if (base / path).exists():
                return base / path
        return path

    def price_for(self, model: str) -> Price:
        return price_in(self.pricing, model)

    def limit_for(self, provider: str, model: str | None = None) -> RateLimit:
        """Per-model override ([limits."mistral:model"]) merged over the provider's limits."""
        base = self.limits.get(provider, RateLimit())
        override = self.limits.get(f"{provider}:{model}") if model else None
        if not override:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))

    def snapshot(self) -> dict:
        """What a run was priced and scored with; URLs (which may hold passwords or tokens) left out."""
        return self.model_dump(
            mode="json", exclude={"database_url": True, "redis_url": True, "config_dir": True, "budget": {"webhook_url"}}
        )


def price_in(pricing: dict[str, Price], model: str) -> Price:
    """A model's price: exact key first, then the longest matching glob (e.g. "ft:open-mistral-7b:*")."""
    if model in pricing:
        return pricing[model]
    matches = [p for p in pricing if fnmatch.fnmatchcase(model, p)]
    if not matches:
        raise ConfigError(f"model {model!r} has no price: add [pricing.\"{model}\"] to the config")
    return pricing[max(matches, key=len)]


def redacted_url(url: str) -> str:
    """A URL fit for a message or a log line: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def config_path() -> Path:
    return Path(os.environ.get("GENESIS_CONFIG", DEFAULT_CONFIG_PATH))


def load_settings() -> Settings:
    """Build the settings afresh (tests change the environment between calls)."""
    path = config_path()
    if "GENESIS_CONFIG" in os.environ and not path.is_file():
        raise ConfigError(f"GENESIS_CONFIG={path}: no such file")
    if path.is_file():
        _refuse_unknown_tables(path)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid configuration ({path}): {_first_error(exc)}") from None
    settings.config_dir = str(path.resolve().parent) if path.is_file() else "."
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (workers and the CLI build them once)."""
    return load_settings()




def _refuse_unknown_tables(path: Path) -> None:
    """The settings ignore unknown GENESIS_* variables (other tools share the prefix), so
    unknown top-level TOML keys are checked here, by name."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid configuration ({path}): {exc}") from None
    known = set(Settings.model_fields) - {"config_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"invalid configuration ({path}): unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("type") == "extra_forbidden":
            return f"unknown key {loc}"
        return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    return str(exc)
