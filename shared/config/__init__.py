"""The one settings object: defaults < config/genesis.toml (or $GENESIS_CONFIG) < environment.

API keys are deliberately *not* part of it: they are read from the environment only by the
worker process that makes the call (see shared.providers), so they can never end up in a
config snapshot, a task argument, SQL or a report.
"""

from __future__ import annotations

import fnmatch
import os
import re
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

from shared.numbers import FINITE
from shared.providers.registry import PROVIDER_NAMES

Provider = Literal[PROVIDER_NAMES]  # type: ignore[valid-type]  # derived from the provider registry
PROVIDERS: tuple[str, ...] = PROVIDER_NAMES
DEFAULT_CONFIG_PATH = "config/genesis.toml"


class ConfigError(ValueError):
    """Bad configuration or bad input: the CLI turns it into one line and exit code 2."""


class Strict(BaseModel):
    """A TOML table: a key this project does not know (a typo, `limit` for `limit_usd`) is refused
    by name rather than silently ignored while the default stays in force; every number in it
    is finite (shared.numbers), from the TOML or a GENESIS_* variable alike."""

    model_config = ConfigDict(extra="forbid", **FINITE)


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
    # Its own endpoint (a local OpenAI-compatible server, a gateway), in the form the provider's
    # SDK takes; else the provider's *_BASE_URL, else the provider's own. With one, the backend
    # gets its own queue and rate limits ([limits."<backend>"]): a local server's are not OpenAI's.
    base_url: str | None = None
    api_key_env: str | None = None  # the variable holding its key (else the provider's); never the key
    mode: Literal["realtime", "batch"] = "realtime"  # design §11
    batch_max_jobs: int | None = Field(default=None, gt=0)  # None: [batch] max_jobs
    batch_max_wait_s: float | None = Field(default=None, gt=0)  # None: [batch] max_wait_s

    @model_validator(mode="after")
    def _has_a_model_source(self) -> "BackendConfig":
        if not (self.model or self.models or self.model_id_file):
            raise ValueError("needs one of model, models or model_id_file")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError(f"api_key_env must name an environment variable (got {self.api_key_env!r})")
        if self.role == "candidate" and not self.baseline:
            raise ValueError("a candidate needs `baseline = \"<backend name>\"`")
        return self


class Price(Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    # Fine-tuning a model based on this one, per million trained tokens: what a fine-tuning job
    # is ledgered at when the provider reports its trained tokens but no cost.
    training_per_mtok: float | None = Field(default=None, ge=0)
    # what a call through the provider's batch API costs, as a fraction of the realtime price
    batch_discount: float = Field(default=0.5, gt=0, le=1)


class RateLimit(Strict):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)


class BudgetConfig(Strict):
    limit_usd: float = Field(default=30.0, gt=0)
    warning: float = 0.25
    critical: float = 0.50
    emergency: float = 0.83
    webhook_url: str | None = None

    @model_validator(mode="after")
    def _sane(self) -> "BudgetConfig":
        if not (0 < self.warning < self.critical < self.emergency <= 1):
            raise ValueError(
                "budget thresholds must satisfy 0 < warning < critical < emergency <= 1 "
                f"(got {self.warning}, {self.critical}, {self.emergency})"
            )
        return self


class DecisionConfig(Strict):
    min_improvement: float = Field(default=0.08, ge=0)  # relative to the baseline's accuracy
    confidence: float = Field(default=0.95, gt=0.5, lt=1)  # GO needs this interval above zero
    # Power before paying (submit --dry-run, the report): the baseline accuracy assumed when no
    # earlier run of that baseline model is in SQL, and the share of the baseline's right answers
    # a candidate is assumed to get wrong (a fine-tune mostly agrees with its base).
    assumed_baseline_accuracy: float = Field(default=0.6, gt=0, lt=1)
    assumed_loss_share: float = Field(default=0.05, ge=0, lt=1)
    # Read by the sign-flip test this project used before the score test; accepted so that
    # config files and run snapshots that set them still load.
    resamples: int = Field(default=20_000, ge=1_000)
    seed: int = Field(default=20261201, ge=0)  # numpy's generators take seeds >= 0


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


class FinetuneConfig(Strict):
    """`producer finetune status`: which backend's fine-tuned ids it checks (its provider's key
    and endpoint, its `model_id_file`), and which agent a fine-tuned model belongs to: the one
    agent whose `owner_pattern` (a regex searched in the model id, `{agent}` standing for the
    agent's name) matches; a job without a model yet is matched as `:<its suffix>`."""

    backend: str = "mistral-ft"
    # A colon-separated part of the id that is the agent's name, alone or followed by -v3, _x, .2:
    # ft:open-mistral-7b:genesis:qa-v3 (the shipped ids), ft:open-mistral-7b:b6e2c1:20260101:qa:9f3a.
    owner_pattern: str = r":{agent}([-_.][^:]*)?(:|$)"

    @field_validator("owner_pattern")
    @classmethod
    def _a_regex_naming_the_agent(cls, value: str) -> str:
        if "{agent}" not in value:
            raise ValueError("must contain {agent} (where the agent's name stands in the model id)")
        try:
            re.compile(value.replace("{agent}", "agent"))
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return value


class BatchConfig(Strict):
    """Provider batch APIs (backends with `mode = "batch"`): a batch is submitted when it holds
    `max_jobs` jobs or its oldest job is `max_wait_s` old (a backend's batch_max_jobs /
    batch_max_wait_s override them); open batches are polled from every `poll_min_s`, backing
    off to `poll_max_s`; a job whose batch expired or failed goes into another batch until it
    has been claimed `max_attempts` times, then ends `error` with the provider's reason."""

    max_jobs: int = Field(default=100, gt=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    poll_min_s: float = Field(default=2.0, gt=0)
    poll_max_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class RetryConfig(Strict):
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    call_timeout_s: float = Field(default=60.0, gt=0)


class WorkerConfig(Strict):
    concurrency: int = Field(default=16, ge=1)
    pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    task_time_limit_s: int = Field(default=300, gt=0)
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
        env_prefix="GENESIS_", env_nested_delimiter="__", extra="ignore", **FINITE
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
    finetune: FinetuneConfig = FinetuneConfig()
    batch: BatchConfig = BatchConfig()
    # Where relative paths in the TOML (model_id_file) are resolved from; set by load_settings.
    config_dir: str = "."

    @field_validator("backends")
    @classmethod
    def _baselines_exist(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for name, b in backends.items():
            if b.baseline and b.baseline not in backends:
                raise ValueError(f"backend {name!r}: baseline {b.baseline!r} is not a backend")
            if b.base_url and (name in PROVIDER_NAMES or ":" in name):
                raise ValueError(f"backend {name!r} has its own base_url, so its limits are [limits.\"{name}\"]: "
                                 "give it a name that is not a provider's and has no ':'")
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

    def model_id_path(self, backend: str, agent: str) -> Path | None:
        """The file holding `agent`'s model id for `backend` (its `model_id_file`), or None."""
        template = self.backends[backend].model_id_file
        return self._resolve(template.format(agent=agent)) if template else None

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
        if (path := self.model_id_path(backend, agent)) is not None:
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

    def limit_scope(self, backend: str, provider: str) -> str:
        """Whose rate limits a backend's calls count against: a backend with its own base_url
        has its own ([limits."<backend>"], [limits."<backend>:<model>"]; none set: unlimited),
        the others share their provider's."""
        config = self.backends.get(backend)
        return backend if config is not None and config.base_url else provider

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
