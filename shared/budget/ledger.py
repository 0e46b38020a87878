"""The whole ledger as rows, in the order written (`producer budget export`): read in chunks of
ids, each in its own short transaction, so a ledger of any size streams in constant memory and
no read holds the database for the length of an export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlmodel import col, select

from shared.db import session_scope
from shared.models import CostEntry, iso

LEDGER_COLUMNS = ("id", "at", "run_id", "job_id", "agent", "backend", "model", "operation", "input_tokens",
                  "output_tokens", "reasoning_tokens", "cost_usd", "source")  # reasoning: of output_tokens
CHUNK = 1000


def ledger_rows(database_url: str | None = None, *, chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
    """Every CostEntry as a dict of LEDGER_COLUMNS, by id; `at` in ISO 8601 with its UTC offset."""
    columns = [getattr(CostEntry, name) for name in LEDGER_COLUMNS]
    after = 0
    while True:
        with session_scope(database_url) as session:
            rows = session.exec(select(*columns).where(col(CostEntry.id) > after).order_by(col(CostEntry.id))
                                .limit(chunk)).all()
        for row in rows:
            entry = dict(zip(LEDGER_COLUMNS, row))
            entry["at"] = iso(entry["at"])
            yield entry
        if len(rows) < chunk:
            return
        after = rows[-1][0]
