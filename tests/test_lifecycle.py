"""Job transitions from a claim that no longer holds its job (design §12): A claimed the job, the
sweep judged A dead and handed the job back, B claimed it. A's late failure, hand-back or halt
must change nothing on B's live run of it. The real shared.lifecycle functions, on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.env import ROOT, SCRATCH_REDIS_URL, use_config
from tests.support.runs import one_job_run


@pytest.fixture
def one_queued_job(monkeypatch, tmp_path) -> int:
    use_config(monkeypatch, tmp_path, (ROOT / "config" / "genesis.toml").read_text(), SCRATCH_REDIS_URL)
    return one_job_run(status="queued")


def stored(job_id: int):
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return session.get(Job, job_id)


def a_handed_over(job_id: int, *, b_name: str = "B@host"):
    """A claims, the sweep hands A's job back (A judged dead), B claims: (A's claim, B's)."""
    from shared import lifecycle
    from shared.models import utcnow

    now = utcnow()
    taken, by_a = lifecycle.claim(job_id, "A@host", now, 60)
    assert taken == lifecycle.Claim.TAKEN
    assert lifecycle.requeue_lost(now, 60, {"A@host"}, set()) == [("r1", job_id, "openai", "openai")]
    taken, by_b = lifecycle.claim(job_id, b_name, now + timedelta(seconds=1), 60)
    assert taken == lifecycle.Claim.TAKEN
    return by_a, by_b


@pytest.mark.parametrize("stale_transition", ["finish_error", "requeue", "finish_halted"])
def test_a_transition_from_a_claim_that_lost_its_job_changes_nothing(one_queued_job, stale_transition):
    from shared import lifecycle

    by_a, by_b = a_handed_over(one_queued_job)
    before = stored(one_queued_job)
    stale = {"finish_error": lambda: lifecycle.finish_error(by_a, "ProviderError", "A's late failure"),
             "requeue": lambda: lifecycle.requeue(by_a, error_type="timeout", error_message="A hands back"),
             "finish_halted": lambda: lifecycle.finish_halted(by_a, "A's refused reservation")}[stale_transition]

    assert stale() is False
    after = stored(one_queued_job)
    assert (after.status, after.worker, after.attempts, after.error_type, after.finished_at) == \
        ("running", "B@host", 2, None, None) == (before.status, before.worker, before.attempts, None, None)
    assert lifecycle.renew_lease(by_a, after.started_at) is False  # and A makes no further call
    assert lifecycle.renew_lease(by_b, after.started_at) is True
    assert lifecycle.finish_error(by_b, "ProviderError", "B's own failure") is True  # the holder still can
    assert stored(one_queued_job).status == "error"


def test_the_same_runner_name_on_a_later_attempt_is_another_holder(one_queued_job):
    """A node name lives on across a restart (`-n`, a container's hostname): the attempt tells
    the claims apart."""
    from shared import lifecycle

    by_a, again = a_handed_over(one_queued_job, b_name="A@host")
    assert lifecycle.requeue(by_a, uncount=True) is False
    assert (stored(one_queued_job).status, stored(one_queued_job).attempts) == ("running", 2)
    assert lifecycle.requeue(again, uncount=True) is True
    assert (stored(one_queued_job).status, stored(one_queued_job).attempts) == ("queued", 1)


def an_answer(output: str):
    from shared.payments import PaidResult

    return PaidResult(output=output, score=1.0, detail="exact", latency_ms=9.0, input_tokens=30, output_tokens=4,
                      cost_usd=0.0001)


def ledger():
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        return [(e.job_id, e.call_id, e.cost_usd) for e in session.exec(select(CostEntry).order_by(CostEntry.id))]


def test_a_paid_answer_that_outlived_its_claim_is_kept_by_a_job_not_yet_answered(one_queued_job):
    """A was judged dead while alive and its job handed back: its answer, paid for, is the job's."""
    from shared import lifecycle
    from shared.models import utcnow

    now = utcnow()
    _, by_a = lifecycle.claim(one_queued_job, "A@host", now, 60)
    lifecycle.requeue_lost(now, 60, {"A@host"}, set())
    assert lifecycle.finish_ok(by_a, an_answer("A's"), call_id="a1")
    job = stored(one_queued_job)
    assert (job.status, job.output, job.attempts) == ("ok", "A's", 1)
    assert ledger() == [(one_queued_job, "a1", 0.0001)]
    assert lifecycle.claim(one_queued_job, "B@host", now, 60)[0] == lifecycle.Claim.DONE  # not paid again


def test_the_first_answer_recorded_is_the_jobs_and_a_final_job_is_never_changed(one_queued_job):
    """B answered first: A's late answer is not the job's (its caller ledgers it without a job
    link). Had B failed for good instead, the `error` stands too."""
    from shared import lifecycle

    by_a, by_b = a_handed_over(one_queued_job)
    assert lifecycle.finish_ok(by_b, an_answer("B's"), call_id="b1")
    assert not lifecycle.finish_ok(by_a, an_answer("A's"), call_id="a1")
    assert (stored(one_queued_job).status, stored(one_queued_job).output) == ("ok", "B's")
    assert ledger() == [(one_queued_job, "b1", 0.0001)]


def test_a_job_that_failed_for_good_keeps_its_error(one_queued_job):
    from shared import lifecycle

    by_a, by_b = a_handed_over(one_queued_job)
    assert lifecycle.finish_error(by_b, "ProviderError", "after 5 attempt(s)")
    assert not lifecycle.finish_ok(by_a, an_answer("A's"), call_id="a1")
    assert (stored(one_queued_job).status, stored(one_queued_job).output, ledger()) == ("error", None, [])
