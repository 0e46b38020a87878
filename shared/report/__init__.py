"""The comparison report (design §9), one job per module: `data` reads SQL, `decision` owns the
go/no-go rule, `warnings` and `drilldown` add what a reader must check, `build` assembles
them, `document` + `markdown`/`html`/`charts` render, `files` writes, `store` keeps the
content in SQL. Built from SQL rows only, so it can be rebuilt at any time."""

from __future__ import annotations

from pathlib import Path

from shared.config import get_settings
from shared.db import session_scope
from shared.files import writable_folder
from shared.report import store
from shared.report.build import build_report_data
from shared.report.data import UnknownRunError
from shared.report.decision import GO, INCONCLUSIVE, NO_GO
from shared.report.files import LATEST_REPORT_NAME, PublishedReport, render, write_files, write_report
from shared.report.html import render_html
from shared.report.markdown import render_markdown

__all__ = [
    "GO", "INCONCLUSIVE", "LATEST_REPORT_NAME", "NO_GO", "PublishedReport", "UnknownRunError",
    "build_report_data", "fetch_report", "generate_report", "render_html", "render_markdown", "write_report",
]


def generate_report(
    run_id: str, *, database_url: str | None = None, reports_dir: str | Path | None = None, partial: bool = False,
) -> PublishedReport:
    """Build from SQL, store the content in SQL, write the files; the Run row is left to the
    caller to update. A reports folder that cannot be written is said before anything is stored."""
    reports_dir = reports_dir if reports_dir is not None else get_settings().reports_dir
    writable_folder(Path(reports_dir))
    with session_scope(database_url) as session:
        rendered = render(build_report_data(session, run_id, partial=partial))
        store.save(session, rendered)
    return PublishedReport(rendered.data, write_files(rendered, reports_dir))


def fetch_report(
    run_id: str, *, database_url: str | None = None, reports_dir: str | Path | None = None,
) -> PublishedReport | None:
    """The report as last stored in SQL, written into this host's reports folder (None if no
    report was built yet)."""
    with session_scope(database_url) as session:
        rendered = store.load(session, run_id)
    if rendered is None:
        return None
    paths = write_files(rendered, reports_dir if reports_dir is not None else get_settings().reports_dir)
    return PublishedReport(rendered.data, paths)
