"""A run's published report: built from SQL when the run's last job finishes (worker/completion.py),
by the recovery sweep, and by the producer (`report`, `cancel`), so all say the same thing."""

from __future__ import annotations

from shared.config import get_settings
from shared.db import session_scope
from shared.lifecycle import settle_run_status
from shared.models import Run, RunStatus
from shared.report import PublishedReport, generate_report


def publish_report(run_id: str, *, partial: bool = False) -> PublishedReport:
    """(Re)build the report from SQL, store its content in SQL, write this host's files and
    record where they are. Returns the data, so callers never re-read report.json."""
    status = settle_run_status(run_id)
    # A report asked for while a resumed run still works (an earlier completion): partial.
    partial = partial or status in (RunStatus.queued, RunStatus.running)
    published = generate_report(run_id, reports_dir=get_settings().reports_dir, partial=partial)
    with session_scope() as session:
        run = session.get(Run, run_id)
        run.report_path = str(published.paths["md"])
        run.simulated = bool(published.data["simulated"])  # any answer was (what `producer runs` shows)
    return published
