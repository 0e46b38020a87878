"""`producer submit`: validate, estimate (`--dry-run`), record and enqueue a run, and watch it
with `--wait`. The submit machinery (suites, pricing, the budget guard, Celery) is imported
when a command runs, not when `producer` starts."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from producer.output import JsonOpt, bad_input, console, emit_json, err_console
from shared.config import ConfigError, get_settings, redacted_url
from shared.db import migrate
from shared.models import RunStatus
from shared.numbers import MAX_TASKS, number


def submit(
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent in the config.")] = False,
    agent: Annotated[Optional[list[str]], typer.Option("--agent", help="An agent (repeatable).")] = None,
    backend: Annotated[Optional[list[str]], typer.Option("--backend", help="A backend (repeatable); default: all enabled.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Suite name or folder (default from config).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        parser=number(int, ge=1, le=MAX_TASKS), help="First N tasks per agent (smoke runs).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and estimate cost; enqueue nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the report exists.")] = False,
    reuse: Annotated[bool, typer.Option("--reuse", help="Take identical earlier ok answers instead of paying again.")] = False,
    epochs: Annotated[Optional[int], typer.Option(
        parser=number(int, ge=1, le=100),
        help="Run each job K times, each its own paid call; a task scores its epochs' mean "
             "(default: [decision] epochs).",
    )] = None,
    sequential: Annotated[bool, typer.Option(
        "--sequential", help="Release each agent's tasks in looks and stop paying once its verdict is settled "
                             "(default: [decision] design).")] = False,
    looks: Annotated[Optional[int], typer.Option(
        parser=number(int, ge=1, le=20), help="The largest number of looks of a sequential run (default: [decision] looks).",
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue one job per (agent, task, backend, epoch) and print the run id."""
    from producer import submit as submitting

    try:
        settings = get_settings()
        if reuse:
            settings = submitting.with_reuse(settings)
        if epochs is not None:
            settings = submitting.with_epochs(settings, epochs)
        settings = submitting.with_design(settings, sequential, looks)
        selection = submitting.select_work(
            settings, agents=agent or [], all_agents=all_agents, backends=backend or [], suite=suite, limit=limit,
            check_keys=not dry_run,
        )
        if dry_run:
            _dry_run(settings, selection, as_json)
            return
        refuse_while_halted(settings)
        run_id, jobs = submitting.record_run(settings, selection)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None
    try:
        submitting.enqueue(run_id, jobs)
    except Exception as exc:  # noqa: BLE001 - broker down: the run is recorded and resumable
        err_console.print(f"[red]error:[/red] could not enqueue run {run_id} ({exc}); "
                          f"once the broker answers: producer resume {run_id}")
        raise typer.Exit(1) from None
    design = settings.decision.design
    recorded = submitting.recorded_jobs(run_id)
    if as_json and not wait:
        emit_json({"run_id": run_id, "jobs": recorded, "enqueued": len(jobs), "design": design})
        return
    if not as_json:
        per_epoch = f" × {_count(selection.epochs, 'epoch')}" if selection.epochs > 1 else ""
        looked = (f"; sequential: {len(jobs)} of them enqueued (look 1 of {settings.decision.looks}), the rest "
                  "wait for their look" if design == "sequential" else "")
        console.print(f"run [bold]{run_id}[/bold]: {recorded} jobs {'recorded' if looked else 'enqueued'} "
                      f"({_count(len(selection.agents), 'agent')} × {_count(len(selection.backends), 'backend')}"
                      f"{per_epoch}){looked}")
    if wait:
        from producer.watch import wait_for_report

        final = wait_for_report(run_id, quiet=as_json)
        if as_json:
            emit_json({"run_id": run_id, "jobs": recorded, **final})
        raise typer.Exit(0 if final["status"] == RunStatus.completed else 1)


def refuse_while_halted(settings) -> None:
    """No new paid work while the budget guard is halted (a failed check: exit 1)."""
    import redis

    from shared.budget import BudgetGuard

    migrate(settings.database_url)
    try:
        halted = BudgetGuard.from_settings(settings).is_halted()
    except redis.RedisError as exc:
        err_console.print(f"[red]error:[/red] Redis is not answering at {redacted_url(settings.redis_url)} ({exc}); "
                          "nothing was done", soft_wrap=True)
        raise typer.Exit(1) from None
    if halted:
        err_console.print("[red]error:[/red] the budget guard is halted: nothing was done; `producer budget` shows "
                          "why, `producer budget resume [--limit USD]` lifts it")
        raise typer.Exit(1)


