"""Rendering once and writing reports/<run_id>/report.{md,json,html} plus the latest-run copy,
each atomically (two builders of the same run may race)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.files import replacing, writable_folder
from shared.report.html import render_html
from shared.report.markdown import render_markdown
from shared.report.sequential_section import sequential_json

LATEST_REPORT_NAME = "finetuning_quality_report.md"
_MARKER = re.compile(r"run_id=(\S+) created_at=(\S+) -->")


@dataclass(frozen=True)
class RenderedReport:
    """A report's data and its three texts: what SQL stores and the files hold."""

    data: dict
    json_text: str
    markdown: str
    html: str

    @property
    def run_id(self) -> str:
        return self.data["run_id"]


@dataclass(frozen=True)
class PublishedReport:
    """What building (or fetching) a report gives its caller: the data and where the files are."""

    data: dict
    paths: dict[str, Path]

    @property
    def decision(self) -> dict:
        return self.data["decision"]


def render(data: dict) -> RenderedReport:
    """A sequential run's SequentialRun becomes the plain dict report.json holds, before anything
    reads the data, so a rebuilt and a stored report say the same."""
    if data.get("sequential") is not None:
        data = {**data, "sequential": sequential_json(data["sequential"])}
    return RenderedReport(data, json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                          render_markdown(data), render_html(data))


def write_files(report: RenderedReport, reports_dir: str | Path) -> dict[str, Path]:
    """Rebuilding an older run's report leaves the latest copy to the newer run."""
    root = Path(reports_dir)
    run_dir = root / report.run_id
    writable_folder(run_dir)
    paths = {
        "md": run_dir / "report.md",
        "json": run_dir / "report.json",
        "html": run_dir / "report.html",
        "latest": root / LATEST_REPORT_NAME,
    }
    _atomic_write(paths["md"], report.markdown)
    _atomic_write(paths["json"], report.json_text)
    _atomic_write(paths["html"], report.html)
    if not _newer_run_holds(paths["latest"], report.data):
        _atomic_write(paths["latest"], report.markdown)
    return paths


def write_report(data: dict, reports_dir: str | Path) -> dict[str, Path]:
    return write_files(render(data), reports_dir)


def _newer_run_holds(latest: Path, data: dict) -> bool:
    try:
        with latest.open(encoding="utf-8") as handle:
            marker = _MARKER.search(handle.readline())
    except FileNotFoundError:
        return False
    if marker is None or marker.group(1) == data["run_id"]:
        return False
    try:
        return datetime.fromisoformat(marker.group(2)) > datetime.fromisoformat(data["created_at"])
    except ValueError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    with replacing(path) as handle:
        handle.write(text)
