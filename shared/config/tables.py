"""The tables of the settings (config/genesis.toml's sections), each checked on its own: unknown
keys refused by name, every number finite, cross-field rules next to their fields. shared.config
builds the one Settings object from them."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.numbers import FINITE, LIMIT_USD, MAX_SECONDS, SECONDS, TOKENS, USD
from shared.providers.params import ALLOWANCE_FIELDS, MIN_THINKING_BUDGET, REASONING_EFFORTS, problems
from shared.providers.registry import PROVIDER_NAMES

Provider = Literal[PROVIDER_NAMES]  # type: ignore[valid-type]  # derived from the provider registry


class Strict(BaseModel):
    """A TOML table: a key this project does not know (a typo, `limit` for `limit_usd`) is refused
    by name rather than silently ignored while the default stays in force; every number in it
    is finite (shared.numbers), from the TOML or a GENESIS_* variable alike."""

    model_config = ConfigDict(extra="forbid", **FINITE)


# A name that is safe as a path part (models/{agent}_mistral/), a queue or file name: no
# separators, no dots, no spaces.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class AgentsConfig(Strict):
    names: list[str] = ["qa", "content", "legal", "support", "analyst"]

    @field_validator("names")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        """An agent's name becomes a path (`models/{agent}_mistral/model_id.txt`, which
        `finetune status --write-model-ids` writes): `../x` would leave models/."""
        for name in names:
            if not PLAIN_NAME.fullmatch(name):
                raise ValueError(f"agent name {name!r} is not a plain name (letters, digits, - and _, "
                                 "starting with a letter or digit, at most 64)")
        return names


class GenerationParams(Strict):
    """A backend's generation settings, in our own vocabulary (shared.providers.params maps
    them to each API). Unset: not sent, the provider's default applies."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    reasoning_effort: Literal[REASONING_EFFORTS] | None = None  # type: ignore[valid-type]
    reasoning_budget_tokens: int | None = Field(default=None, ge=MIN_THINKING_BUDGET)  # Anthropic's thinking
    max_output_tokens: int | None = Field(default=None, **TOKENS)  # the whole allowance; wins over a task's max_tokens


class BackendConfig(Strict):
    provider: Provider
    role: Literal["candidate", "baseline", "reference"] = "reference"
    baseline: str | None = None
    model: str | None = None
    models: dict[str, str] = {}
    model_id_file: str | None = None
    max_tokens: int | None = Field(default=None, **TOKENS)  # caps every task's own max_tokens when set
    params: GenerationParams = GenerationParams()
    # OpenAI wire format: the allowance's field; "max_tokens" for a server that predates max_completion_tokens
    max_tokens_field: Literal[ALLOWANCE_FIELDS] | None = None  # type: ignore[valid-type]
    enabled: bool = True
    # Its own endpoint (a local OpenAI-compatible server, a gateway), in the form the provider's
    # SDK takes; else the provider's *_BASE_URL, else the provider's own. With one, the backend
    # gets its own queue and rate limits ([limits."<backend>"]): a local server's are not OpenAI's.
    base_url: str | None = None
    # The variable holding its key (else [keys.<provider>]'s, else the provider's); never the key.
    # A list names several keys: each is its own pool of the provider's limits unless `pools`
    # groups some (keys of one organisation or workspace share its limits): design §14.
    api_key_env: str | list[str] | None = None
    pools: dict[str, list[str]] = {}
    mode: Literal["realtime", "batch"] = "realtime"  # design §11
    batch_max_jobs: int | None = Field(default=None, gt=0)  # None: [batch] max_jobs
    batch_max_wait_s: float | None = Field(default=None, **SECONDS)  # None: [batch] max_wait_s

    @model_validator(mode="after")
    def _has_a_model_source(self) -> "BackendConfig":
        if not (self.model or self.models or self.model_id_file):
            raise ValueError("needs one of model, models or model_id_file")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        check_key_pools(self.api_key_env, self.pools)
        if self.model_id_file is not None:
            _agent_template(self.model_id_file)
        if self.max_tokens_field is not None and self.provider != "openai":
            raise ValueError("max_tokens_field is for backends that speak the openai wire format")
        wrong = problems(self.provider, self.params.model_dump(exclude={"max_output_tokens"}),
                         self.params.max_output_tokens)
        if wrong:
            raise ValueError(f"params: {'; '.join(wrong)}")
        if self.role == "candidate" and not self.baseline:
            raise ValueError("a candidate needs `baseline = \"<backend name>\"`")
        return self


