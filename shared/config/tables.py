"""The tables of the settings (config/genesis.toml's sections), each checked on its own: unknown
keys refused by name, every number finite, cross-field rules next to their fields. shared.config
builds the one Settings object from them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.numbers import FINITE
from shared.providers.registry import PROVIDER_NAMES

Provider = Literal[PROVIDER_NAMES]  # type: ignore[valid-type]  # derived from the provider registry


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
    # A 429/529 spends no attempt; a job refused for this long since its first refusal ends `error`.
    rate_limited_max_s: float = Field(default=1800.0, gt=0)


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
