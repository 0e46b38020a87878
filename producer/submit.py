"""Record first, then enqueue: a run's rows exist in SQL before any task is sent, and each task
carries only its job id. `resume` rebuilds the remaining work from SQL alone."""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from dataclasses import dataclass

import redis
from celery import chord

from shared import fleet
from shared.config import ConfigError, Settings, get_settings
from shared.db import session_scope
from shared.models import Job, Run, RunStatus, utcnow
from shared.providers import PROVIDER_ENV, credentials
from shared.suite import SUITES_DIR, Suite, load_suite


@dataclass(frozen=True)
class Selection:
    suite: Suite
    agents: list[str]
    backends: list[str]
    limit: int | None


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
    if all_agents:
        chosen_agents = list(known_agents)
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
    missing_keys = sorted({
        PROVIDER_ENV[settings.backends[b].provider][0] for b in chosen_backends
        if PROVIDER_ENV[settings.backends[b].provider][0] not in os.environ
    })
    if check_keys and missing_keys:
        raise ConfigError(
            f"missing {', '.join(missing_keys)} in the environment for the selected backends "
            "(for the simulator, set dummy keys and the *_BASE_URL variables: see README)"
        )
    for backend in chosen_backends:
        for agent in chosen_agents:
            settings.price_for(settings.model_for(backend, agent))  # raises on a missing id or price
    return Selection(loaded, chosen_agents, chosen_backends, limit)


def simulator_settings(providers: set[str]) -> dict | None:
    """The simulator's knobs when any provider endpoint answers as the genesis simulator
    (the report must say the numbers came from it, and from which qualities), else None."""
    for provider in providers:
        _, base_url = credentials(provider)
        if not base_url:
            continue
        root = base_url.rstrip("/").removesuffix("/v1")
        try:
            with urllib.request.urlopen(f"{root}/_sim/config", timeout=2) as response:
                if response.status == 200:
                    return json.loads(response.read())
        except (OSError, ValueError):
            continue
    return None


def suite_reference(suite: Suite) -> str:
    """What workers load the suite by: a shipped suite's name, or the folder's absolute path."""
    return suite.name if suite.path.resolve().parent == SUITES_DIR.resolve() else str(suite.path.resolve())


def new_run_id() -> str:
    return utcnow().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def record_run(settings: Settings, selection: Selection) -> tuple[str, list[tuple[int, str]]]:
    """Write the Run and all its Jobs in one transaction; returns (run_id, [(job_id, provider)]).
    The schema must be current (the CLI migrates first)."""
    run_id = new_run_id()
    simulator = simulator_settings({settings.backends[b].provider for b in selection.backends})
    config = settings.snapshot() | ({"simulator": simulator} if simulator else {})
    with session_scope() as session:
        session.add(Run(
            id=run_id, suite=suite_reference(selection.suite), agents=selection.agents, backends=selection.backends,
            status=RunStatus.queued, simulated=simulator is not None, config=config,
        ))
        session.flush()
        jobs = [
            Job(run_id=run_id, agent=agent, task_id=task.id, difficulty=task.difficulty, backend=backend,
                provider=settings.backends[backend].provider, model=settings.model_for(backend, agent))
            for agent in selection.agents
            for task in selection.suite.tasks_for(agent, selection.limit)
            for backend in selection.backends
        ]
        session.add_all(jobs)
        session.flush()
        run = session.get(Run, run_id)
        run.total_jobs = len(jobs)
        return run_id, [(job.id, job.provider) for job in jobs]


def enqueue(run_id: str, jobs: list[tuple[int, str]]) -> None:
    """One chord: a run_job per job on its provider's queue; build_report on `reports`. The one
publisher of jobs: submit, `producer resume` and the recovery sweep all come through here."""
    from worker.app import REPORTS_QUEUE, app

    header = [app.signature("genesis.run_job", args=(job_id,), queue=provider, immutable=True)
              for job_id, provider in jobs]
    body = app.signature("genesis.build_report", kwargs={"run_id": run_id}, queue=REPORTS_QUEUE)
    client = redis.Redis.from_url(get_settings().redis_url)
    fleet.mark_run_enqueued(client, run_id)  # first, so no sweep re-enqueues a run being published
    try:
        chord(header, app=app)(body)
    except BaseException:
        fleet.unmark_run(client, run_id)  # the sweep re-enqueues it once Redis answers
        raise
    _drop_result_subscriptions(app)


def _drop_result_subscriptions(app) -> None:
    """The producer never waits on task results (progress comes from SQL), but Celery's Redis
    backend subscribes to each sent task's result channel; drop them now rather than holding
    hundreds open and tearing them down noisily at interpreter exit."""
    consumer = app.backend.result_consumer
    for key in list(getattr(consumer, "subscribed_to", ())):
        name = key.decode() if isinstance(key, bytes) else key
        consumer.cancel_for(name.removeprefix(app.backend.task_keyprefix.decode()))
