"""A run's lifecycle beyond its jobs: its final status and its published report. Used by the
chord callback and by the producer (`report`, `cancel`), so both say the same thing."""

from __future__ import annotations

from pathlib import Path

from shared.config import get_settings
from shared.db import session_scope
from shared.lifecycle import job_counts, settle_run_status  # noqa: F401  (job_counts: for callers of this module)
from shared.models import Run, RunStatus
from shared.report import generate_report


def publish_report(run_id: str, *, partial: bool = False) -> dict[str, Path]:
    """(Re)build the report from SQL and record where it is."""
    status = settle_run_status(run_id)
    # An earlier chord of a resumed run can finish while the newer one still works: partial.
    partial = partial or status in (RunStatus.queued, RunStatus.running)
    paths = generate_report(run_id, reports_dir=get_settings().reports_dir, partial=partial)
    with session_scope() as session:
        run = session.get(Run, run_id)
        run.report_path = str(paths["md"])
    return paths