class KeysConfig(Strict):
    """[keys.<provider>]: the key variables every backend of a provider uses unless it names its
    own (`api_key_env` on the backend), with the same `pools`."""

    api_key_env: str | list[str]
    pools: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _valid(self) -> "KeysConfig":
        check_key_pools(self.api_key_env, self.pools)
        return self


def check_key_pools(api_key_env: str | list[str] | None, pools: dict[str, list[str]]) -> None:
    """Every variable a key variable, none twice; each pool a plain name grouping variables of
    `api_key_env`, each variable in at most one pool."""
    variables = [api_key_env] if isinstance(api_key_env, str) else list(api_key_env or [])
    if isinstance(api_key_env, list) and not variables:
        raise ValueError("api_key_env is an empty list: name at least one variable")
    for name in variables:
        _key_variable(name)
    if len(set(variables)) != len(variables):
        raise ValueError(f"api_key_env names a variable twice ({', '.join(variables)})")
    if pools and api_key_env is None:
        raise ValueError("pools group the variables of api_key_env: name them there too")
    pooled: set[str] = set()
    for pool, members in pools.items():
        if not PLAIN_NAME.fullmatch(pool):
            raise ValueError(f"pool name {pool!r} is not a plain name (letters, digits, - and _)")
        if not members:
            raise ValueError(f"pool {pool!r} is empty")
        for name in members:
            if name not in variables:
                raise ValueError(f"pool {pool!r} names {name!r}, which is not in api_key_env")
            if name in pooled:
                raise ValueError(f"{name!r} is in two pools: a key's limits are one organisation's")
            pooled.add(name)


def _key_variable(name: str) -> None:
    """The variable a backend's key is read from, which is sent as a bearer token to its
    base_url: so it must look like a key variable (its name has KEY or TOKEN in it) and not be
    one of this project's own settings (GENESIS_DATABASE_URL holds a database password)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"api_key_env must name an environment variable (got {name!r})")
    if name.upper().startswith("GENESIS_"):
        raise ValueError(f"api_key_env may not name one of genesis-bench's own settings (got {name!r})")
    if not re.search("KEY|TOKEN", name.upper()):
        raise ValueError(f"api_key_env must name a key variable, with KEY or TOKEN in its name (got {name!r}): "
                         "its value is sent to the backend's endpoint")


def _agent_template(template: str) -> None:
    """model_id_file is formatted with the agent's name: `{agent}` is the only field it may hold."""
    try:
        template.format(agent="agent")
    except (IndexError, KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"model_id_file may hold {{agent}} and no other {{field}} (got {template!r}: "
                         f"{type(exc).__name__} {exc})") from None


class Price(Strict):
    input_per_mtok: float = Field(**USD)
    output_per_mtok: float = Field(**USD)
    # Input tokens the provider served from its prompt cache (usage reports them), per million;
    # None: it has no cached price, and cached tokens cost the input price.
    cached_input_per_mtok: float | None = Field(default=None, **USD)
    # Fine-tuning a model based on this one, per million trained tokens: what a fine-tuning job
    # is ledgered at when the provider reports its trained tokens but no cost.
    training_per_mtok: float | None = Field(default=None, **USD)
    # what a call through the provider's batch API costs, as a fraction of the realtime price
    batch_discount: float = Field(default=0.5, gt=0, le=1)


class RateLimit(Strict):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    itpm: int | None = Field(default=None, gt=0)  # input / output tokens per minute (Anthropic's split limits)
    otpm: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)


