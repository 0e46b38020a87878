"""Record first, then enqueue: a run's rows exist in SQL before any task is sent, and each task
carries only its job id. `resume` rebuilds the remaining work from SQL alone."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from sqlalchemy import insert

from shared.calls import job_request, request_key
from shared.config import ConfigError, Settings
from shared.db import session_scope
from shared.models import Job, JobStatus, Run, RunStatus, utcnow
from shared.suite import SUITES_DIR, Suite, load_suite


@dataclass(frozen=True)
class Selection:
    suite: Suite
    agents: list[str]
    backends: list[str]
    limit: int | None
    epochs: int = 1  # repeated trials per (agent, task, backend): one job and one paid call each


def select_work(
    settings: Settings, *, agents: list[str], all_agents: bool, backends: list[str], suite: str | None,
    limit: int | None, check_keys: bool = True,
) -> Selection:
    """Validate everything a run needs before anything is written (bad input → ConfigError).

    API keys are checked for presence only (their values are never read here), so a run that
    every worker would fail with an auth error is refused up front."""
    if limit is not None and limit <= 0:
        raise ConfigError(f"--limit must be a positive number of tasks per agent (got {limit})")
    loaded = load_suite(suite or settings.suite)
    known_agents = settings.agents.names
    if all_agents:  # every configured agent the suite has tasks for (genesis-judge covers three)
        chosen_agents = [a for a in known_agents if loaded.tasks_for(a)] or list(known_agents)
    elif agents:
        chosen_agents = list(dict.fromkeys(agents))
    else:
        raise ConfigError("say which agents: --all-agents, or --agent NAME (repeatable)")
    for agent in chosen_agents:
        if agent not in known_agents:
            raise ConfigError(f"unknown agent {agent!r} (known: {', '.join(known_agents)})")
        if not loaded.tasks_for(agent):
            raise ConfigError(f"suite {loaded.name!r} has no tasks for agent {agent!r}")

    chosen_backends = list(dict.fromkeys(backends)) if backends else settings.enabled_backends()
    if not chosen_backends:
        raise ConfigError("no backend selected and none is enabled in the config")
    for backend in chosen_backends:
        if backend not in settings.backends:
            raise ConfigError(f"unknown backend {backend!r} (known: {', '.join(settings.backends)})")
    needed_keys = {variable for b in chosen_backends for variable in settings.key_variables(b)}  # every key of every pool
    missing_keys = sorted(var for var in needed_keys if var not in os.environ)
    if check_keys and missing_keys:
        raise ConfigError(
            f"missing {', '.join(missing_keys)} in the environment for the selected backends "
            "(for the simulator, set dummy keys and the *_BASE_URL variables: see README)"
        )
    for backend in chosen_backends:
        for agent in chosen_agents:
            settings.price_for(settings.model_for(backend, agent))  # raises on a missing id or price
    judged = [a for a in chosen_agents if any(not t.scorer.local for t in loaded.tasks_for(a, limit))]
    for agent in judged:  # the judge backend must exist, be priced and have its key
        _, model = settings.judge_model(agent)
        settings.price_for(model)
        missing = [v for v in settings.key_variables(settings.judge.backend) if v not in os.environ]
        if check_keys and missing:
            raise ConfigError(f"missing {', '.join(missing)} in the environment for the judge backend "
                              f"{settings.judge.backend!r}")
    return Selection(loaded, chosen_agents, chosen_backends, limit, settings.decision.epochs)


def suite_reference(suite: Suite) -> str:
    """What workers load the suite by: a shipped suite's name, or the folder's absolute path."""
    return suite.name if suite.path.resolve().parent == SUITES_DIR.resolve() else str(suite.path.resolve())


def new_run_id() -> str:
    return utcnow().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def record_run(settings: Settings, selection: Selection) -> tuple[str, list[tuple[int, str, str]]]:
    """Write the Run and all its Jobs in one transaction; returns (run_id, [(job_id, provider, backend)]).
    The schema must be current (the CLI migrates first)."""
    run_id = new_run_id()
    config = settings.snapshot()
    models = {(b, a): settings.model_for(b, a) for b in selection.backends for a in selection.agents}
    jobs = [  # epoch outermost: a run halted part-way has whole epochs, and epoch 1 is published first
        new_job(settings, run_id, agent, task, backend, models[backend, agent], epoch)
        for epoch in range(1, selection.epochs + 1)
        for agent in selection.agents
        for task in selection.suite.tasks_for(agent, selection.limit)
        for backend in selection.backends
    ]
    sequential = settings.decision.design == "sequential"
    if sequential:
        in_looks(settings, selection, jobs)
    with session_scope() as session:
        session.add(Run(
            id=run_id, suite=suite_reference(selection.suite), agents=selection.agents, backends=selection.backends,
            status=RunStatus.queued, config=config, total_jobs=len(jobs), look=1 if sequential else None,
        ))
        session.flush()
        # One multi-row INSERT ... RETURNING per batch (Core, no ORM objects): 10,000 jobs in
        # well under a second, where ORM objects took seconds.
        table = Job.__table__
        rows = session.connection().execute(
            insert(table).returning(table.c.id, table.c.provider, table.c.backend, sort_by_parameter_order=True),
            jobs,
        ).all()
        # Only the queued ones are sent (a sequential run's later looks wait in SQL).
        return run_id, [tuple(row) for row, job in zip(rows, jobs) if job["status"] == JobStatus.queued]


def in_looks(settings: Settings, selection: Selection, jobs: list[dict]) -> None:
    """A sequential run (design §13): each job gets its task's look (shared.looks.task_looks:
    the agent's tasks in the run's seeded order, cut into `looks` slices); look 1 is queued, the
    others wait. Reference backends follow their agent's looks unless [decision] references =
    "full" (then all their jobs are queued at once)."""
    from shared.looks import task_looks

    rule = settings.decision
    looks = {agent: task_looks([t.id for t in selection.suite.tasks_for(agent, selection.limit)], rule.looks,
                               rule.seed, agent) for agent in selection.agents}
    full = {b for b in selection.backends if rule.references == "full" and settings.backends[b].role == "reference"}
    for job in jobs:
        job["look"] = looks[job["agent"]][job["task_id"]]
        if job["look"] > 1 and job["backend"] not in full:
            job["status"] = JobStatus.waiting


def new_job(settings: Settings, run_id: str, agent: str, task, backend: str, model: str, epoch: int = 1) -> dict:
    """A queued job's row, keyed by the request it will send and its epoch (what reuse matches on)."""
    provider = settings.backends[backend].provider
    return {"run_id": run_id, "agent": agent, "task_id": task.id, "difficulty": task.difficulty,
            "cluster": task.cluster, "backend": backend, "epoch": epoch, "provider": provider, "model": model,
            "status": JobStatus.queued, "attempts": 0,
            "request_key": request_key(provider, job_request(settings, backend, model, task), epoch)}


