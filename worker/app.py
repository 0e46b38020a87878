"""The worker side of the one Celery app (built in shared.messaging): its bootsteps and the
signal handlers of worker processes.

`worker` (worker/cli.py) or `celery -A worker.app worker` consumes every queue (one per
provider, one per backend with its own endpoint, plus `reports`) with the defaults of
shared.messaging; `-Q`, `-c`, `-P`, `-n` work as Celery users expect.
"""

from __future__ import annotations

import os
import sys

from celery import signals

from shared.config import get_settings
from shared.messaging import REPORTS_QUEUE, all_queues, app, queue_provider  # noqa: F401  (app: `celery -A worker.app`)
from shared.messaging import use_pool
from shared.providers.clients import prepare as prepare_provider
from shared.providers.registry import PROVIDERS
from worker import completion, halt, recovery


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    from shared.db import forget_inherited_connections

    forget_inherited_connections()


@signals.worker_process_init.connect
def _beat_for_this_child(sender=None, **_kwargs) -> None:
    """A prefork child holds the leases and reservations of the calls it makes (its own
    incarnation, shared.fleet), so it keeps its own heartbeat: the child's death is seen even
    while its parent beats on."""
    recovery.beat_in_child(sender or "local")


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
    consumed = set(sender.app.amqp.queues.consume_from) if sender is not None else set(all_queues(get_settings()))
    for provider in {queue_provider(queue) for queue in consumed} - {None}:
        prepare_provider(PROVIDERS[provider])
    if REPORTS_QUEUE in consumed:
        import shared.runs  # noqa: F401


# Registered here, explicitly, on the one app: the recovery threads (heartbeat and sweep) and the
# halt control are bootsteps that start and stop with the worker; the completion step follows
# every run_job.
app.steps["worker"].add(recovery.RecoveryStep)
app.steps["consumer"].add(halt.HaltControlStep)
signals.task_postrun.connect(completion.after_run_job, weak=False, dispatch_uid="genesis.completion")

if "worker" in sys.argv[1:]:  # `celery -A worker.app worker ...`: its `-P` wins over the config's pool
    use_pool(app, sys.argv[sys.argv.index("worker") + 1:], dict(os.environ))

if "flower" in sys.argv[1:]:  # `celery -A worker.app flower`: auth required, loopback by default
    from worker.flower import guard_flower

    guard_flower()
