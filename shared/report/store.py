"""The report's content in SQL (table run_report), so whichever host built it, the producer's
host can write it into its own reports folder."""

from __future__ import annotations

import json

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from shared.models import RunReport, utcnow
from shared.report.files import RenderedReport

_UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def save(session: Session, report: RenderedReport) -> None:
    """One row per run, replaced by each rebuild (one statement: concurrent builders never
    collide on the key)."""
    values = {
        "run_id": report.run_id,
        "built_at": utcnow(),
        "partial": bool(report.data.get("partial")),
        "overall": report.data["decision"]["overall"],
        "data_json": report.json_text,
        "markdown": report.markdown,
        "html": report.html,
    }
    insert = _UPSERTS[session.get_bind().dialect.name](RunReport).values(**values)
    session.execute(insert.on_conflict_do_update(
        index_elements=[RunReport.run_id], set_={k: v for k, v in values.items() if k != "run_id"}))


def load(session: Session, run_id: str) -> RenderedReport | None:
    row = session.get(RunReport, run_id)
    if row is None:
        return None
    return RenderedReport(json.loads(row.data_json), row.data_json, row.markdown, row.html)
