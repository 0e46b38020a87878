"""Batch mode's small parts, fast (no workers): the batch price, grouping jobs into batches in
SQL, reading the providers' result lines, what the report says batch mode saved."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def settings(monkeypatch, tmp_path):
    from shared.config import get_settings
    from shared.db import migrate

    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/units.db")
    monkeypatch.setenv("GENESIS_BACKENDS__OPENAI__MODE", "batch")
    monkeypatch.setenv("GENESIS_BACKENDS__OPENAI__BATCH_MAX_JOBS", "3")
    get_settings.cache_clear()
    migrate()
    yield get_settings()
    get_settings.cache_clear()


def test_a_batch_backend_is_priced_and_reserved_at_its_discount(settings):
    from shared.budget import call_cost, max_output_tokens, task_worst_case, worst_case_cost
    from shared.suite import load_suite
    from shared.tokens import estimate_prompt_tokens

    task = load_suite(settings.suite).tasks_for("qa", 1)[0]
    assert call_cost(settings, "gpt-5-mini", 1000, 1000, batch=True) == pytest.approx(
        0.5 * call_cost(settings, "gpt-5-mini", 1000, 1000))
    realtime = worst_case_cost(settings, "gpt-5-mini", estimate_prompt_tokens(task.prompt, task.system),
                               max_output_tokens(settings, "openai", task.max_tokens))  # the same call, realtime
    assert task_worst_case(settings, task, "openai", "gpt-5-mini") == pytest.approx(0.5 * realtime)
    assert settings.batch_limits("openai") == (3, settings.batch.max_wait_s)  # the backend's own max jobs
    assert settings.is_batch("openai") and not settings.is_batch("mistral-base")


def test_batch_knobs_refuse_nonsense(monkeypatch, settings):
    from shared.config import ConfigError, get_settings, load_settings

    for key, value in (("GENESIS_PRICING__GPT-4O-MINI__BATCH_DISCOUNT", "0"),
                       ("GENESIS_PRICING__GPT-4O-MINI__BATCH_DISCOUNT", "1.5"),
                       ("GENESIS_BACKENDS__OPENAI__MODE", "overnight"),
                       ("GENESIS_BATCH__MAX_WAIT_S", "nan"),
                       ("GENESIS_BATCH__MAX_JOBS", "0")):
        with monkeypatch.context() as patch:
            patch.setenv(key, value)
            get_settings.cache_clear()
            with pytest.raises(ConfigError):
                load_settings()


_made = iter(range(10**6))


def _running_jobs(n: int, model: str = "gpt-5-mini") -> list[int]:
    from shared.db import session_scope
    from shared.models import Job, Run

    with session_scope() as session:
        if session.get(Run, "r1") is None:
            session.add(Run(id="r1", suite="genesis-custom"))
            session.flush()
        jobs = [Job(run_id="r1", agent="qa", task_id=f"t{next(_made)}", backend="openai", provider="openai",
                    model=model, status="running", attempts=1) for _ in range(n)]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def test_jobs_fill_one_open_batch_per_backend_and_model_then_the_next(settings):
    from datetime import datetime, timezone

    from shared import batches

    now = datetime.now(timezone.utc)
    ids = _running_jobs(4)
    other = _running_jobs(1, model="gpt-4o")
    got = [batches.enrol(j, "openai", "openai", "gpt-5-mini", now, 3, 30) for j in ids]
    assert [(e.new, e.full) for e in got] == [(True, False), (False, False), (False, True), (True, False)]
    assert len({e.batch_id for e in got[:3]}) == 1 and got[3].batch_id != got[0].batch_id
    assert batches.enrol(other[0], "openai", "openai", "gpt-4o", now, 3, 30).batch_id not in {e.batch_id for e in got}
    assert [j.id for j in batches.jobs_of(got[0].batch_id)] == ids[:3]

    # a batch being submitted takes no more jobs; without leave to open one, none is opened
    assert batches.take_for_submit(got[3].batch_id, now)
    late = _running_jobs(1)[0]
    assert batches.enrol(late, "openai", "openai", "gpt-5-mini", now, 3, 30, may_open=False) is None
    assert not batches.take_for_submit(got[3].batch_id, now)  # one submitter only

    moved = batches.leave([ids[0]], got[0].batch_id, error_type="BatchErrored", error_message="500: boom")
    assert moved == [("r1", ids[0], "openai", "openai")] and [j.id for j in batches.jobs_of(got[0].batch_id)] == ids[1:3]


def test_jobs_in_a_batch_are_not_stale_however_long_they_wait(settings):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from shared import batches, lifecycle
    from shared.db import get_engine
    from shared.models import Job

    now = datetime.now(timezone.utc)
    batched, alone = _running_jobs(1)[0], _running_jobs(1)[0]
    batches.enrol(batched, "openai", "openai", "gpt-5-mini", now, 3, 30)
    with get_engine().begin() as conn:
        conn.execute(update(Job).values(started_at=now - timedelta(hours=5), worker="dead@host"))
    lost = lifecycle.requeue_lost(now, 60, {"dead@host"}, set())
    assert [job_id for _, job_id, _, _ in lost] == [alone]


def test_result_lines_of_openai_and_mistral_files_are_read_per_request():
    from shared.providers.adapters import SIMULATOR_HEADER
    from shared.providers.batch_api import _chat_result
    from shared.providers.batch_names import OurBatch

    ours = OurBatch("0a1b2c3d4e5f", 7)
    assert ours.job_of(ours.custom_id(42)) == 42 and ours.job_of("someone-else") is None
    assert ours.job_of(OurBatch("0a1b2c3d4e5f", 8).custom_id(42)) is None  # another batch's request: none of ours
    assert ours.job_of(OurBatch("ffff00001111", 7).custom_id(42)) is None  # another deployment's batch 7
    assert ours.job_of("b7-job42") == 42  # sent before deployments had an id (polled by its provider id)
    assert ours.metadata != OurBatch("ffff00001111", 7).metadata
    ok = _chat_result("job-1", {"custom_id": "job-1", "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3}}}}, {SIMULATOR_HEADER: "genesis-bench"})
    assert ok.kind == "succeeded" and ok.response.text == "Paris" and ok.response.input_tokens == 12
    assert ok.response.usage_reported and ok.response.simulated  # the results file came from the simulator
    failed = _chat_result("job-2", {"custom_id": "job-2", "response": {"status_code": 500, "body": {}},
                                    "error": {"code": "server_error", "message": "overloaded"}}, {})
    assert failed.kind == "errored" and failed.error == "500: overloaded"
    no_usage = _chat_result("job-3", {"response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}}}, {})
    assert no_usage.response.text == "ab" and not no_usage.response.usage_reported and not no_usage.response.simulated


def test_the_report_counts_what_batch_mode_saved_against_realtime_prices():
    from shared.report.costs import batch_saved_usd, run_costs

    snapshot = {"backends": {"openai": {"mode": "batch"}, "mistral-base": {"mode": "realtime"}},
                "pricing": {"gpt-5-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                            "open-*": {"input_per_mtok": 0.2, "output_per_mtok": 0.2, "batch_discount": 0.25}}}
    jobs = [SimpleNamespace(backend="openai", model="gpt-5-mini", cost_usd=0.002, reused_from_job_id=None),
            SimpleNamespace(backend="mistral-base", model="open-mistral-7b", cost_usd=0.004, reused_from_job_id=None)]
    assert batch_saved_usd(jobs, snapshot) == pytest.approx(0.002)  # 0.002 at half of 0.004
    costs = run_costs(jobs, {}, 0.006, snapshot)
    assert costs["batch_backends"] == ["openai"] and costs["batch_usd"] == pytest.approx(0.002)
    snapshot["backends"]["mistral-base"]["mode"] = "batch"
    assert batch_saved_usd(jobs, snapshot) == pytest.approx(0.002 + 0.012)  # 0.004 at a quarter of 0.016


def test_a_retryable_submission_failure_reopens_the_batch_with_backoff(settings, monkeypatch):
    from datetime import datetime, timezone

    import worker.batches
    from shared.providers import ProviderError

    reopened, sent = [], []
    monkeypatch.setattr(worker.batches.sql, "reopen", lambda batch_id, due, error: reopened.append((batch_id, error)))
    monkeypatch.setattr(worker.batches.flush_batch, "apply_async",
                        lambda args, countdown, queue: sent.append((args, countdown, queue)))
    batch = SimpleNamespace(id=7, attempts=0)
    status = worker.batches._submission_failed(batch, [], ProviderError("server", "boom", status=503),
                                               datetime.now(timezone.utc))
    assert status == "retrying"
    assert [batch_id for batch_id, _ in reopened] == [7] and "503" in reopened[0][1]
    assert sent and sent[0][0] == (7,) and sent[0][1] > 0 and sent[0][2] == "batches"


def test_a_wait_follows_jobs_at_their_provider_while_their_batch_is_polled_and_gives_up_once_it_is_not(settings):
    """`submit --wait` / `status --watch`: no job finishing for hours is no stall while a poll
    chain keeps asking about the batch that holds them; once nobody polls it, it is one."""
    from datetime import timedelta

    from producer.stall import StallWatch
    from shared.models import utcnow

    watch = StallWatch("run", settings)
    watch.describe = lambda: "described"  # what the fleet does: SQL and Redis, not this test's concern
    long_ago = settings.recovery.give_up_after_s + 1

    def batch(state: str, polled_s_ago: float | None) -> dict:
        return {"state": state, "jobs": {"running": 40, "ok": 2},
                "polled_at": None if polled_s_ago is None else utcnow() - timedelta(seconds=polled_s_ago)}

    assert watch.observe({"ok": 2}, [batch("submitted", 5)]) is None
    watch.last_progress -= long_ago  # hours without a job finishing...
    assert watch.observe({"ok": 2}, [batch("submitted", 5)]) is None  # ...but the batch was polled 5 s ago
    assert not watch.given_up()

    stale = 2 * settings.batch.poll_max_s + settings.recovery.stall_after_s + 5
    for batches in ([batch("submitted", stale)], [batch("open", 1)], [batch("submitted", None)], [], None):
        watch.last_progress, watch.last_said = watch.last_progress - long_ago, 0.0
        assert watch.observe({"ok": 2}, batches).startswith("stalled: no job finished for"), batches
        assert watch.given_up()


def test_jobs_a_look_step_marks_not_needed_are_progress_as_status_watch_counts_them(settings):
    """One rule for "done" (shared.models.DONE_JOBS): the watch's bars and the stall watch agree."""
    from producer.stall import StallWatch

    watch = StallWatch("run", settings)
    watch.describe = lambda: "described"
    assert watch.observe({"ok": 2, "waiting": 8}) is None
    watch.last_progress -= settings.recovery.give_up_after_s + 1
    assert watch.observe({"ok": 2, "not_needed": 8}) is None  # the look step stopped the rest: progress
    assert not watch.given_up()