def _dry_run(settings, selection, as_json: bool) -> None:
    from producer import submit as submitting
    from producer.plan import decision_power, power_lines
    from shared.budget import BudgetGuard, estimate_run_cost
    from shared.calls import backend_settings, judge_worst_case

    estimate = estimate_run_cost(settings, selection.suite, selection.agents, selection.backends, selection.limit,
                                 epochs=selection.epochs)
    estimate["epochs"] = selection.epochs
    if settings.reuse.enabled:
        migrate(settings.database_url)
        _apply_reuse(estimate, submitting.reuse_savings(settings, selection))
    judged = judge_worst_case(settings, selection)
    if judged["calls"]:  # grades are paid too, whether the answer is reused or not
        estimate["judge"] = judged
        estimate["estimated_cost_usd"] = round(estimate["estimated_cost_usd"] + judged["cost_usd"], 6)
        estimate["within_budget"] = estimate["estimated_cost_usd"] <= estimate["remaining_usd"]
    estimate["decision_power"] = decision_power(settings, selection)
    estimate["settings"] = {name: backend_settings(settings, name) for name in selection.backends}
    try:
        remaining = BudgetGuard.from_settings(settings).status()["remaining_usd"]
        estimate["remaining_usd"] = remaining
        estimate["within_budget"] = estimate["estimated_cost_usd"] <= remaining
    except Exception:  # noqa: BLE001 - Redis not running: estimate against the configured limit
        pass
    if as_json:
        emit_json(estimate)
        return
    per_epoch = f", {selection.epochs} epochs each" if selection.epochs > 1 else ""
    table = Table(title=f"dry run: {estimate['jobs']} jobs{per_epoch} (worst case: every answer uses max_tokens)")
    reusing = "reuse" in estimate
    for column in ("backend", "jobs", *(("reused",) if reusing else ()), "input tokens", "output tokens", "cost USD"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    for name, row in estimate["by_backend"].items():
        reused = (str(row["reused"]),) if reusing else ()
        label = f"{name} (batch price)" if settings.is_batch(name) else name
        table.add_row(label, str(row["jobs"]), *reused, str(row["input_tokens"]), str(row["output_tokens"]),
                      f"{row['cost_usd']:.4f}")
    console.print(table)
    console.print("settings each backend sends (besides its messages; unset ones take the provider's default):",
                  highlight=False, soft_wrap=True)
    for name, sent in estimate["settings"].items():
        console.print(f"  {name}: " + ", ".join(f"{key}={json.dumps(value)}" for key, value in sent.items()),
                      highlight=False, soft_wrap=True, markup=False)
    if "reuse" in estimate:
        saved = estimate["reuse"]
        console.print(f"reuse: {saved['calls_saved']} of {estimate['jobs']} calls take an earlier answer, saving "
                      f"≤ ${saved['saved_usd']:.4f} (those answers cost ${saved['paid_before_usd']:.4f} when paid)")
    if "judge" in estimate:
        console.print(f"judge: {estimate['judge']['calls']} grading calls, ≤ ${estimate['judge']['cost_usd']:.4f}")
    if estimate["decision_power"]["rows"]:
        console.print("decision power (smallest improvement this suite confirms at 80% power, at the report's "
                      f"error shares; the candidate assumed to miss {estimate['decision_power']['assumed_loss_share']:.0%} "
                      "of the baseline's right answers):", highlight=False)
        if selection.epochs > 1:
            console.print(f"  with {selection.epochs} epochs per task: each task scores its epochs' mean; the gain "
                          "takes the within-task (re-draw) share of one answer's paired variance from the candidate's "
                          "newest run with epochs, else [decision] assumed_within_share "
                          f"({estimate['decision_power']['assumed_within_share']:.0%}) "
                          "(normal approximation on the one-epoch figure)",
                          highlight=False, soft_wrap=True, markup=False)
        for line in power_lines(estimate["decision_power"]):
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(estimate["decision_power"]["go_promise"], highlight=False, soft_wrap=True)
    fits = "fits" if estimate["within_budget"] else "does NOT fit"
    console.print(f"estimated ≤ ${estimate['estimated_cost_usd']:.4f}; {fits} the remaining budget "
                  f"(${estimate['remaining_usd']:.2f}). Nothing was enqueued.")


def _apply_reuse(estimate: dict, savings: dict) -> None:
    """The estimate without the calls reuse saves (the table then shows what will be paid)."""
    estimate["reuse"] = savings
    for name, row in estimate["by_backend"].items():
        row["reused"] = savings["by_backend"][name]["reused"]
        row["cost_usd"] = round(max(0.0, row["cost_usd"] - savings["by_backend"][name]["saved_usd"]), 6)
    estimate["estimated_cost_usd"] = round(sum(row["cost_usd"] for row in estimate["by_backend"].values()), 6)
    estimate["within_budget"] = estimate["estimated_cost_usd"] <= estimate["remaining_usd"]


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
