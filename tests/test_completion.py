"""The run's completion step without a chord: the report is requested once, when the last job
of the run is final, and again after a re-enqueue (`resume`). Real Redis and SQLite; the job
transitions are the workers' own functions, called here in the order workers call them."""

from __future__ import annotations

import json

import redis


def test_report_is_requested_once_when_the_last_job_is_final(genesis, redis_url):
    from producer import submit
    from shared.config import get_settings
    from shared import lifecycle as jobs
    from shared.models import utcnow
    from shared.messaging import request_report
    from worker import completion

    settings = get_settings()
    selection = submit.select_work(settings, agents=["qa"], all_agents=False, backends=["openai"], suite=None, limit=3)
    run_id, queued = submit.record_run(settings, selection)
    submit.enqueue(run_id, queued)
    client = redis.Redis.from_url(redis_url)
    assert client.llen("openai") == 3  # one message per job, nothing for the report yet
    assert client.llen("reports") == 0

    *first, last = [job_id for job_id, *_ in queued]
    for job_id in first:
        taken, claimed = jobs.claim(job_id, "test", utcnow(), 300)
        assert taken == jobs.Claim.TAKEN
        jobs.finish_error(claimed, "Boom", "failed for good")
        assert completion.finished_run(job_id) is None  # the last job is still queued
    _, claimed = jobs.claim(last, "test", utcnow(), 300)
    assert completion.finished_run(last) is None  # ... then running
    jobs.finish_error(claimed, "Boom", "failed for good")
    assert completion.finished_run(last) == run_id

    assert request_report(run_id)
    assert not request_report(run_id)  # a duplicate delivery of the last job
    assert client.llen("reports") == 1
    message = json.loads(client.lindex("reports", 0))
    assert message["headers"]["task"] == "genesis.build_report"

    submit.enqueue(run_id, [])  # what `producer resume` does before re-sending jobs
    assert request_report(run_id)
    assert client.llen("reports") == 2


def test_enqueued_messages_are_what_the_worker_runs(genesis, redis_url):
    """The pipelined publish (send_task) carries Celery's own message: task name, the job id as the only
    argument, no result expected."""
    from producer import submit
    from shared.config import get_settings

    settings = get_settings()
    selection = submit.select_work(settings, agents=["qa", "legal"], all_agents=False,
                                   backends=["openai", "mistral-base"], suite=None, limit=2)
    run_id, queued = submit.record_run(settings, selection)
    submit.enqueue(run_id, queued)
    client = redis.Redis.from_url(redis_url)
    sent = {}
    for queue in ("openai", "mistral"):
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            assert message["headers"]["task"] == "genesis.run_job"
            assert message["headers"]["ignore_result"] is True
            assert message["properties"]["delivery_info"]["routing_key"] == queue
            sent[int(message["headers"]["argsrepr"].strip("(,)"))] = queue
    assert sent == {job_id: provider for job_id, provider, _ in queued}
