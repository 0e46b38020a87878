"""A sequential run's look step (issue #28, design §13): sent by the completion step
(worker/completion.py) when the jobs of the run's current look are all final and later looks
still wait; also run by the recovery sweep for a run left in that state, and sent by `producer
resume`. It runs on the `reports` queue (it reads every job of the run and judges, as
build_report does), never in the task_postrun hook.

At look k: every verdict is judged from SQL (shared.report.looks, the report's own decision code); the
agents whose verdict is settled get their waiting jobs `not_needed`, the others' slice k + 1 is
released (`queued`), in one transaction claimed by a conditional UPDATE of the run's look
(shared.lifecycle.looks), and only then published (shared.messaging.publish_jobs: record
first, then enqueue). When no agent is open the run stops: every waiting job is `not_needed` and
the report is requested, once, as for a fixed run. A crash between the release and the publish
leaves queued jobs without messages: the recovery sweep and `producer resume` publish them.
"""

from __future__ import annotations

import logging

from shared import lifecycle
from shared.db import session_scope
from shared.lifecycle.rules import IN_FLIGHT_RUNS
from shared.messaging import ADVANCE_LOOK, publish_jobs, request_report
from shared.models import RunStatus
from worker.base import GenesisTask, genesis_task

log = logging.getLogger("genesis.worker")

MAX_STEPS = 21  # more than the largest number of looks: an empty slice is stepped over at once


@genesis_task(ADVANCE_LOOK, autoretry_for=(Exception,), retry_backoff=2, retry_backoff_max=60, max_retries=8)
def advance_look(self: GenesisTask, run_id: str) -> str:
    return take_look(run_id)


def take_look(run_id: str) -> str:
    """The look step of one run; what it did, in a word (for logs and tests)."""
    for _ in range(MAX_STEPS):
        look, status, busy, halted = lifecycle.look_state(run_id)
        if look is None:
            return "not sequential"
        if status == RunStatus.cancelled:
            return str(status)  # waiting jobs stay waiting, never sent (queued ones stay queued, skipped)
        if busy:
            return "busy"  # a look is still running: its last job asks again
        if status not in IN_FLIGHT_RUNS:  # halted (or completed): waiting jobs stay waiting; resume continues
            if status == RunStatus.halted:
                request_report(run_id)  # the report of what finished, as a fixed run's halt gets
            return str(status)
        if halted or not lifecycle.has_waiting(run_id):
            _report_when_final(run_id)  # nothing left to release (or a halted look): the report, as today
            return "report"
        release, settled = judge(run_id, look)
        if not lifecycle.advance_look(run_id, look, release, settled):
            return "taken"  # another look step advanced it (or the run left flight meanwhile)
        if not release:
            log.info("run %s: every verdict settled at look %d; the rest is not needed", run_id, look)
            _report_when_final(run_id)
            return "stopped"
        queued = lifecycle.queued_jobs(run_id)
        log.info("run %s: look %d released for %s (%d jobs); settled: %s", run_id, look + 1, ", ".join(release),
                 len(queued), ", ".join(settled) or "none")
        if queued:
            publish_jobs(run_id, queued)
            return f"look {look + 1}"
    return "stepped"


def _report_when_final(run_id: str) -> None:
    """The run's report, unless references kept to the end still run: the last of them asks
    for it (worker/completion.py), as a fixed run's last job does."""
    if not lifecycle.unfinished(run_id):
        request_report(run_id)


def judge(run_id: str, look: int) -> tuple[list[str], list[str]]:
    """(agents to release, agents stopped: settled, or stopped for futility) at this look, from SQL."""
    from shared.report import looks as judging
    from shared.report.data import load_facts
    from shared.report.decision import decision_config

    with session_scope() as session:
        facts = load_facts(session, run_id, partial=True)
    rule = decision_config(facts)
    return judging.releases(judging.judge_looks(facts, rule, look), facts.agents, look, rule.looks)
