"""A sequential run's part of the report (issue #28), as document blocks (shared.report.document):
what was paid against the fixed design, where and why each verdict stopped, and per verdict the
design's repeated interval at every look (a chart in report.html, a table in markdown).

The report's data holds the run under "sequential": a SequentialRun as the build gives it, or
the plain dict the JSON copy holds (`sequential_json`); `as_sequential_run` reads either, so a
report renders the same from either. Fixed runs hold None, and get no block from here."""

from __future__ import annotations

from dataclasses import asdict, fields

from shared.report import format as fmt
from shared.report.decision import POOLED
from shared.report.sequential_types import LookPoint, SequentialRun, VerdictPath

LOOKS_TITLE = "Looks: where each verdict stopped"


def as_sequential_run(value: SequentialRun | dict | None) -> SequentialRun | None:
    """The run from the report's data: the dataclass itself, or its JSON dict."""
    if value is None or isinstance(value, SequentialRun):
        return value
    paths = tuple(
        VerdictPath(**{**path, "points": tuple(LookPoint(**_known(LookPoint, point)) for point in path["points"])})
        for path in (_known(VerdictPath, p) for p in value["paths"]))
    return SequentialRun(**{**_known(SequentialRun, value), "paths": paths})


def _known(cls: type, values: dict) -> dict:
    """The keys the dataclass has (a report stored by a later version may carry more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def sequential_json(value: SequentialRun | dict | None) -> dict | None:
    """What report.json (and the SQL copy) holds under "sequential"."""
    run = as_sequential_run(value)
    return None if run is None else asdict(run)


def who(path: VerdictPath) -> str:
    return "all agents pooled" if path.comparison == POOLED else path.comparison


def path_title(path: VerdictPath) -> str:
    return f"{who(path)} · {path.candidate} vs {path.baseline}"


def stop_line(path: VerdictPath) -> str:
    """'qa: stopped at look 2: GO at look 2 (...)', or where the tasks ran out first."""
    if path.stopped_at is not None:
        return f"{who(path)}: stopped at look {path.stopped_at}: {path.reason}"
    last = path.points[-1].look if path.points else 0
    if path.reason.startswith("stopped at look"):  # a futility stop says where itself
        return f"{who(path)}: not settled, {path.reason}"
    return f"{who(path)}: not settled at look {last}: {path.reason}"


def savings_line(run: SequentialRun) -> str:
    return (f"This run paid {run.paid_calls:,} of {run.planned_calls:,} planned calls (saved "
            f"{fmt.usd(run.saved_usd)} against the fixed design): {fmt.usd(run.paid_usd)} paid, "
            f"{run.not_needed_jobs:,} job(s) not needed, never sent. Calls are the ledger's for the answers "
            f"(a call billed or of unknown outcome counts, one refused before sending does not)"
            + (f"; {run.judge_calls:,} judge call(s) beside them." if run.judge_calls else "."))


def look_table(path: VerdictPath) -> tuple:
    """The compact table of one verdict: one row per look it was judged at."""
    return (
        "table",
        ["Look", "Pairs", "Fraction", "Estimate", "Repeated interval", "GO if lower end above",
         "NO-GO if upper end below", "Verdict"],
        [[str(p.look), f"{p.pairs:,}", f"{p.fraction:.0%}", fmt.pp(p.estimate),
          fmt.ci(None if p.low is None or p.high is None else [p.low, p.high]), fmt.pp(p.go_line),
          fmt.pp(p.no_go_line), p.verdict + (" (stop)" if p.look == path.stopped_at else "")]
         for p in path.points],
        "rrrrrrrl",
    )


def sequential_section(run: SequentialRun) -> list[tuple]:
    """The blocks a sequential run adds under the verdicts: the design in one line, what it
    paid and saved, each verdict's stop, then one ("looks", path) block per verdict (a chart
    and its table in HTML, the table in markdown)."""
    return [
        ("h3", LOOKS_TITLE),
        ("p", f"Sequential design: {run.method}; at most {run.looks} looks, each agent's tasks in a seeded "
              f"random order (seed {run.seed}), the latest look released is look {run.current_look}. At each look "
              "every verdict is judged on the design's repeated interval, which stays valid however many looks "
              "were taken; a verdict stops at the first look whose interval clears a boundary, and its agent "
              "is sent no more tasks."),
        ("p", savings_line(run)),
        ("list", [stop_line(path) for path in run.paths]),
        *(("looks", path) for path in run.paths),
    ]
