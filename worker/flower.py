"""`python -m worker.flower [Flower's options]`: Flower for this app (= `celery -A worker.app
flower ...`) with its Prometheus `/metrics` behind the same authentication as the rest of it.

Flower exempts `/metrics` and `/healthcheck` from its basic auth on purpose (its docs: "The
following endpoints are exempt from authentication"), so anyone who reaches Flower's port could
read every task name, worker name and queue length. This launcher wraps that one handler: a
scrape needs the FLOWER_BASIC_AUTH credentials like the UI does (Prometheus sends them with
`basic_auth`). `/healthcheck` stays open: it answers "OK" and nothing else."""

from __future__ import annotations

import sys


def guard_metrics() -> None:
    """Make Flower's /metrics ask for the credentials its other pages ask for."""
    from flower.views.monitor import Metrics
    from tornado.web import HTTPError

    open_get = Metrics.get
    if getattr(open_get, "guarded", False):
        return

    async def get(self):  # noqa: ANN001, ANN202 - Tornado's handler signature
        if not self.current_user:  # with basic auth, a missing or wrong password raises 401 here
            raise HTTPError(401)
        return await open_get(self)

    get.guarded = True
    Metrics.get = get


def main(argv: list[str] | None = None) -> None:
    try:
        guard_metrics()
    except ImportError:
        print("flower needs the monitor extra: pip install 'genesis-bench[monitor]'", file=sys.stderr)
        raise SystemExit(2) from None
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "worker.app", "flower", *(sys.argv[1:] if argv is None else argv)]
    raise SystemExit(celery_main())


if __name__ == "__main__":
    main()