class BudgetConfig(Strict):
    limit_usd: float = Field(default=30.0, **LIMIT_USD)
    warning: float = 0.25
    critical: float = 0.50
    emergency: float = 0.83
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        """The webhook is POSTed by every worker: http(s) to a host, nothing else urllib opens
        (file://, ftp://). The value is not echoed: it may hold a token."""
        if url is not None and not (urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname):
            raise ValueError("webhook_url must be an http:// or https:// URL with a host")
        return url

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
    # What GO promises: "better" = the interval is above zero and the measured improvement meets
    # the bar (the candidate is better; the bar is met on the estimate only); "bar" = the
    # interval's lower end clears the bar (the bar is met with the run's confidence).
    go: Literal["better", "bar"] = "better"
    # When to judge (issue #28): "fixed" judges once, when every task has run; "sequential" (or
    # `submit --sequential`) releases each agent's tasks in `looks` slices, judges at every look
    # with error-spending boundaries (shared.sequential) and stops paying for an agent once its
    # verdict is settled. `references`: "follow" = reference backends run with their agent's
    # looks; "full" = they run every task to the end (their full accuracy, at full price).
    design: Literal["fixed", "sequential"] = "fixed"
    looks: int = Field(default=5, ge=1, le=20)
    references: Literal["follow", "full"] = "follow"
    # Power before paying (submit --dry-run, the report): the baseline accuracy assumed when no
    # earlier run of that baseline model is in SQL, and the share of the baseline's right answers
    # a candidate is assumed to get wrong (a fine-tune mostly agrees with its base).
    assumed_baseline_accuracy: float = Field(default=0.6, gt=0, lt=1)
    assumed_loss_share: float = Field(default=0.05, ge=0, lt=1)
    # Repeated trials (submit --epochs k): each job runs k times and a task scores the mean of
    # its epochs. Before paying, the dry run assumes this share of a single answer's paired
    # difference variance is within-task (re-draw) noise that more epochs average away.
    epochs: int = Field(default=1, ge=1, le=100)
    assumed_within_share: float = Field(default=0.5, ge=0, le=1)
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
    max_tokens: int = Field(default=200, **TOKENS)


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
    max_wait_s: float = Field(default=30.0, **SECONDS)
    poll_min_s: float = Field(default=2.0, **SECONDS)
    poll_max_s: float = Field(default=60.0, **SECONDS)
    max_attempts: int = Field(default=3, ge=1)


class RetryConfig(Strict):
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=1.0, ge=0, le=MAX_SECONDS)
    backoff_max_s: float = Field(default=60.0, ge=0, le=MAX_SECONDS)
    call_timeout_s: float = Field(default=60.0, **SECONDS)
    # A 429/529 spends no attempt; a job refused for this long since its first refusal ends `error`.
    rate_limited_max_s: float = Field(default=1800.0, **SECONDS)


class WorkerConfig(Strict):
    concurrency: int = Field(default=16, ge=1)
    pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    task_time_limit_s: int = Field(default=300, **SECONDS)
    # PostgreSQL connections per worker process; None: sized from its threads (shared/db.py).
    db_pool_size: int | None = Field(default=None, gt=0)


class RecoveryConfig(Strict):
    """Recovery without a human (design §10): with these defaults a dead worker's jobs run again
    elsewhere within about a minute of its death (heartbeat_ttl_s + 2 sweeps + a delivery)."""

    heartbeat_interval_s: float = Field(default=5.0, **SECONDS)
    heartbeat_ttl_s: float = Field(default=20.0, **SECONDS)
    sweep_interval_s: float = Field(default=10.0, **SECONDS)
    lease_s: float | None = Field(default=None, **SECONDS)  # default: retry.call_timeout_s + 30 s
    claim_retry_max_s: float = Field(default=10.0, **SECONDS)  # backoff cap while the database is down
    stall_after_s: float = Field(default=60.0, **SECONDS)  # `submit --wait`: no progress this long = stalled
    give_up_after_s: float = Field(default=1800.0, **SECONDS)  # `submit --wait` stops waiting (exit 1)
    # The host's durable copy of the paid-call journal (shared/journal.py): one fsync'ed file per
    # paid answer the database could not take, so it survives Redis losing its data.
    journal_dir: str = Field(default="var/journal", min_length=1)

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> "RecoveryConfig":
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("recovery.heartbeat_ttl_s must exceed recovery.heartbeat_interval_s")
        return self
