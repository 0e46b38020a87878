"""`producer finetune status`: each agent's fine-tuned Mistral models (and the jobs that made
them, where the installed SDK has a jobs API), whether its model_id.txt names the newest usable
one, `--write-model-ids` to make it so, `--ledger` to put the jobs' cost in the budget.

The call is made from this process with the key in its environment (MISTRAL_API_KEY, or the
backend's own key variable): never printed, stored or passed on. A missing key, an unreachable
endpoint or an unknown agent is one line and exit 2; a call that fails otherwise, exit 1."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.text import Text

from producer.output import JsonOpt, bad_input, console, emit_json, failure
from shared.config import ConfigError, Settings, get_settings, redacted_url
from shared.files import NotWritable
from shared.terminal import without_controls

if TYPE_CHECKING:
    from shared.finetune import AgentState, FineTune, Listing

finetune_app = typer.Typer(help="Fine-tuned Mistral models, their jobs and their cost.", no_args_is_help=True)
DEFAULT_ENDPOINT = "https://api.mistral.ai"


@finetune_app.command()
def status(
    agent: Annotated[Optional[list[str]], typer.Option("--agent", help="Only this agent (repeatable).")] = None,
    write_model_ids: Annotated[bool, typer.Option(
        "--write-model-ids", help="Point each agent's model_id.txt at its newest usable fine-tuned model.")] = False,
    ledger: Annotated[bool, typer.Option(
        "--ledger", help="Ledger each finished job's cost (reported by the API, or trained tokens x "
        "[pricing] training_per_mtok) as operation fine_tuning; a job already ledgered adds nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per agent: fine-tuned models (and jobs, where the SDK has them), and which model_id.txt is stale."""
    from shared import finetune

    try:
        settings = get_settings()
        backend = finetune.finetune_backend(settings)
        agents = _agents(settings, agent)
        client, endpoint = _client(settings, backend)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    listing = _fetch(client, endpoint)
    states, unassigned = finetune.by_agent(settings, listing, agents)
    try:
        written = finetune.write_model_ids(states) if write_model_ids else []
    except NotWritable as exc:  # e.g. models/ mounted read-only (docker-compose.yml)
        raise failure(f"cannot write a model_id.txt: {exc}") from None
    mine = [item for state in states for item in state.fine_tunes]
    added = _ledger(settings, mine) if ledger else []
    in_ledger = _in_ledger([item.job_id for item in (*mine, *unassigned) if item.job_id])
    costs = {id(item): finetune.job_cost(settings, item) for item in (*mine, *unassigned)}

    def row(item: FineTune) -> dict[str, Any]:
        cost = costs[id(item)]
        return {**item.as_dict(), "cost_usd": cost[0] if cost else None, "cost_source": cost[1] if cost else None,
                "ledgered_usd": in_ledger.get(item.job_id) if item.job_id else None}

    if as_json:
        emit_json({
            "sdk": listing.sdk, "backend": backend, "endpoint": endpoint,
            "agents": {s.agent: {**s.as_dict(), "fine_tunes": [row(i) for i in s.fine_tunes]} for s in states},
            "unassigned": [row(item) for item in unassigned] if not agent else [],
            "ignored": listing.ignored, "written": written, "ledgered": added,
        })
        return
    _print(listing, states, [] if agent else unassigned, row, written, added)


def _agents(settings: Settings, wanted: list[str] | None) -> list[str]:
    known = settings.agents.names
    for name in wanted or []:
        if name not in known:
            raise ConfigError(f"--agent {name!r} is not an agent (known: {', '.join(known)})")
    return list(dict.fromkeys(wanted)) if wanted else list(known)


def _client(settings: Settings, backend: str) -> tuple[Any, str]:
    """The SDK client, with the key and endpoint of the backend (its own `api_key_env` and
    `base_url` where the config has them, else MISTRAL_API_KEY and MISTRAL_BASE_URL)."""
    from shared.providers import PROVIDERS
    from shared.providers.clients import client_for, credentials

    config, spec = settings.backends[backend], PROVIDERS["mistral"]
    variable = settings.key_variables(backend)[0]
    key, base_url = credentials(spec, config.base_url, variable)
    if not key:
        raise ConfigError(f"{variable} is not set: `finetune status` asks the Mistral API from this host")
    client = client_for(spec, settings.retry.call_timeout_s, config.base_url, variable)
    return client, redacted_url(base_url or DEFAULT_ENDPOINT)


def _fetch(client: Any, endpoint: str) -> Listing:
    from shared.finetune import fetch
    from shared.providers import classify

    try:
        return fetch(client)
    except Exception as exc:  # noqa: BLE001 - every SDK or transport error becomes one line
        error = classify(exc)
        if error.kind == "connection":
            raise bad_input(f"the Mistral API at {endpoint} is not reachable ({error})") from None
        status = f" {error.status}" if error.status else ""
        raise failure(f"the Mistral API call failed ({error.kind}{status}): {error}") from None


