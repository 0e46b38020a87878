"""Hand-made sequential runs for the report's renderers (issue #28): the values a report shows,
built directly (no SQL, no worker), with the three ways a verdict ends: GO at look 2, NO-GO at
look 1, and not settled when the tasks ran out at the last look."""

from __future__ import annotations

from shared.report.decision import POOLED
from shared.report.sequential_types import LookPoint, SequentialRun, VerdictPath

BAR = 0.06
HOSTILE_AGENT = '<script>alert("qa")</script>&amp;"legal\''


def point(look: int, looks: int, pairs_per_look: int, estimate: float, half_width: float, verdict: str,
          *, go_line: float = 0.0) -> LookPoint:
    return LookPoint(look=look, fraction=look / looks, pairs=look * pairs_per_look, estimate=estimate,
                     low=estimate - half_width, high=estimate + half_width, go_line=go_line, no_go_line=BAR,
                     verdict=verdict)


def go_at_look_2(agent: str = "qa") -> VerdictPath:
    return VerdictPath(agent, "mistral-ft", "mistral-base", BAR,
                       (point(1, 5, 80, 0.20, 0.24, "INCONCLUSIVE"), point(2, 5, 80, 0.19, 0.15, "GO")),
                       2, "GO at look 2 (lower end +4.0 pp above 0)")


def no_go_at_look_1(agent: str = "legal") -> VerdictPath:
    return VerdictPath(agent, "mistral-ft", "mistral-base", BAR,
                       (point(1, 5, 80, -0.12, 0.15, "NO-GO"),),
                       1, "NO-GO at look 1 (upper end +3.0 pp below the bar, +6.0 pp)")


def to_the_end(agent: str = POOLED) -> VerdictPath:
    return VerdictPath(agent, "mistral-ft", "mistral-base", BAR,
                       tuple(point(k, 5, 160, 0.05, 0.30 / k ** 0.5, "INCONCLUSIVE") for k in range(1, 6)),
                       None, "tasks ran out at look 5")


def sequential_run(*paths: VerdictPath) -> SequentialRun:
    return SequentialRun(looks=5, seed=7, method="Lan-DeMets, O'Brien-Fleming-like spending", current_look=5,
                         paths=paths or (go_at_look_2(), no_go_at_look_1(), to_the_end()),
                         paid_calls=1_120, planned_calls=2_000, paid_usd=1.12, saved_usd=0.88, not_needed_jobs=880)
