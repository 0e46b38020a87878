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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.config.tables import (AgentsConfig, BackendConfig, BatchConfig, BudgetConfig, DecisionConfig,
                                  FinetuneConfig, JudgeConfig, KeysConfig, Price, RateLimit, RecoveryConfig,
                                  RetryConfig, ReuseConfig, WorkerConfig)
from shared.keypools import KeyPool, pools_disagree, pools_of
from shared.numbers import FINITE
from shared.providers.registry import PROVIDER_NAMES, PROVIDERS

if TYPE_CHECKING:
    from shared.providers.params import Generation

DEFAULT_CONFIG_PATH = "config/genesis.toml"


class ConfigError(ValueError):
    """Bad configuration or bad input: the CLI turns it into one line and exit code 2."""


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
    keys: dict[str, KeysConfig] = {}  # [keys.<provider>]: its backends' key variables and pools
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

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, url: str) -> str:
        """Checked here so a garbage URL is one line in every command and worker, not redis-py's
        traceback at the first connection (the URL is echoed without its password)."""
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"{redacted_url(url)!r}: {exc}") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL (got {redacted_url(url)!r})")
        if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"the database after the host is a number, e.g. redis://host:6379/0 "
                             f"(got {redacted_url(url)!r})")
        return url

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

    @field_validator("keys")
    @classmethod
    def _keys_of_providers(cls, keys: dict[str, KeysConfig]) -> dict[str, KeysConfig]:
        for name in keys:
            if name not in PROVIDER_NAMES:
                raise ValueError(f"[keys.{name}]: not a provider (known: {', '.join(PROVIDER_NAMES)})")
        return keys

    @model_validator(mode="after")
    def _key_pools_agree(self) -> "Settings":
        users = {f"[keys.{name}]": pools_of(k.api_key_env, k.pools) for name, k in self.keys.items()}
        users |= {f"backend {name!r}": self.key_pools(name) for name in self.backends}
        if (why := pools_disagree(users)) is not None:
            raise ValueError(why)
        for name, b in self.backends.items():
            if b.mode == "batch" and len(variables := self.key_variables(name)) > 1:
                raise ValueError(f"backend {name!r}: batch mode takes one key variable (it has "
                                 f"{', '.join(variables)}): a batch is sent with one key, benched or not")
        return self

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

    def generation(self, backend: str) -> "Generation":
        """A backend's generation settings as its requests carry them (shared.providers.params)."""
        from shared.providers.params import Generation

        b = self.backends[backend]
        return Generation(**b.params.model_dump(exclude={"max_output_tokens"}), allowance_field=b.max_tokens_field)

    def model_for(self, backend: str, agent: str) -> str:
        """The model id a backend uses for an agent (fine-tuned ids differ per agent)."""
        b = self.backends[backend]
        if agent in b.models:
            return b.models[agent]
        if (path := self.model_id_path(backend, agent)) is not None:
            if path.is_file() and (model := read_model_id(path)):
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

    def key_pools(self, backend: str) -> tuple[KeyPool, ...]:
        """The key pools a backend's calls may use (design §14): its own `api_key_env`, else
        [keys.<provider>]'s, else the provider's variable (one pool, named after it)."""
        config = self.backends[backend]
        declared = config if config.api_key_env is not None else self.keys.get(config.provider)
        if declared is None:
            return pools_of(PROVIDERS[config.provider].key_env, {})
        return pools_of(declared.api_key_env, declared.pools)

    def batch_key_variable(self, backend: str, provider: str) -> str:
        """The one variable a backend's provider batches are sent with (`mode = "batch"` takes one);
        the provider's for a backend no longer configured."""
        return self.key_variables(backend)[0] if backend in self.backends else PROVIDERS[provider].key_env

    def key_variables(self, backend: str) -> list[str]:
        """Every variable a backend's key may be read from, in the order configured."""
        return [variable for pool in self.key_pools(backend) for variable in pool.variables]

    def limit_for(self, provider: str, model: str | None = None) -> RateLimit:
        """Per-model override ([limits."mistral:model"]) merged over the provider's limits."""
        base = self.limits.get(provider, RateLimit())
        override = self.limits.get(f"{provider}:{model}") if model else None
        if not override:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))

    def snapshot(self) -> dict:
        """What a run was priced and scored with; URLs (which may hold passwords or tokens) left
        out, a backend's base_url kept (the report names the endpoint) without its credentials."""
        snapshot = self.model_dump(
            mode="json", exclude={"database_url": True, "redis_url": True, "config_dir": True, "budget": {"webhook_url"}}
        )
        for backend in snapshot.get("backends", {}).values():
            if backend.get("base_url"):
                backend["base_url"] = without_credentials(backend["base_url"])
        return snapshot


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


def not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def read_model_id(path: Path) -> str:
    """A model_id.txt's id ("" when the file is empty): one line of printable UTF-8 text. A
    second line or a control character is refused, not passed on: fnmatch's `*` matches a
    newline, so such an id was priced, sent and rendered into every report."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {not_utf8(exc)}; a model id is one line of text") from None
    model = text.strip()
    if any(not char.isprintable() for char in model):
        shown = "a second line" if "\n" in model or "\r" in model else "a control character"
        raise ConfigError(f"{path}: has {shown}; a model id is one line of printable text")
    return model


def without_credentials(url: str) -> str:
    """A URL fit for SQL and reports: its user:password@ (either may be a token) and its query
    (`?api_key=...`) replaced by ***."""
    parts = urlsplit(url)
    netloc = f"***@{parts.netloc.rpartition('@')[2]}" if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid configuration ({path}): {not_utf8(exc)}") from None
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
        msg = str(first.get("msg")).removeprefix("Value error, ")  # pydantic's wrapping of our validators' words
        return f"{loc}: {msg}" if loc else msg
    return str(exc)
