"""The one Celery app of genesis-bench, built from the one settings object.

`celery -A worker.app worker` consumes every queue (one per provider, plus `reports`) with
the defaults below; `-Q`, `-c`, `-P`, `-n` work as Celery users expect.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Queue

from shared.config import Settings, get_settings

PROVIDER_QUEUES: tuple[str, ...] = ("openai", "anthropic", "mistral")
REPORTS_QUEUE = "reports"


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
        "task_queues": [Queue(name) for name in (*PROVIDER_QUEUES, REPORTS_QUEUE)],
        "task_default_queue": REPORTS_QUEUE,
        "task_routes": {"genesis.build_report": {"queue": REPORTS_QUEUE}},
        "task_time_limit": settings.worker.task_time_limit_s,
        "task_soft_time_limit": max(settings.worker.task_time_limit_s - 30, 10),
        "result_expires": 7 * 24 * 3600,
        "result_backend_thread_safe": True,
        # Provider calls are I/O-bound: threads, one SDK client per thread (design §8).
        "worker_pool": settings.worker.pool,
        "worker_concurrency": settings.worker.concurrency,
        # Events on, so Flower shows tasks live (~0.7 ms of CPU per task here).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def create_app(settings: Settings | None = None) -> Celery:
    celery_app = Celery("genesis", include=["worker.tasks"])
    celery_app.config_from_object(celery_config(settings or get_settings()))
    return celery_app


app = create_app()


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    from shared.db import forget_inherited_connections

    forget_inherited_connections()


@signals.worker_init.connect
def _import_provider_sdks(**_kwargs) -> None:
    """The SDKs cost ~1.3 s of CPU to import; pay it at start-up, not inside the first jobs
    (and before prefork forks, so children share it)."""
    import anthropic  # noqa: F401
    import mistralai.client  # noqa: F401
    import openai  # noqa: F401

import worker.halt  # noqa: E402,F401  (connects the worker_ready handler: a halted budget keeps provider queues idle)
import worker.recovery  # noqa: E402,F401  (connects the worker_ready handler: heartbeat and recovery sweep)
