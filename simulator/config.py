"""The simulator's knobs, validated once so the server never meets a bad value mid-request."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.numbers import FINITE
from simulator.finetune import FineTuneJob, default_fine_tunes

Rate = Field(default=0.0, ge=0.0, le=1.0)


class SimulatorConfig(BaseModel):
    """Everything the simulator can be told, from the CLI, `POST /_sim/config` or `handle.update()`.

    - latency: each answered request waits `latency_ms` plus a uniform draw in
      [-latency_jitter_ms, +latency_jitter_ms] (never below 0).
    - quality: `{fnmatch pattern: probability of a correct answer}`, first match wins (insertion
      order), `default_quality` for models no pattern matches.
    - rpm / tpm: token buckets per (API key, model); None = unlimited. itpm / otpm: Anthropic's
      separate input and output tokens per minute (Messages API calls only). Changed live
      (`POST /_sim/config`), they start fresh buckets: a provider changing its limits mid-run.
    - key_rpm: `{API key: rpm}`, that key's own requests per minute (else `rpm`); key_orgs:
      `{API key: organisation}`, keys of one organisation share its buckets (a provider limits the
      organisation, not the key), the first key's rpm is the organisation's.
    - revoked_keys: API keys answered 401 (the provider's own error format) once `revoke_after`
      requests have been answered: a key revoked mid-run.
    - forbidden_models: `{API key: [models]}` answered 403 (the provider's permission error): a key
      whose organisation may not use those models (unverified, no access) but may use the others.
    - error_rates: `{HTTP status: probability}` of an injected error instead of an answer.
    - timeout_rate: probability the answer is held back `timeout_s` extra so the client times out.
    - malformed_rate: probability of a 200 whose body is truncated, i.e. not valid JSON; billed
      (its usage counted), as a provider bills every answer it generated.
    - drop_rate: probability the connection is closed, with no reply, after the request was
      received and answered: billed (its usage counted) and counted as a 200 served, fault `drop`.
    - usage_scale: the usage a 200 reports (and bills) is the tokens served × this; above 1 a
      call costs more than a client's estimate of it.
    - omit_usage_rate: probability of a 200 without a usage block (as some gateways answer).
    - judge_garbage_rate: probability a judge prompt is answered with prose instead of a grade.
    - answers: `{fnmatch pattern: text}`, first match wins: every matching model answers every
      prompt but a judge's with this text (hostile answers for tests and demos: links, HTML,
      grading instructions aimed at the judge).
    - empty_choices_rate: probability of a billed 200 (usage reported) with no choices (OpenAI and
      Mistral wire formats; an Anthropic answer gets empty content), counted as fault `empty`.
    - batch_delay_s: a batch (simulator/batches.py) answers its requests one by one over this long;
      batch_error_rate: probability one request of a batch errors; batch_expire_rate: probability a
      batch expires with nothing answered; batch_fail_rate: probability a batch fails outright
      (OpenAI `failed`, Mistral `FAILED`, with the reason in its errors; Anthropic has no failed
      batch, so there every request of it errors); batch_create_delay_s: the answer to a batch's
      creation is held back this long after the batch exists (a submitter that dies meanwhile
      leaves a batch at the provider whose id it never learnt); batch_create_lost_rate: probability
      that a creation's answer is lost after the batch exists, as `batch_create_lost_as` says:
      `reset` (the connection closes unanswered), `502` (a proxy's Bad Gateway, no provider body)
      or `timeout` (answered `timeout_s` later, after the client gave up). The provider holds and
      runs the batch either way; its creator never learns its id. batch_corrupt_rate: probability
      that a request's line of its batch's results is cut short (not JSON), on every read; a
      succeeded one is billed all the same.
    - sampling: `request` (default): a request at temperature 0 is answered deterministically,
      one above 0 (or without one: the provider's default) is a fresh draw (simulator/sampling.py);
      `always`: every request is a fresh draw whatever its temperature; `never`: every request is
      answered deterministically (to compare two paths that must give the same answers).
    - reasoning_tokens: what a reasoning model (OpenAI o-series and GPT-5 ids; Anthropic with
      thinking enabled) spends reasoning per request at effort "low" (simulator/reasoning.py).
    - suite: the suites whose answers it knows, comma-separated names or folders.
    - fine_tunes: the Mistral fine-tuning jobs it lists (and the models they made), see
      simulator/finetune.py.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, **FINITE)

    latency_ms: float = Field(default=200.0, ge=0.0)
    latency_jitter_ms: float = Field(default=0.0, ge=0.0)
    quality: dict[str, float] = Field(default_factory=lambda: {"ft:*": 0.85, "open-mistral-7b": 0.65})
    default_quality: float = Field(default=0.75, ge=0.0, le=1.0)
    answers: dict[str, str] = Field(default_factory=dict)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    itpm: int | None = Field(default=None, gt=0)
    otpm: int | None = Field(default=None, gt=0)
    key_rpm: dict[str, int] = Field(default_factory=dict)
    key_orgs: dict[str, str] = Field(default_factory=dict)
    revoked_keys: list[str] = Field(default_factory=list)
    revoke_after: int = Field(default=0, ge=0)
    forbidden_models: dict[str, list[str]] = Field(default_factory=dict)
    error_rates: dict[int, float] = Field(default_factory=dict)
    timeout_rate: float = Rate
    timeout_s: float = Field(default=30.0, ge=0.0)
    malformed_rate: float = Rate
    drop_rate: float = Rate
    usage_scale: float = Field(default=1.0, ge=0.0)
    omit_usage_rate: float = Rate
    judge_garbage_rate: float = Rate
    empty_choices_rate: float = Rate
    default_max_tokens: int = Field(default=1024, gt=0)
    reasoning_tokens: int = Field(default=64, ge=0)  # per request at effort "low" (simulator/reasoning.py)
    batch_delay_s: float = Field(default=2.0, ge=0.0)
    batch_error_rate: float = Rate
    batch_expire_rate: float = Rate
    batch_fail_rate: float = Rate
    batch_create_delay_s: float = Field(default=0.0, ge=0.0)
    batch_create_lost_rate: float = Rate
    batch_create_lost_as: Literal["reset", "502", "timeout"] = "reset"
    batch_corrupt_rate: float = Rate
    seed: int = 7
    sampling: Literal["request", "always", "never"] = "request"
    suite: str | None = "genesis-custom,genesis-judge"
    fine_tunes: list[FineTuneJob] = Field(default_factory=default_fine_tunes)

    @field_validator("quality")
    @classmethod
    def _qualities_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for pattern, quality in value.items():
            if not 0.0 <= quality <= 1.0:
                raise ValueError(f"quality for {pattern!r} must be between 0 and 1, got {quality}")
        return value

    @field_validator("key_rpm")
    @classmethod
    def _key_limits_are_positive(cls, value: dict[str, int]) -> dict[str, int]:
        for key, rpm in value.items():
            if rpm <= 0:
                raise ValueError(f"the rpm of a key must be above 0, got {rpm}")
        return value

    @field_validator("error_rates")
    @classmethod
    def _error_rates_are_valid(cls, value: dict[int, float]) -> dict[int, float]:
        for status, rate in value.items():
            if not 400 <= status <= 599:
                raise ValueError(f"error status must be a 4xx or 5xx code, got {status}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"error rate for {status} must be between 0 and 1, got {rate}")
        return value

    @field_validator("fine_tunes")
    @classmethod
    def _job_ids_are_unique(cls, value: list[FineTuneJob]) -> list[FineTuneJob]:
        ids = [job.id for job in value]
        if len(set(ids)) != len(ids):
            raise ValueError("fine-tuning job ids must be unique")
        return value

    def fault_rates(self) -> list[tuple[str, float]]:
        """Every injected fault and its rate, in the order a request's one draw walks them."""
        return [*((str(status), rate) for status, rate in sorted(self.error_rates.items())),
                ("timeout", self.timeout_rate), ("malformed", self.malformed_rate),
                ("empty", self.empty_choices_rate), ("drop", self.drop_rate)]

    @model_validator(mode="after")
    def _fault_rates_fit_in_one(self) -> SimulatorConfig:
        total = sum(rate for _, rate in self.fault_rates())
        if total > 1.0 + 1e-9:
            raise ValueError(f"error, timeout, malformed, empty-choices and drop rates add up to {total:g}, more than 1")
        if self.batch_expire_rate + self.batch_fail_rate > 1.0 + 1e-9:
            raise ValueError("batch_expire_rate and batch_fail_rate add up to more than 1")
        return self

    def quality_for(self, model: str) -> float:
        for pattern, quality in self.quality.items():
            if fnmatchcase(model, pattern):
                return quality
        return self.default_quality

    def answer_for(self, model: str) -> str | None:
        """The fixed answer of a model (`answers`), or None: it answers as its quality says."""
        return next((text for pattern, text in self.answers.items() if fnmatchcase(model, pattern)), None)

    def merged(self, **knobs: object) -> SimulatorConfig:
        """A validated copy with some knobs changed (model_copy would skip validation)."""
        return SimulatorConfig.model_validate({**self.model_dump(), **knobs})


def one_line(error: ValidationError, name: Callable[[str], str] = str) -> str:
    """A validation error as one line naming each bad knob (`name` turns a knob into what the
    caller calls it: the CLI says `--latency-ms`), for the CLI and `POST /_sim/config`."""
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        knob = ".".join(str(part) for part in item["loc"])
        problems.append(f"{name(knob)}: {message}" if knob else message)
    return "; ".join(problems)
