"""Everything about genesis-bench's messages, in one module both sides import: the Celery app and
its configuration, the queue and task names, the routes, and the ways work is sent,
`publish_jobs` (a run_job message per job), `request_report` (a run's build_report, once) and
`request_look` (a sequential run's look step).

The producer imports this module and nothing of `worker/`; the worker adds its bootsteps and
signal handlers to this same app in worker/app.py (the app `celery -A worker.app` loads).
Messages go out through Celery's public `send_task`, so `before_task_publish` /
`after_task_publish` fire for every job, publishing is retried, and queues are declared.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from kombu import Queue

from shared.config import Settings, get_settings
from shared.providers.registry import PROVIDER_QUEUES, PROVIDERS, queue_for

RUN_JOB = "genesis.run_job"
BUILD_REPORT = "genesis.build_report"
ADVANCE_LOOK = "genesis.advance_look"  # a sequential run's look step (worker/looks.py)
FLUSH_BATCH = "genesis.flush_batch"
POLL_BATCH = "genesis.poll_batch"
CANCEL_BATCHES = "genesis.cancel_batches"
REPORTS_QUEUE = "reports"
# Provider batches' submissions, polls and cancels (worker/batches.py): not a job queue, so a
# budget halt, which stops those, leaves it running (cancelled batches are still read).
BATCHES_QUEUE = "batches"
# Imported by a worker only (by name: nothing here imports worker/).
TASK_MODULES = ["worker.tasks", "worker.batches", "worker.looks"]
REPORT_MARKER_TTL_S = 7 * 24 * 3600
PUBLISH_BATCH = 1000  # messages per pipelined Redis round trip


# The worker control command that makes each worker take back the job queues it had (worker/halt.py).
RESTORE_COMMAND = "genesis_restore_provider_queues"


def job_queue(settings: Settings, provider: str, backend: str | None = None) -> str:
    """The queue of a job: its backend's own endpoint queue when the backend has a `base_url`
    (its jobs wait apart, for workers that hold its key), else its provider's queue."""
    config = settings.backends.get(backend) if backend else None
    if config is not None and config.base_url and config.provider == provider:
        return endpoint_queue(provider, backend)
    return queue_for(provider)


def endpoint_queue(provider: str, backend: str) -> str:
    """`openai@local-vllm`: cannot collide with a provider queue or `reports`."""
    return f"{queue_for(provider)}@{backend}"


def job_queues(settings: Settings) -> tuple[str, ...]:
    """Every queue paid work goes to: one per provider, one per backend with its own endpoint.
    These are what a budget halt stops."""
    own = [endpoint_queue(b.provider, name) for name, b in settings.backends.items() if b.base_url]
    return (*PROVIDER_QUEUES, *own)


def all_queues(settings: Settings) -> tuple[str, ...]:
    """What a worker started without `-Q` consumes."""
    return (*job_queues(settings), REPORTS_QUEUE, BATCHES_QUEUE)


def queue_provider(queue: str) -> str | None:
    """The provider whose SDK a queue's jobs call (None for `reports` and `batches`)."""
    for name, spec in PROVIDERS.items():
        if queue == spec.queue or queue.startswith(f"{spec.queue}@"):
            return name
    return None


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting in one place, with safe defaults for long, paid, I/O-bound calls."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # Messages carry IDs only, as JSON.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A job is acknowledged only once it is done; a dead worker's job is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Must exceed the longest countdown/ETA we schedule, or Redis redelivers early.
        "broker_transport_options": {"visibility_timeout": 3600},
        "task_queues": [Queue(name) for name in all_queues(settings)],
        "task_default_queue": REPORTS_QUEUE,
        # run_job goes to the queue publish_jobs names (its provider's or its endpoint's).
        "task_routes": {BUILD_REPORT: {"queue": REPORTS_QUEUE}, ADVANCE_LOOK: {"queue": REPORTS_QUEUE},
                        **{name: {"queue": BATCHES_QUEUE} for name in (FLUSH_BATCH, POLL_BATCH, CANCEL_BATCHES)}},
        "task_time_limit": settings.worker.task_time_limit_s,
        "task_soft_time_limit": max(settings.worker.task_time_limit_s - 30, 10),
        "result_expires": 7 * 24 * 3600,
        "result_backend_thread_safe": True,
        # Nobody reads task results (progress and reports come from SQL; the report follows
        # the last job by worker/completion.py, not a chord): storing them cost ~0.4 ms per job.
        "task_ignore_result": True,
        # Publishing is retried (a Redis blip), within bounds, before submit reports a failure.
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                      "interval_max": 2},
        # Provider calls are I/O-bound: threads, one SDK client per thread (design §8).
        "worker_pool": settings.worker.pool,
        "worker_concurrency": settings.worker.concurrency,
        # Task events off by default (3 Redis publishes, ~0.5-1 ms of CPU per task): Flower
        # switches them on in every worker while it runs (its --enable_events, on by default),
        # and `celery worker -E` forces them on.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def pool_named(args: list[str], environ: dict[str, str]) -> str | None:
    """The pool a worker's command line names (`-P X`, `-PX`, `--pool X`, `--pool=X`, else
    CELERY_WORKER_POOL), or None. Celery's `-P` has the default `prefork` and takes an explicit
    `-P prefork` for that default, so a configured pool would win over it: whoever starts the
    worker applies this first (use_pool), and the command line wins over the config."""
    named = environ.get("CELERY_WORKER_POOL") or None
    for at, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-P", "--pool") and at + 1 < len(args):
            named = args[at + 1]
        elif arg.startswith("--pool="):
            named = arg.split("=", 1)[1]
        elif arg.startswith("-P") and len(arg) > 2:
            named = arg[2:]
    return named


