"""The tasks where candidate and baseline disagree, with the prompt's start and both answers:
where a reader checks what the numbers mean."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from shared.report.data import RunFacts, load_outputs
from shared.report.decision import POOLED
from shared.suite import SuiteError, load_suite, run_suite_folder

PROMPT_CHARS = 160
ANSWER_CHARS = 400


def _prompts(suite_reference: str) -> dict[tuple[str, str], str]:
    """(agent, task id) -> prompt; empty when the run's suite is no longer readable here."""
    try:
        suite = load_suite(run_suite_folder(suite_reference))
    except (SuiteError, OSError):
        return {}
    return {(t.agent, t.id): t.prompt for t in suite.tasks}


def _first_epochs(jobs: list[Any]) -> dict[str, Any]:
    """Each task's first epoch (submit --epochs): whose answers are shown beside the task means."""
    first: dict[str, Any] = {}
    for job in sorted(jobs, key=lambda j: getattr(j, "epoch", 1) or 1):
        first.setdefault(job.task_id, job)
    return first


def disagreements(session: Session, facts: RunFacts, comparisons: list[dict]) -> list[dict[str, Any]]:
    """Per agent comparison, every paired task whose two scores differ: the candidate worse
    first (what a deploy would lose), then better."""
    found = []
    for c in comparisons:
        if c["agent"] == POOLED:
            continue
        cand = _first_epochs(facts.by_pair.get((c["agent"], c["candidate"]), []))
        base = _first_epochs(facts.by_pair.get((c["agent"], c["baseline"]), []))
        for pair in c["pairs"]:
            delta = pair["candidate_score"] - pair["baseline_score"]
            if abs(delta) > 1e-12:
                task = pair["task_id"]
                found.append((c, cand[task], base[task], delta, pair))
    if not found:
        return []
    outputs = load_outputs(session, [j.id for _, cj, bj, _, _ in found for j in (cj, bj)])
    prompts = _prompts(facts.run.suite)
    rows = []
    for c, cj, bj, delta, pair in sorted(found, key=lambda f: (f[3] > 0, f[0]["agent"], f[1].task_id)):
        prompt = prompts.get((c["agent"], cj.task_id))
        rows.append({
            "agent": c["agent"], "candidate": c["candidate"], "baseline": c["baseline"],
            "task_id": cj.task_id, "difficulty": cj.difficulty,
            "kind": "candidate better" if delta > 0 else "candidate worse",
            # As the decision counted them: a candidate error is a 0.
            "candidate_score": pair["candidate_score"], "baseline_score": pair["baseline_score"],
            "prompt_start": prompt[:PROMPT_CHARS] if prompt else None,
            "candidate_answer": (outputs.get(cj.id) or "")[:ANSWER_CHARS],
            "baseline_answer": (outputs.get(bj.id) or "")[:ANSWER_CHARS],
        })
    return rows
