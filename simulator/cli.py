"""`producer simulator` / `python -m simulator`: run the provider simulator in the foreground."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from shared.config import ConfigError
from shared.numbers import PORT, number

from simulator.config import SimulatorConfig, one_line

DEFAULTS = {name: field.default for name, field in SimulatorConfig.model_fields.items()}


def parse_pairs(items: list[str], option: str, key_label: str) -> dict[str, float]:
    """'KEY=PROBABILITY' items as a dict (insertion order kept: first match wins for patterns)."""
    pairs: dict[str, float] = {}
    for item in items:
        key, separator, value = item.rpartition("=")
        try:
            probability = float(value)
        except ValueError:
            probability = -1.0
        if not separator or not key or not 0.0 <= probability <= 1.0:
            raise typer.BadParameter(
                f"{item!r} must be {key_label}=P with P a number between 0 and 1", param_hint=option
            )
        pairs[key] = probability
    return pairs


def parse_error_rates(items: list[str]) -> dict[int, float]:
    rates = parse_pairs(items, "--error-rate", "STATUS")
    for status in rates:
        if not (status.isdigit() and 400 <= int(status) <= 599):
            raise typer.BadParameter(f"{status!r} is not an HTTP 4xx/5xx status", param_hint="--error-rate")
    return {int(status): rate for status, rate in rates.items()}


def parse_key_values(items: list[str], option: str, kind: type) -> dict:
    """KEY=VALUE options (a key's rpm, its organisation) into a dict."""
    pairs = {}
    for item in items:
        key, separator, value = item.partition("=")
        try:
            pairs[key] = kind(value)
        except ValueError:
            separator = ""
        if not separator or not key or not value:
            raise typer.BadParameter(f"{item!r} must be KEY=VALUE", param_hint=option)
    return pairs


def simulator_command(
    port: Annotated[int, typer.Option(parser=number(int, **PORT), help="Port to listen on (0 picks a free one).")] = 8900,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Latency of every answer.")] = DEFAULTS["latency_ms"],
    latency_jitter_ms: Annotated[
        float, typer.Option(help="Uniform jitter added to the latency, +/- this much.")
    ] = DEFAULTS["latency_jitter_ms"],
    quality: Annotated[
        list[str] | None,
        typer.Option(help="PATTERN=P: models matching the fnmatch PATTERN answer suite tasks right with "
                     "probability P; repeatable, first match wins. Default: 'ft:*=0.85' 'open-mistral-7b=0.65'."),
    ] = None,
    default_quality: Annotated[
        float, typer.Option(help="Quality of models no --quality pattern matches.")
    ] = DEFAULTS["default_quality"],
    rpm: Annotated[int | None, typer.Option(help="Requests per minute per (API key, model).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute per (API key, model).")] = None,
    itpm: Annotated[int | None, typer.Option(help="Anthropic's input tokens per minute per (API key, model).")] = None,
    otpm: Annotated[int | None, typer.Option(help="Anthropic's output tokens per minute per (API key, model).")] = None,
    key_rpm: Annotated[
        list[str] | None, typer.Option(help="KEY=RPM: that API key's own requests per minute; repeatable.")
    ] = None,
    key_org: Annotated[
        list[str] | None, typer.Option(help="KEY=ORG: keys of one organisation share its limits; repeatable.")
    ] = None,
    revoke_key: Annotated[
        list[str] | None, typer.Option(help="An API key answered 401 from --revoke-key-after on; repeatable.")
    ] = None,
    revoke_key_after: Annotated[int, typer.Option(min=0, help="Requests answered before --revoke-key keys are refused.")] = 0,
    error_rate: Annotated[
        list[str] | None, typer.Option(help="STATUS=P: answer STATUS with probability P; repeatable.")
    ] = None,
    timeout_rate: Annotated[float, typer.Option(help="Share of answers held back.")] = 0.0,
    timeout_s: Annotated[float, typer.Option(help="How long a held-back answer waits.")] = DEFAULTS[
        "timeout_s"
    ],
    malformed_rate: Annotated[float, typer.Option(help="Share of 200s with a broken body (billed).")] = 0.0,
    drop_rate: Annotated[
        float, typer.Option(help="Share of answers served (billed) whose connection is closed before the reply.")
    ] = 0.0,
    usage_scale: Annotated[
        float, typer.Option(help="Usage reported (and billed) = tokens served x this; > 1 under-estimates.")
    ] = DEFAULTS["usage_scale"],
    omit_usage_rate: Annotated[
        float, typer.Option(help="Share of 200s without a usage block.")
    ] = 0.0,
    batch_delay_s: Annotated[
        float, typer.Option(min=0.0, help="A batch answers its requests one by one over this long.")
    ] = DEFAULTS["batch_delay_s"],
    batch_error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of batch requests that fail.")] = 0.0,
    batch_expire_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of batches that expire unanswered.")
    ] = 0.0,
    batch_fail_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of batches that fail outright (Anthropic: all requests error)."),
    ] = 0.0,
    batch_create_delay_s: Annotated[
        float, typer.Option(min=0.0, help="Hold back the answer to a batch's creation this long after it exists.")
    ] = 0.0,
    batch_create_lost_rate: Annotated[
        float, typer.Option(help="Share of batch creations whose answer is lost after the batch exists.")
    ] = 0.0,
    batch_create_lost_as: Annotated[
        str, typer.Option(help="How a lost creation's answer is lost: reset | 502 | timeout (after --timeout-s).")
    ] = DEFAULTS["batch_create_lost_as"],
    batch_corrupt_rate: Annotated[
        float, typer.Option(help="Share of batch result lines cut short (not JSON); billed all the same.")
    ] = 0.0,
    reasoning_tokens: Annotated[
        int, typer.Option(help="Tokens a reasoning model (o-series, gpt-5*; Anthropic thinking) spends per request "
                               "at effort low (x2 medium, x4 high).")
    ] = DEFAULTS["reasoning_tokens"],
    seed: Annotated[int, typer.Option(help="Seed of answers and fault draws.")] = DEFAULTS["seed"],
    sampling: Annotated[str, typer.Option(
        help="request: sampled above temperature 0 (absent: the provider's default); always: every answer a "
             "fresh draw, whatever the temperature; never: every answer deterministic.",
    )] = DEFAULTS["sampling"],
    suite: Annotated[str, typer.Option(help="Suite whose expected answers the models know.")] = DEFAULTS["suite"],
    fine_tunes: Annotated[
        Optional[Path],
        typer.Option(help="JSON file: the list of Mistral fine-tuning jobs to serve (fields of "
                     "simulator.finetune.FineTuneJob). Default: 4 per agent (failed, archived, current, running)."),
    ] = None,
) -> None:
    """Run the provider simulator (OpenAI, Anthropic and Mistral APIs) until Ctrl-C. Its knobs are
    checked by SimulatorConfig (finite, in range), the one place that knows their bounds."""
    knobs: dict[str, object] = {
        "latency_ms": latency_ms,
        "latency_jitter_ms": latency_jitter_ms,
        "default_quality": default_quality,
        "rpm": rpm,
        "tpm": tpm,
        "itpm": itpm,
        "otpm": otpm,
        "key_rpm": parse_key_values(key_rpm or [], "--key-rpm", int),
        "key_orgs": parse_key_values(key_org or [], "--key-org", str),
        "revoked_keys": list(revoke_key or []),
        "revoke_after": revoke_key_after,
        "error_rates": parse_error_rates(error_rate or []),
        "timeout_rate": timeout_rate,
        "timeout_s": timeout_s,
        "malformed_rate": malformed_rate,
        "drop_rate": drop_rate,
        "usage_scale": usage_scale,
        "omit_usage_rate": omit_usage_rate,
        "batch_delay_s": batch_delay_s,
        "batch_error_rate": batch_error_rate,
        "batch_expire_rate": batch_expire_rate,
        "batch_fail_rate": batch_fail_rate,
        "batch_create_delay_s": batch_create_delay_s,
        "batch_create_lost_rate": batch_create_lost_rate,
        "batch_create_lost_as": batch_create_lost_as,
        "batch_corrupt_rate": batch_corrupt_rate,
        "reasoning_tokens": reasoning_tokens,
        "seed": seed,
        "sampling": sampling,
        "suite": suite,
    }
    if quality:
        knobs["quality"] = parse_pairs(quality, "--quality", "PATTERN")
    if fine_tunes is not None:
        knobs["fine_tunes"] = read_fine_tunes(fine_tunes)
    try:
        config = SimulatorConfig(**knobs)
    except ValidationError as error:
        raise typer.BadParameter(one_line(error, option_name)) from error
    try:
        from simulator.server import serve_forever  # the HTTP server, only when it runs

        serve_forever(config, host, port, on_ready=announce)
    except ConfigError as error:  # the suite could not be loaded
        raise typer.BadParameter(str(error), param_hint="--suite") from error
    except OSError as error:  # the address could not be bound: the port in use, a host not ours
        raise typer.BadParameter(f"cannot listen on {host}:{port} ({error.strerror or error})",
                                 param_hint="--port") from None


def option_name(knob: str) -> str:
    """The option that sets a SimulatorConfig knob (`error_rates.500` -> `--error-rate`)."""
    field = knob.partition(".")[0]
    return "--error-rate" if field == "error_rates" else "--" + field.replace("_", "-")


def read_fine_tunes(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint="--fine-tunes") from error


def announce(url: str) -> None:
    typer.echo(
        f"Simulator listening on {url} - export OPENAI_BASE_URL={url}/v1 "
        f"ANTHROPIC_BASE_URL={url} MISTRAL_BASE_URL={url}"
    )