def use_pool(celery_app: Celery, args: list[str], environ: dict[str, str]) -> None:
    """The worker's pool: what its command line names, else the config's `worker.pool`."""
    named = pool_named(args, environ)
    if named:
        celery_app.conf.worker_pool = named


def create_app(settings: Settings | None = None) -> Celery:
    celery_app = Celery("genesis", include=TASK_MODULES)
    celery_app.config_from_object(celery_config(settings or get_settings()))
    return celery_app


app = create_app()


def reconnect(settings: Settings) -> None:
    """Re-point the app at `settings` and drop connections made under earlier ones (tests and
    benchmarks reconfigure one process several times)."""
    app.conf.update(celery_config(settings))
    app._pool = None
    app.amqp._producer_pool = None
    app.amqp.__dict__.pop("queues", None)
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    app.__dict__.pop("control", None)


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def report_marker(run_id: str) -> str:
    """Set by the one caller that sends the run's report; cleared by every (re-)publish of its jobs
    and by `producer resume` (rearm_report)."""
    return f"genesis:run:{run_id}:report-sent"


def rearm_report(run_id: str, client: redis.Redis | None = None) -> None:
    """The run goes on: its next end sends the report again (a halt's report was of what had
    finished then). Every (re-)publish of jobs does it; so does `producer resume` of a sequential
    run halted between two looks, which publishes nothing itself (its look step does, or stops)."""
    (client or _redis(get_settings().redis_url)).delete(report_marker(run_id))


def publish_jobs(run_id: str, jobs: Iterable[tuple[int, str, str | None]]) -> None:
    """A run_job(job_id) message per (job_id, provider, backend) on its queue. The one publisher
    of jobs: submit, `producer resume` and the recovery sweep all come through here. The run's
    report is re-armed first (its last job sends it again), and the run is marked as published
    (so no sweep re-publishes a run being published); if publishing fails the mark is taken back
    and the sweep re-publishes the run once Redis answers.

    One kombu producer, its sends pipelined in batches of PUBLISH_BATCH (`Producer.batch`, kombu
    ≥ 5.7); each queue is declared once rather than per message (~25% of send_task's CPU), and
    the args' repr is given (Celery's saferepr was another ~10%)."""
    from shared import fleet

    settings = get_settings()
    client = _redis(settings.redis_url)
    rearm_report(run_id, client)
    fleet.mark_run_enqueued(client, run_id)
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
            declared: set[str] = set()
            for job_id, provider, backend in jobs:
                queue = job_queue(settings, provider, backend)
                if queue not in declared:
                    producer.maybe_declare(app.amqp.queues[queue])
                    declared.add(queue)
                app.send_task(RUN_JOB, args=(job_id,), queue=queue, producer=producer, ignore_result=True,
                              declare=[], argsrepr=f"({job_id},)", kwargsrepr="{}")
    except BaseException:
        fleet.unmark_run(client, run_id)
        raise


def request_report(run_id: str) -> bool:
    """Send the run's build_report unless it was sent since its jobs were last published; True
    for the one caller that sent it. The marker is Redis SET NX, so concurrent last jobs agree."""
    client = _redis(get_settings().redis_url)
    marker = report_marker(run_id)
    if not client.set(marker, "1", nx=True, ex=REPORT_MARKER_TTL_S):
        return False
    try:
        app.send_task(BUILD_REPORT, args=(None,), kwargs={"run_id": run_id}, ignore_result=True)
    except Exception:
        client.delete(marker)  # not sent: the next final delivery (or `resume`) tries again
        raise
    return True


def request_look(run_id: str) -> None:
    """Send a sequential run's look step (worker/looks.py) to the `reports` queue. No marker:
    the step's own claim (a conditional UPDATE of the run's look) makes duplicates harmless."""
    app.send_task(ADVANCE_LOOK, args=(run_id,), ignore_result=True)


def stop_provider_consumers(celery_app: Celery = app) -> None:
    """A budget halt: every worker, on every host, cancels its job-queue consumers (a broadcast),
    and submitted provider batches are cancelled (on the `batches` queue, which a halt leaves
    running)."""
    for queue in job_queues(get_settings()):
        celery_app.control.cancel_consumer(queue)
    celery_app.send_task(CANCEL_BATCHES, queue=BATCHES_QUEUE, ignore_result=True)


def restore_provider_consumers(celery_app: Celery = app) -> None:
    """Each worker takes back only the job queues it had (worker/halt.py answers the command): a
    `-Q reports` worker, or one on a host without a provider's key, must not start taking jobs."""
    celery_app.control.broadcast(RESTORE_COMMAND)
