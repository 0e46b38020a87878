"""What a sequential run's report shows (issue #28), as plain values: built from SQL by the look
step's own arithmetic, drawn by the report's renderers. Kept apart so the two never import
each other. Differences and bars are in the units of the comparison rows' `ci`
(shared.report.decision): candidate minus baseline accuracy, 0.05 = 5 points."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LookPoint:
    """One verdict at one look."""

    look: int  # 1..looks
    fraction: float  # information reached: paired tasks so far / paired tasks planned (1.0 at the last)
    pairs: int
    estimate: float | None  # the measured difference
    low: float | None  # the design's repeated interval at this look (None: nothing paired yet)
    high: float | None
    go_line: float  # the lower end must clear this for GO (0, or the bar under go = "bar")
    no_go_line: float  # the upper end must fall below this for NO-GO (the bar)
    verdict: str  # GO / NO-GO / INCONCLUSIVE as judged at this look


@dataclass(frozen=True)
class VerdictPath:
    """One verdict (an agent's, or the pooled one) across the looks it was judged at."""

    comparison: str  # the agent, or shared.report.decision.POOLED
    candidate: str  # backend names
    baseline: str
    bar: float  # the improvement required at the last look, in ci units
    points: tuple[LookPoint, ...]
    stopped_at: int | None  # the look it settled at; None: unsettled when the tasks ran out
    reason: str  # one line: "GO at look 2 (lower end +3.1 pp above 0)", "tasks ran out at look 5", ...


@dataclass(frozen=True)
class SequentialRun:
    """The design's side of a report: where each verdict stopped, and what stopping saved."""

    looks: int  # the largest number of looks
    seed: int  # the seed of each agent's task order
    method: str  # one line naming the boundaries, e.g. "Lan-DeMets, O'Brien-Fleming-like spending"
    current_look: int  # the latest look released
    paths: tuple[VerdictPath, ...]
    paid_calls: int  # the ledger's calls for the run's answers (an errored job's billed or unknown-outcome call counts)
    planned_calls: int  # answer calls the fixed design would have made over the same tasks (one per job)
    paid_usd: float
    saved_usd: float  # the not-needed calls at their backend's mean cost per call in this run
    not_needed_jobs: int
    judge_calls: int = 0  # the ledger's judge calls for the run, beside the answers' (not planned above)
