"""The budget events' webhook: a best-effort POST that never stalls or fails a worker."""

from __future__ import annotations

import json
import logging
import urllib.request

from shared.models import BudgetEvent

log = logging.getLogger("genesis.budget")

WEBHOOK_TIMEOUT_S = 3.0
# http and https only, and no redirect followed (a 3xx is a failure, logged): a redirect turned
# the POST into a GET to wherever the answer pointed, an internal address included. No file://,
# ftp:// or data: handler either, whatever URL reaches here.
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                 urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                 urllib.request.HTTPErrorProcessor()):
    _OPENER.add_handler(_handler)


def post_webhook(url: str, event: BudgetEvent) -> None:
    """Short timeout; a failure is logged without the URL (it may carry a token)."""
    body = json.dumps({
        "kind": event.kind, "level": event.level, "spent_usd": event.spent_usd,
        "limit_usd": event.limit_usd, "run_id": event.run_id, "message": event.message,
        "at": event.at.isoformat(),
    }).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _OPENER.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except Exception as exc:  # noqa: BLE001 — any failure is logged, never raised
        log.warning("budget webhook failed (URL not logged: it may hold a token): %s", exc)