def _ledger(settings: Settings, items: list[FineTune]) -> list[dict[str, Any]]:
    """Ledger each finished job of an agent whose cost is known; one entry per job, ever."""
    from producer.budget_cli import after_ledger_write
    from shared.budget import BudgetGuard
    from shared.db import migrate
    from shared.finetune import fine_tuning_entry, job_cost

    migrate(settings.database_url)
    guard = BudgetGuard.from_settings(settings)
    added = []
    for item in items:
        cost = job_cost(settings, item)
        if cost is None or cost[0] <= 0 or item.job_id is None:
            continue
        entry = fine_tuning_entry(item.job_id, cost[0], agent=item.agent, model=item.model_id or item.base_model,
                                  trained_tokens=item.trained_tokens or 0)
        recorded = guard.record_entry(entry)
        added.append({"job_id": item.job_id, "agent": item.agent, "cost_usd": recorded.cost_usd, "entry": recorded.id,
                      "added": recorded is entry})
    if added:
        after_ledger_write(guard, "fine-tuning cost")
    return added


def _in_ledger(job_ids: list[str]) -> dict[str, float]:
    from shared.db import read_migrating, session_scope
    from shared.finetune import ledgered

    def read() -> dict[str, float]:
        with session_scope() as session:
            return ledgered(session, job_ids)

    return read_migrating(read)


# --- the listing -----------------------------------------------------------------------------


def _print(listing: Listing, states: list[AgentState], unassigned: list[FineTune], row: Any,
           written: list[dict], added: list[dict]) -> None:
    """One line per agent (its model_id.txt), then one per model or job, newest first: readable in
    a narrow terminal and by grep. API text goes out as plain Text (never read as markup)."""
    from shared.finetune import FINAL_STATUSES

    sdk = listing.sdk
    _line(f"mistralai {sdk['version']} ({sdk['line']} line): {sdk['source']}")
    changed = {change["agent"]: change for change in written}
    for state in states:
        if state.agent in changed:
            verdict, style = f"written (was {changed[state.agent]['old'] or 'empty'})", "cyan"
        elif state.newest_usable is None:
            verdict, style = "no usable fine-tuned model", "red"
        elif state.up_to_date:
            verdict, style = "up to date", "green"
        else:
            verdict, style = f"stale: the newest usable is {state.newest_usable}", "yellow"
        console.print(Text.assemble((state.agent, "bold"), without_controls(
            f": {_relative(state.model_id_file)} holds {state.current or '(nothing)'} - "),
            (without_controls(verdict), style)), soft_wrap=True)
        for item in state.fine_tunes:
            _line("  " + _item_line(item, row(item), FINAL_STATUSES))
    if unassigned:
        _line("no agent (the [finetune] owner_pattern matches none, or more than one):")
        for item in unassigned:
            _line("  " + _item_line(item, row(item), FINAL_STATUSES))
    if listing.ignored:
        _line(f"{listing.ignored} entr{'y' if listing.ignored == 1 else 'ies'} with an implausible id left out")
    for entry in added:
        what = f"ledger entry {entry['entry']}" if entry["added"] else f"already ledgered (entry {entry['entry']})"
        _line(f"fine-tuning job {entry['job_id']} ({entry['agent']}): {what}, ${entry['cost_usd']:.4f}")
    unpriced = [item for state in states for item in state.fine_tunes if item.job_id
                and (item.status is None or item.status in FINAL_STATUSES)
                and row(item)["cost_usd"] is None and row(item)["ledgered_usd"] is None]
    if unpriced:
        _line(f"{len(unpriced)} finished fine-tuning job(s) with no known cost are not in the ledger; log each once: "
              "producer budget log --operation fine_tuning --source JOB_ID --cost USD --agent AGENT")


def _item_line(item: FineTune, data: dict[str, Any], final: frozenset[str]) -> str:
    state = item.status or ("archived" if item.archived else "usable")
    if item.status and item.archived:
        state += ", archived"
    parts = [item.model_id or ("(no model)" if item.status in final else "(no model yet)"), state, f"base {item.base_model or '?'}", f"created {_when(item.created)}",
             f"job {item.job_id or '?'}"]
    if data["cost_usd"] is not None:
        parts.append(f"cost ${data['cost_usd']:.4f} ({data['cost_source']})")
    if data["ledgered_usd"] is not None:
        parts.append(f"ledgered ${data['ledgered_usd']:.4f}")
    return "  ".join(parts)


def _line(text: str) -> None:
    console.print(Text(without_controls(text)), soft_wrap=True)  # API text: hostile


def _relative(path: str | None) -> str:
    if path is None:
        return "(no model_id_file)"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _when(created: int | None) -> str:
    try:
        return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M") if created else ""
    except (OverflowError, OSError, ValueError):  # a timestamp no calendar holds
        return str(created)