def test_only_a_create_the_provider_certainly_refused_is_sent_again():
    """A failed batch create may have created the batch, unless the provider answered a 4xx with
    its body or no connection was ever made: anything else is looked up before a new submission."""
    from shared.providers.batch_names import refused_for_certain
    from shared.providers.clients import _httpx

    httpx = _httpx()
    request = httpx.Request("POST", "http://provider.invalid/v1/batches")

    def raised_by_sdk(cause: Exception) -> Exception:  # as the SDKs wrap a transport error
        wrapped = RuntimeError("Connection error.")
        wrapped.__cause__ = cause
        return wrapped

    class StatusError(Exception):
        def __init__(self, body):
            super().__init__("status")
            self.body = body

    assert refused_for_certain(raised_by_sdk(httpx.ConnectError("refused", request=request)), None)
    assert refused_for_certain(httpx.ConnectTimeout("no connection", request=request), None)  # Mistral's, bare
    assert refused_for_certain(StatusError({"error": {"message": "invalid model"}}), 400)
    assert not refused_for_certain(raised_by_sdk(httpx.RemoteProtocolError("disconnected", request=request)), None)
    assert not refused_for_certain(raised_by_sdk(httpx.ReadTimeout("read timeout", request=request)), None)
    assert not refused_for_certain(StatusError("<html>502 Bad Gateway</html>"), 502)
    assert not refused_for_certain(StatusError({"error": {"message": "request timeout"}}), 408)
    assert not refused_for_certain(StatusError(None), 400)  # no body: not the provider's word


def test_a_results_file_is_read_line_by_line_and_a_corrupt_line_costs_only_its_request():
    import json

    from shared.providers.batch_api import UNREADABLE, _chat_result, _read_lines

    def line(cid: str) -> bytes:
        return json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": {
            "choices": [{"message": {"content": "Paris"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}}}
        ).encode()

    cut = line("gab12-b7-job2")
    raw = b"\n".join([line("gab12-b7-job1"), cut[: len(cut) // 2], b"\x00\xff{", b"[1, 2]", line("gab12-b7-job3")])
    results = _read_lines(raw + b"\n", lambda parsed: _chat_result(str(parsed["custom_id"]), parsed, {}))
    assert [(r.custom_id, r.kind) for r in results] == [
        ("gab12-b7-job1", "succeeded"), ("gab12-b7-job2", UNREADABLE), ("", UNREADABLE), ("", UNREADABLE),
        ("gab12-b7-job3", "succeeded")]
    assert "could not be read" in results[1].error