def with_design(settings: Settings, sequential: bool, looks: int | None) -> Settings:
    """`submit --sequential [--looks K]`: the run's config snapshot says so (its look step and
    report read the design from there). `--looks` alone is refused unless the config's design
    is already sequential."""
    decision = settings.decision
    if looks is not None and not sequential and decision.design != "sequential":
        raise ConfigError('--looks needs --sequential (or [decision] design = "sequential")')
    update: dict = {"design": "sequential"} if sequential else {}
    if looks is not None:
        update["looks"] = looks
    return settings.model_copy(update={"decision": decision.model_copy(update=update)}) if update else settings


def with_reuse(settings: Settings) -> Settings:
    """`submit --reuse`: the run's config snapshot says so, and the workers read it from there."""
    return settings.model_copy(update={"reuse": settings.reuse.model_copy(update={"enabled": True})})


def with_epochs(settings: Settings, epochs: int) -> Settings:
    """`submit --epochs k`: the run's config snapshot says so, and its report reads it from there."""
    return settings.model_copy(update={"decision": settings.decision.model_copy(update={"epochs": epochs})})


def reuse_savings(settings: Settings, selection: Selection) -> dict:
    """What `--reuse` would save on this selection now (an estimate: earlier answers may age out)."""
    from shared.reuse import estimate_savings

    with session_scope() as session:
        return estimate_savings(session, settings, selection)


def enqueue(run_id: str, jobs: list[tuple[int, str, str | None]]) -> None:
    """Publish a run's (job_id, provider, backend) jobs (shared.messaging owns how)."""
    from shared.messaging import publish_jobs

    publish_jobs(run_id, jobs)


def recorded_jobs(run_id: str) -> int:
    """The run's recorded jobs (a sequential run sends only its first look's at submit)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        return run.total_jobs if run is not None else 0
