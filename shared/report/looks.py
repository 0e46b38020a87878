"""A sequential run's verdicts judged at each look (issue #28, design §13), with the report's
own decision code: used by the look step (worker/looks.py) to decide what to release, and by
the report (shared.report.build) for the verdicts it shows and the SequentialRun it carries.
The arithmetic that needs no report code (task order, slices, information fractions) is
shared.looks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from shared.config.tables import DecisionConfig
from shared.epochs import task_means
from shared.looks import METHOD, UNRELEASED, fraction_at, settled
from shared.models import JobStatus
from shared.report import decision as rule_
from shared.report.data import RunFacts
from shared.report.sequential_types import LookPoint, SequentialRun, VerdictPath
from shared.sequential import FUTILITY, go_within_reach, look_alpha_each


@dataclass
class Judged:
    """One verdict (a candidate of an agent, or pooled) across the looks it was judged at."""

    agent: str
    candidate: str
    baseline: str
    planned: int
    share: float  # its share of the run's error (shared.report.decision.error_shares)
    points: list[LookPoint] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # compare()'s row at each point
    stopped_at: int | None = None  # the look it settled at (GO or NO-GO)
    futile_at: int | None = None  # the look its agent stopped at for futility (the verdict stays open)

    @property
    def verdict(self) -> str:
        return self.rows[-1]["decision"] if self.rows else rule_.INCONCLUSIVE


def _released(jobs: list[Any], look: int) -> list[Any]:
    return [j for j in jobs if j.look is not None and j.look <= look and j.status not in UNRELEASED]


def _specs(facts: RunFacts) -> list[tuple[str, str, str, list[Any], list[Any]]]:
    """(agent or POOLED, candidate, baseline, candidate jobs, baseline jobs), in the order of
    shared.report.decision.comparisons."""
    specs = []
    for candidate, baseline in rule_.candidate_pairs(facts):
        pooled_c: list[Any] = []
        pooled_b: list[Any] = []
        for agent in facts.agents:
            cand = facts.by_pair.get((agent, candidate), [])
            if not cand:
                continue
            base = facts.by_pair.get((agent, baseline), [])
            specs.append((agent, candidate, baseline, cand, base))
            pooled_c += cand
            pooled_b += base
        if pooled_c:
            specs.append((rule_.POOLED, candidate, baseline, pooled_c, pooled_b))
    return specs


def _keyed(agent: str, jobs: list[Any], *, errors_count_as_zero: bool) -> dict[Hashable, Any]:
    """Task means keyed as shared.report.decision.comparisons keys them: by task, pooled by (agent, task)."""
    if agent != rule_.POOLED:
        return dict(task_means(jobs, errors_count_as_zero=errors_count_as_zero))
    by_agent: dict[str, list[Any]] = {}
    for job in jobs:
        by_agent.setdefault(job.agent, []).append(job)
    return {(a, task): mean for a, group in by_agent.items()
            for task, mean in task_means(group, errors_count_as_zero=errors_count_as_zero).items()}


def judge_looks(facts: RunFacts, rule: DecisionConfig, upto: int, *, plan: bool = False) -> list[Judged]:
    """Every verdict at looks 1..upto from the run's jobs. `plan`: the last row of each verdict
    carries the power figures (the report's), the others never do (they do not change a verdict)."""
    looks = rule.looks
    specs = _specs(facts)
    pooled = sum(spec[0] == rule_.POOLED for spec in specs)
    per_agent, per_pooled = rule_.error_shares(len(specs) - pooled, pooled, rule.confidence)
    judged = []
    for agent, candidate, baseline, cand_jobs, base_jobs in specs:
        planned = len({(j.agent, j.task_id) for j in cand_jobs})
        path = Judged(agent, candidate, baseline, planned, per_pooled if agent == rule_.POOLED else per_agent)
        last_inputs = None
        for look in range(1, upto + 1):
            if path.stopped_at is not None:
                break
            cand = _keyed(agent, _released(cand_jobs, look), errors_count_as_zero=True)
            base = _keyed(agent, _released(base_jobs, look), errors_count_as_zero=False)
            pairs = len(rule_.pairing(cand, base)["pairs"])
            if pairs <= (path.points[-1].pairs if path.points else 0):
                continue  # nothing new at this look (not released, or all failed): the verdict stands
            fraction = fraction_at(pairs, planned, look, looks)
            if fraction <= (path.fractions[-1] if path.fractions else 0.0):
                continue
            fractions = [*path.fractions, fraction]
            alpha = look_alpha_each(fractions, path.share)
            row = rule_.compare(agent, candidate, baseline, cand, base, rule, alpha_each=alpha, plan=False)
            path.fractions = fractions
            path.rows.append(row)
            path.points.append(_point(look, fraction, row, rule))
            last_inputs = (cand, base, alpha)
            if settled(row["decision"]):
                path.stopped_at = look
        if plan and last_inputs is None:  # never paired: the report keeps its row ("no task paired"), as fixed does
            cand = _keyed(agent, _released(cand_jobs, upto), errors_count_as_zero=True)
            base = _keyed(agent, _released(base_jobs, upto), errors_count_as_zero=False)
            last_inputs = (cand, base, path.share)
            path.rows.append({})
        if plan and last_inputs is not None:
            cand, base, alpha = last_inputs
            row = rule_.compare(agent, candidate, baseline, cand, base, rule, alpha_each=alpha, plan=True)
            row["epochs"] = rule_._epochs(row, cand, base)
            path.rows[-1] = row
        judged.append(path)
    _futility(judged, rule)
    return judged


def _futility(judged: list[Judged], rule: DecisionConfig) -> None:
    """Mark the look each agent stopped at for futility (shared.sequential.go_within_reach, called
    as bench/sequential_sim.py calls it): at a look before the last where the agent's verdict is
    open, every open comparison of it judged at that look has GO out of reach, and every pooled
    verdict is settled by then (the pooled verdicts need its pairs)."""
    pooled = [j for j in judged if j.agent == rule_.POOLED]
    for agent in dict.fromkeys(j.agent for j in judged if j.agent != rule_.POOLED):
        mine = [j for j in judged if j.agent == agent]
        for look in sorted({p.look for j in mine for p in j.points}):
            if look >= rule.looks or settled(rule_.combine([_verdict_at(j, look) for j in mine])):
                break
            if any(not settled(_verdict_at(j, look)) for j in pooled):
                continue
            open_ = [j for j in mine if not settled(_verdict_at(j, look))]
            at = [(j, i) for j in open_ for i, p in enumerate(j.points) if p.look == look]
            if len(at) == len(open_) and not any(
                    go_within_reach(j.rows[i], j.fractions[i], rule.go, j.share, rule.looks) for j, i in at):
                for j in mine:
                    j.futile_at = look
                break


def _verdict_at(path: Judged, look: int) -> str:
    points = [p for p in path.points if p.look <= look]
    return points[-1].verdict if points else rule_.INCONCLUSIVE


def releases(judged: list[Judged], agents: Sequence[str], look: int, looks: int) -> tuple[list[str], list[str]]:
    """(agents that release their next slice, agents that stop) at this look. The release rule the
    statistics were measured with (bench/sequential_sim.py): an agent releases iff its own verdict
    is open and it did not stop for futility (GO within reach, or a pooled verdict still open)."""
    if look >= looks:
        return [], list(agents)
    verdicts = agent_verdicts(judged, agents)
    futile = {j.agent for j in judged if j.futile_at is not None and j.futile_at <= look}
    release = [a for a in agents if not settled(verdicts[a]) and a not in futile]
    return release, [a for a in agents if a not in release]


def _point(look: int, fraction: float, row: dict, rule: DecisionConfig) -> LookPoint:
    low, high = row["ci95_abs"] if row.get("ci95_abs") else (None, None)
    bar = row.get("threshold_abs") or 0.0
    return LookPoint(look=look, fraction=fraction, pairs=row["n"], estimate=row.get("improvement_abs"), low=low,
                     high=high, go_line=bar if rule.go == "bar" else 0.0, no_go_line=bar, verdict=row["decision"])


def agent_verdicts(judged: list[Judged], agents: Sequence[str]) -> dict[str, str]:
    """Each agent's verdict as its comparisons stand (several candidates: GO if any is)."""
    return {agent: rule_.combine([j.verdict for j in judged if j.agent == agent]) for agent in agents}


def reason(path: Judged, looks: int, current: int) -> str:
    """One line: why the verdict's path ended where it did."""
    if path.stopped_at is not None:
        point = path.points[-1]
        if path.verdict == rule_.GO:
            line = "the bar" if point.go_line else "0"
            return f"GO at look {path.stopped_at} (lower end {_pp(point.low)} pp above {line})"
        return f"NO-GO at look {path.stopped_at} (upper end {_pp(point.high)} pp below the bar {_pp(point.no_go_line)} pp)"
    if path.futile_at is not None:
        return (f"stopped at look {path.futile_at}: GO out of reach (chance of GO by the last look "
                f"under {FUTILITY:.0%})")
    if not path.points:
        return "nothing paired yet"
    if current >= looks:
        return f"tasks ran out at look {looks} (open at the last look)"
    return f"open at look {path.points[-1].look} (the run did not reach look {looks})"


def _pp(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def sequential_run(facts: RunFacts, rule: DecisionConfig, judged: list[Judged]) -> SequentialRun:
    """The design's side of the report: each verdict's path, where it stopped, and what stopping
    saved (not-needed calls at their backend's mean cost per paid call in this run)."""
    current = facts.run.look or 1
    paths = tuple(VerdictPath(comparison=j.agent, candidate=j.candidate, baseline=j.baseline,
                              bar=j.points[-1].no_go_line if j.points else 0.0, points=tuple(j.points),
                              stopped_at=j.stopped_at, reason=reason(j, rule.looks, current)) for j in judged)
    paid = [j for j in facts.jobs if j.status in (JobStatus.ok, JobStatus.error) and j.reused_from_job_id is None]
    mean_cost: dict[str, float] = {}
    for backend in {j.backend for j in paid}:
        costs = [j.cost_usd for j in paid if j.backend == backend and j.cost_usd]
        mean_cost[backend] = sum(costs) / len(costs) if costs else 0.0
    not_needed = [j for j in facts.jobs if j.status == JobStatus.not_needed]
    return SequentialRun(
        looks=rule.looks, seed=rule.seed, method=METHOD, current_look=current, paths=paths,
        paid_calls=facts.answers.calls, planned_calls=len(facts.jobs), paid_usd=sum(j.cost_usd or 0.0 for j in facts.jobs),
        saved_usd=sum(mean_cost.get(j.backend, 0.0) for j in not_needed), not_needed_jobs=len(not_needed),
        judge_calls=sum(spend.calls for spend in facts.judge.values()),
    )
