"""The one Celery app of genesis-bench, built from the one settings object.

`worker` (worker/cli.py) or `celery -A worker.app worker` consumes every queue (one per
provider, plus `reports`) with the defaults below; `-Q`, `-c`, `-P`, `-n` work as Celery users expect.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Queue

from shared.config import Settings, get_settings
from shared.providers.clients import prepare as prepare_provider
from shared.providers.registry import PROVIDER_QUEUES, PROVIDERS
BATCH_TASKS = ("genesis.flush_batch", "genesis.poll_batch", "genesis.cancel_batches")
REPORTS_QUEUE = "reports"
# Provider batches' submissions, polls and cancels (worker/batches.py): not a provider queue, so
# a budget halt, which stops those, leaves it running (cancelled batches are still read).
BATCHES_QUEUE = "batches"


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
        "task_queues": [Queue(name) for name in (*PROVIDER_QUEUES, REPORTS_QUEUE, BATCHES_QUEUE)],
        "task_default_queue": REPORTS_QUEUE,
        "task_routes": {"genesis.build_report": {"queue": REPORTS_QUEUE},
                        **{name: {"queue": BATCHES_QUEUE} for name in BATCH_TASKS}},
        "task_time_limit": settings.worker.task_time_limit_s,
        "task_soft_time_limit": max(settings.worker.task_time_limit_s - 30, 10),
        "result_expires": 7 * 24 * 3600,
        "result_backend_thread_safe": True,
        # Nobody reads task results (progress and reports come from SQL; the report follows
        # the last job by worker/completion.py, not a chord): storing them cost ~0.4 ms per job.
        "task_ignore_result": True,
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


def create_app(settings: Settings | None = None) -> Celery:
    celery_app = Celery("genesis", include=["worker.tasks", "worker.batches"])
    celery_app.config_from_object(celery_config(settings or get_settings()))
    return celery_app


app = create_app()


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    from shared.db import forget_inherited_connections

    forget_inherited_connections()


@signals.worker_init.connect
def _return_freed_memory(**_kwargs) -> None:
    from worker.memory import return_freed_memory

    return_freed_memory()


@signals.worker_init.connect
def _size_database_pool(sender, **_kwargs) -> None:
    """Connections per process from this worker's real concurrency (`-c`, `-P` included):
    a prefork child runs one task at a time, a threads/gevent process runs `-c` at once."""
    from shared.db import pool_size_for, size_pool

    settings = get_settings()
    concurrency = sender.concurrency if isinstance(sender.concurrency, int) else settings.worker.concurrency
    single_task_children = "prefork" in str(sender.pool_cls) or "processes" in str(sender.pool_cls)
    size_pool(settings.worker.db_pool_size or pool_size_for(1 if single_task_children else concurrency),
              application_name=f"genesis-worker {sender.hostname}")


@signals.worker_init.connect
def _prepare_for_queues(sender=None, **_kwargs) -> None:
    """What the jobs of the queues this worker consumes need is loaded at start-up, not inside
    the first jobs (and before prefork forks, so children share it): the SDK of each provider
    queue (~1.3 s of CPU for the three, 6-42 MB each) with the shared TLS context, and for the
    `reports` queue the report code (numpy and all, ~20 MB, ~0.3 s). So a `-Q openai` worker
    holds one SDK and no report code. A queue added later (`add_consumer`) pays on first use."""
    consumed = set(sender.app.amqp.queues.consume_from) if sender is not None else {*PROVIDER_QUEUES, REPORTS_QUEUE}
    for spec in PROVIDERS.values():
        if spec.queue in consumed:
            prepare_provider(spec)
    if REPORTS_QUEUE in consumed:
        import shared.runs  # noqa: F401


import worker.halt  # noqa: E402,F401  (connects the worker_ready handler: a halted budget keeps provider queues idle)
import worker.completion  # noqa: E402,F401  (connects the task_postrun handler: the last job sends the report)
import worker.recovery  # noqa: E402,F401  (connects the worker_ready handler: heartbeat and recovery sweep)
