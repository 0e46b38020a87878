"""Lifting a halt gives each worker back only the provider queues it had."""

from __future__ import annotations

from tests.support.waiting import wait_for


def consumed(app, hostname: str) -> set[str]:
    replies = app.control.inspect(destination=[hostname], timeout=1).active_queues() or {}
    return {q["name"] for q in replies.get(hostname, [])}


def test_restore_gives_back_only_the_queues_each_worker_had(start_worker):
    from worker.app import app
    from shared.messaging import restore_provider_consumers, stop_provider_consumers

    everything = start_worker("all", concurrency=2)
    reports_only = start_worker("rep", concurrency=1, queues="reports")
    everything_queues = {"openai", "anthropic", "mistral", "reports", "batches"}
    assert consumed(app, everything.hostname) == everything_queues

    stop_provider_consumers(app)  # `batches` keeps running: a halt's cancels and results are read there
    wait_for(lambda: consumed(app, everything.hostname) == {"reports", "batches"}, timeout=10, what="the halt")
    restore_provider_consumers(app)
    wait_for(lambda: consumed(app, everything.hostname) == everything_queues, timeout=10, what="the restore")
    assert consumed(app, reports_only.hostname) == {"reports"}
