"""Flower for this app (`celery -A worker.app flower ...`) with its Prometheus `/metrics` behind
the same authentication as the rest of it: worker/app.py calls `guard_metrics` when the process
it is loaded into is Flower's.

Flower exempts `/metrics` and `/healthcheck` from its basic auth on purpose (its docs: "The
following endpoints are exempt from authentication"), so anyone who reaches Flower's port could
read every task name, worker name and queue length. This wraps that one handler: a scrape needs
the FLOWER_BASIC_AUTH credentials like the UI does (Prometheus sends them with `basic_auth`).
`/healthcheck` stays open: it answers "OK" and nothing else."""

from __future__ import annotations


def guard_metrics() -> None:
    """Make Flower's /metrics ask for the credentials its other pages ask for (no-op without Flower)."""
    try:
        from flower.views.monitor import Metrics
        from tornado.web import HTTPError
    except ImportError:  # no monitor extra: there is no Flower to guard
        return

    open_get = Metrics.get
    if getattr(open_get, "guarded", False):
        return

    async def get(self):  # noqa: ANN001, ANN202 - Tornado's handler signature
        if not self.current_user:  # with basic auth, a missing or wrong password raises 401 here
            raise HTTPError(401)
        return await open_get(self)

    get.guarded = True
    Metrics.get = get
