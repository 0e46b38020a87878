"""`producer check BACKEND...`: one tiny paid request per backend before a real run, so a model id
the provider no longer serves, a missing key or a setting the model refuses shows up for cents.

It is a real run of one job per backend (the suite's first task of one agent), answered by the
workers through the one paid-call path (worker/paid_call.py): reserved, rate-limited, ledgered
and reported like any other job."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from producer.output import JsonOpt, bad_input, console, emit_json, err_console
from shared.config import ConfigError, get_settings
from shared.numbers import number

FINAL = ("ok", "error", "halted", "cancelled")


def check(
    backends: Annotated[list[str], typer.Argument(metavar="BACKEND...", help="Backends to check (one tiny request each).")],
    agent: Annotated[Optional[str], typer.Option(help="Whose first task to send (default: the first agent).")] = None,
    timeout: Annotated[float, typer.Option(parser=number(float, gt=0), help="Seconds to wait for the answers.")] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Send one tiny request per backend; print model, settings accepted, latency and cost."""
    from producer import submit as submitting
    from producer.submit_cli import refuse_while_halted
    from shared.calls import backend_settings

    try:
        settings = get_settings()
        chosen = submitting.select_work(settings, agents=[agent or settings.agents.names[0]], all_agents=False,
                                        backends=backends, suite=None, limit=1)
        refuse_while_halted(settings)
        run_id, jobs = submitting.record_run(settings, chosen)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    submitting.enqueue(run_id, jobs)
    rows = _wait(run_id, timeout)
    results = [_result(row, backend_settings(settings, row.backend)) for row in rows]
    if as_json:
        emit_json({"run_id": run_id, "backends": results})
    else:
        for result in results:
            _print(result)
        console.print(f"(run {run_id}; its cost is in the ledger)", highlight=False)
    if any(result["status"] != "ok" for result in results):
        raise typer.Exit(1)


def _wait(run_id: str, timeout: float) -> list:
    """The run's jobs once each is final, or as they stand at the timeout (a job still queued
    says no worker consumed its queue)."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job

    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            rows = list(session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)).all())
        if all(row.status in FINAL for row in rows):
            return rows
        if time.monotonic() > deadline:  # no worker answered: a worker that comes later pays nothing
            from shared.lifecycle import RunAlreadyFinal, cancel_run

            try:
                cancel_run(run_id)
            except RunAlreadyFinal:  # its last job finished meanwhile
                continue
            return rows
        time.sleep(0.3)


def _result(job, sent: dict) -> dict:
    accepted = job.status == "ok"
    return {
        "backend": job.backend, "model": job.model, "status": job.status,
        "settings": sent, "settings_accepted": accepted if job.status in ("ok", "error") else None,
        "latency_ms": round(job.latency_ms) if job.latency_ms is not None else None,
        "cost_usd": job.cost_usd, "input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
        "reasoning_tokens": job.reasoning_tokens, "truncated": job.truncated,
        "error": job.error_message,
    }


def _print(result: dict) -> None:
    sent = ", ".join(f"{key}={json.dumps(value)}" for key, value in result["settings"].items())
    head = f"{result['backend']}: model {result['model']}"
    if result["status"] == "ok":
        reasoning = f", {result['reasoning_tokens']} reasoning" if result["reasoning_tokens"] else ""
        cut = "; cut off by its allowance" if result["truncated"] else ""
        console.print(f"{head} OK, settings accepted ({sent}); {result['latency_ms']} ms, ${result['cost_usd']:.6f} "
                      f"({result['input_tokens']} in, {result['output_tokens']} out{reasoning}){cut}",
                      highlight=False, soft_wrap=True, markup=False)
    elif result["status"] == "error":
        err_console.print(f"{head} FAILED ({sent}): {result['error']}", highlight=False, soft_wrap=True, markup=False)
    else:
        err_console.print(f"{head} {result['status'].upper()}: no answer ({result['error'] or 'no worker took it'})",
                          highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
