"""Flower for this app (`celery -A worker.app flower ...`): it refuses to start without auth and
binds 127.0.0.1 unless told otherwise, and its Prometheus `/metrics` is behind the same
authentication as the rest of it. worker/app.py calls `guard_flower` when the process it is
loaded into is Flower's.

Flower can shut workers down and send tasks, and on its own it starts unauthenticated on every
interface. Here it needs FLOWER_BASIC_AUTH (or --basic-auth, or --auth for OAuth), or the
operator's explicit GENESIS_FLOWER_UNAUTHENTICATED=1; with no --address it listens on 127.0.0.1
(--address=0.0.0.0 to publish it, as the compose file does inside its container).

Flower exempts `/metrics` and `/healthcheck` from its basic auth on purpose (its docs: "The
following endpoints are exempt from authentication"), so anyone who reaches Flower's port could
read every task name, worker name and queue length. This wraps that one handler: a scrape needs
the FLOWER_BASIC_AUTH credentials like the UI does (Prometheus sends them with `basic_auth`).
`/healthcheck` stays open: it answers "OK" and nothing else."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

UNAUTHENTICATED = "GENESIS_FLOWER_UNAUTHENTICATED"  # "1": the operator accepts Flower without auth


def refusal(options: Any, environ: Mapping[str, str]) -> str | None:
    """Why Flower must not start with these (tornado) options, or None."""
    # FLOWER_BASIC_AUTH='' parses as [''], which is no credentials at all
    if any(options.basic_auth or ()) or options.auth or environ.get(UNAUTHENTICATED) == "1":
        return None
    return ("Flower can shut workers down and send tasks, so it needs auth: set FLOWER_BASIC_AUTH=user:password "
            f"(or --basic-auth, or --auth for OAuth), or {UNAUTHENTICATED}=1 to run it without")


def guard_flower() -> None:
    """Auth required, 127.0.0.1 by default, /metrics behind the auth (no-op without Flower)."""
    try:
        from flower.app import Flower
    except ImportError:  # no monitor extra: there is no Flower to guard
        return
    guard_metrics()
    open_start = Flower.start_http_server
    if getattr(open_start, "guarded", False):
        return

    def start_http_server(self):  # noqa: ANN001, ANN202 - Flower's signature
        if (why := refusal(self.options, os.environ)) is not None:
            print(f"error: {why}", file=sys.stderr)
            raise SystemExit(2)
        if not self.options.unix_socket and not self.options.address:
            self.options.address = "127.0.0.1"  # Flower's default, '', is every interface
        return open_start(self)

    start_http_server.guarded = True
    Flower.start_http_server = start_http_server


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
