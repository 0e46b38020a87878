"""Repeated trials (`submit --epochs k`): the task-mean reduction and its missing-epoch rules,
the variance split and the k rule, the dry run's price and power with k epochs, and the
simulator's sampled answers (temperature > 0) against its greedy ones (temperature 0)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlmodel import Session

from shared.epochs import epochs_gain, k_enough, spread_ratio, task_means, variance_split

REPO = Path(__file__).resolve().parents[1]


def job(task: str, epoch: int, status: str = "ok", score: float | None = None, model: str = "m"):
    return SimpleNamespace(task_id=task, epoch=epoch, status=status, score=score, model=model)


# --- the task-mean reduction -------------------------------------------------------------------


def test_a_task_scores_the_mean_of_its_epochs_in_epoch_order():
    means = task_means([job("t1", 3, score=1.0), job("t1", 1, score=0.0), job("t1", 2, score=1.0),
                        job("t2", 1, score=0.5)], errors_count_as_zero=True)
    assert means["t1"].status == "ok" and means["t1"].score == pytest.approx(2 / 3)
    assert means["t1"].epoch_scores == (0.0, 1.0, 1.0)
    assert means["t2"].score == 0.5 and means["t2"].epoch_scores == (0.5,)  # one epoch: the job itself


def test_missing_epochs_never_help_the_candidate():
    epochs = [job("t", 1, score=1.0), job("t", 2, "error"), job("t", 3, "halted")]
    candidate = task_means(epochs, errors_count_as_zero=True)["t"]
    baseline = task_means(epochs, errors_count_as_zero=False)["t"]
    # the candidate's error counts 0, the halted epoch (never attempted) is left out
    assert candidate.score == pytest.approx(0.5) and candidate.epoch_scores == (1.0, 0.0, None)
    # the baseline's error is left out: a baseline error says nothing about the candidate
    assert baseline.score == pytest.approx(1.0) and baseline.epoch_scores == (1.0, None, None)


def test_a_task_with_no_answered_epoch_is_an_error_or_missing():
    errored = task_means([job("t", 1, "error"), job("t", 2, "halted")], errors_count_as_zero=True)["t"]
    assert (errored.status, errored.score) == ("error", None)
    never = task_means([job("t", 1, "halted"), job("t", 2, "queued")], errors_count_as_zero=True)["t"]
    assert (never.status, never.score) == ("halted", None)


# --- the variance split and the k rule --------------------------------------------------------


def test_the_variance_split_separates_within_from_between():
    # Candidate epochs vary within tasks (0/1 halves: variance 1/3 per task at 4 epochs);
    # the baseline is the same in every epoch, but differs between tasks.
    pairs = [((1, 0, 1, 0), (0, 0, 0, 0)), ((1, 0, 1, 0), (1, 1, 1, 1)),
             ((1, 0, 1, 0), (0, 0, 0, 0)), ((1, 0, 1, 0), (1, 1, 1, 1))]
    split = variance_split(pairs)
    assert split["within_candidate"] == pytest.approx(1 / 3) and split["within_baseline"] == 0.0
    assert split["within_one_epoch"] == pytest.approx(1 / 3)
    # differences +0.5, -0.5, +0.5, -0.5: observed variance 1/3; within part at 4 epochs 1/12
    assert split["observed"] == pytest.approx(1 / 3)
    assert split["between"] == pytest.approx(1 / 3 - 1 / 12)
    assert split["within_share"] == pytest.approx(0.25)
    assert split["agreed"] is False
    # (W/k) / (B + W/k) <= 10%: k >= W * 0.9 / (0.1 * B) = (1/3) * 9 / (1/4) = 12
    assert split["k_enough"] == 12


def test_the_k_rule():
    assert k_enough(0.0, 0.2) == 1  # no within-task spread: one epoch is enough
    assert k_enough(0.1, 0.0) is None  # all the spread is within tasks: no k gets there
    assert k_enough(0.1, 0.9) == 1  # 0.1 / 1.0 = 10%: already there
    assert k_enough(0.2, 0.9) == 2  # 0.2 / 1.1 > 10%, 0.1 / 1.0 = 10%
    share = lambda k: (0.5 / k) / (0.3 + 0.5 / k)  # noqa: E731
    found = k_enough(0.5, 0.3)
    assert share(found) <= 0.1 < share(found - 1)


def test_agreeing_epochs_say_so_and_one_epoch_would_have_done():
    split = variance_split([((1, 1, 1), (0, 0, 0)), ((0, 0, 0), (0, 0, 0)), ((1, 1, 1), (1, 1, 1))])
    assert split["agreed"] is True and split["within_one_epoch"] == 0.0 and split["k_enough"] == 1
    assert split["within_share"] == 0.0
    one = variance_split([((1,), (0,)), ((0,), (0,))])
    assert one["within_one_epoch"] is None and one["k_enough"] is None  # one epoch: nothing to split


def test_what_k_epochs_buy_before_paying():
    assert spread_ratio(1, 0.5) == 1.0 and spread_ratio(4, 0.0) == 1.0
    assert spread_ratio(4, 0.5) == pytest.approx((0.5 + 0.125) ** 0.5)
    gain = epochs_gain(0.12, 0.05, 4, 0.5, 0.8, 0.025)
    assert gain["smallest_confirmable_abs"] == pytest.approx(0.12 * spread_ratio(4, 0.5))
    assert 0.8 < gain["power_at_one_epoch_figure"] < 1.0
    assert epochs_gain(0.12, 0.05, 4, 0.0, 0.8, 0.025)["power_at_one_epoch_figure"] == pytest.approx(0.8)
    assert epochs_gain(0.06, 0.05, 100, 1.0, 0.8, 0.025)["smallest_confirmable_abs"] == 0.05  # never below the bar


# --- the report over SQL rows ------------------------------------------------------------------


def test_the_decision_pairs_task_means_and_the_report_splits_the_variance(tmp_path, monkeypatch):
    from shared.config import load_settings
    from shared.db import get_engine, migrate
    from shared.models import Job, Run, RunStatus
    from shared.report import build_report_data, render_html, render_markdown

    monkeypatch.setenv("GENESIS_CONFIG", str(REPO / "config" / "genesis.toml"))
    url = f"sqlite:///{tmp_path}/e.db"
    migrate(url)
    settings = load_settings()
    config = settings.model_copy(update={"decision": settings.decision.model_copy(update={"epochs": 3})}).snapshot()
    candidate = {"t0": (1, 1, 0), "t1": (1, 0, 1), "t2": (1, 1, 1), "t3": (0, 1, 0)}
    baseline = {"t0": (0, 0, 0), "t1": (1, 0, 0), "t2": (1, 1, 1), "t3": (0, 0, 1)}
    with Session(get_engine(url)) as session:
        session.add(Run(id="r", suite="genesis-custom", agents=["qa"], backends=["mistral-ft", "mistral-base"],
                        status=RunStatus.completed, config=config))
        session.flush()
        for backend, model, scores in (("mistral-ft", "ft:open-mistral-7b:qa", candidate),
                                       ("mistral-base", "open-mistral-7b", baseline)):
            for task, epochs in scores.items():
                for epoch, score in enumerate(epochs, start=1):
                    session.add(Job(run_id="r", agent="qa", task_id=task, epoch=epoch, backend=backend,
                                    provider="mistral", model=model, status="ok", score=float(score)))
        session.commit()
        data = build_report_data(session, "r")
    qa = next(c for c in data["comparisons"] if c["agent"] == "qa")
    assert qa["n"] == 4 and qa["tasks"] == 4  # the task stays the paired unit, not 12 answers
    pairs = {p["task_id"]: p for p in qa["pairs"]}
    assert pairs["t0"]["candidate_score"] == pytest.approx(2 / 3) and pairs["t0"]["baseline_score"] == 0.0
    assert pairs["t1"]["candidate_epochs"] == [1.0, 0.0, 1.0] and pairs["t1"]["baseline_epochs"] == [1.0, 0.0, 0.0]
    assert qa["candidate_accuracy"] == pytest.approx(8 / 12) and qa["baseline_accuracy"] == pytest.approx(5 / 12)
    split = qa["epochs"]
    assert split["within_one_epoch"] > 0 and split["agreed"] is False and split["tasks"] == 4
    assert data["epochs"]["k"] == 3 and data["epochs"]["agreed"] is False
    assert any(line.startswith("qa (mistral-ft vs mistral-base, 4 tasks): within-task variance")
               for line in data["epochs"]["lines"])
    markdown = render_markdown(data)
    assert "## Repeated trials" in markdown and "Enough epochs: the smallest k" in markdown
    assert "Repeated trials" in render_html(data)


# --- the dry run -------------------------------------------------------------------------------


@pytest.mark.sockets  # the dry run asks a refused Redis port for the budget left
def test_the_dry_run_prices_k_epochs_and_says_what_they_buy(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from producer.cli import app
    from shared.config import get_settings

    monkeypatch.setenv("GENESIS_CONFIG", str(REPO / "config" / "genesis.toml"))
    monkeypatch.setenv("GENESIS_DATABASE_URL", f"sqlite:///{tmp_path}/g.db")
    monkeypatch.setenv("GENESIS_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    try:
        def dry(*args: str) -> dict:
            result = CliRunner().invoke(app, ["submit", "--all-agents", "--backend", "mistral-ft", "--backend",
                                              "mistral-base", *args, "--dry-run", "--json"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        one, three = dry(), dry("--epochs", "3")
        assert three["jobs"] == 3 * one["jobs"] == 3 * 5 * 20 * 2 and three["epochs"] == 3
        assert three["estimated_cost_usd"] == pytest.approx(3 * one["estimated_cost_usd"], rel=1e-6)
        for name, row in three["by_backend"].items():
            assert row["jobs"] == 3 * one["by_backend"][name]["jobs"]
        pooled = {r["agent"]: r for r in three["decision_power"]["rows"]}["ALL"]
        gain = pooled["with_epochs"]
        assert three["decision_power"]["assumed_within_share"] == 0.5 and gain["epochs"] == 3
        assert gain["smallest_confirmable_abs"] < pooled["smallest_confirmable_abs"]
        assert gain["power_at_one_epoch_figure"] > 0.8
        assert "with_epochs" not in {r["agent"]: r for r in one["decision_power"]["rows"]}["ALL"]
        judged_one, judged_three = dry("--suite", "genesis-judge"), dry("--suite", "genesis-judge", "--epochs", "3")
        assert judged_three["judge"]["calls"] == 3 * judged_one["judge"]["calls"] > 0  # every epoch's answer is graded
        tripled = pytest.approx(3 * judged_one["judge"]["cost_usd"], abs=5e-6)  # the estimate rounds to 6 places
        assert judged_three["judge"]["cost_usd"] == tripled

        assert gain["within_share_source"] == "assumed"

        # A run of these backends with agreeing epochs in SQL: epochs bought nothing there, nor here.
        from shared.db import migrate, session_scope
        from shared.models import Job, Run

        migrate(f"sqlite:///{tmp_path}/g.db")
        with session_scope(f"sqlite:///{tmp_path}/g.db") as session:
            session.add(Run(id="prior", suite="genesis-custom", agents=["qa"], backends=["mistral-ft", "mistral-base"]))
            session.flush()
            for backend, right in (("mistral-ft", 3), ("mistral-base", 2)):
                for i in range(5):
                    for epoch in (1, 2):
                        session.add(Job(run_id="prior", agent="qa", task_id=f"t{i}", epoch=epoch, backend=backend,
                                        provider="mistral", model=f"{backend}-model", status="ok",
                                        score=float(i < right)))
        informed = {r["agent"]: r for r in dry("--epochs", "3")["decision_power"]["rows"]}["ALL"]
        assert informed["with_epochs"]["within_share_source"] == "run prior"
        assert informed["with_epochs"]["within_share"] == 0.0
        assert informed["with_epochs"]["power_at_one_epoch_figure"] == pytest.approx(0.8)

        text = CliRunner().invoke(app, ["submit", "--all-agents", "--backend", "mistral-ft", "--backend",
                                        "mistral-base", "--epochs", "3", "--dry-run"]).stdout
        assert "600 jobs, 3 epochs each" in text and "with 3 epochs: +" in text
        assert "else [decision] assumed_within_share (50%)" in text and "within-task (run prior)" in text
        bad = CliRunner().invoke(app, ["submit", "--all-agents", "--epochs", "0", "--dry-run"])
        assert bad.exit_code == 2
    finally:
        get_settings.cache_clear()


# --- the simulator: greedy at temperature 0, sampled above -------------------------------------


def chat_body(api: str, temperature: float | None = None, seed: int | None = None) -> bytes:
    from shared.suite import load_suite

    task = load_suite("genesis-custom").tasks_for("qa")[0]
    body: dict = {"model": "open-mistral-7b", "messages": [{"role": "user", "content": task.prompt}],
                  "max_tokens": 64}
    if temperature is not None:
        body["temperature"] = temperature
    if seed is not None:
        body["seed" if api == "openai" else "random_seed"] = seed
    return json.dumps(body).encode()


def answers(sim, api: str, n: int = 30, **body) -> list[str]:
    from simulator.wire import Api

    replies = [sim.chat(Api(api), {}, chat_body(api, **body)) for _ in range(n)]
    assert all(r.status == 200 for r in replies)
    return [json.loads(r.body)["choices"][0]["message"]["content"] for r in replies]


def test_the_simulator_samples_above_temperature_zero_and_is_greedy_at_zero():
    from simulator.config import SimulatorConfig
    from simulator.server import Simulator

    sim = Simulator(SimulatorConfig(latency_ms=0, quality={"open-mistral-7b": 0.5}))
    assert len(set(answers(sim, "openai", temperature=0))) == 1
    assert len(set(answers(sim, "openai", temperature=0.7))) > 1
    assert len(set(answers(sim, "mistral"))) > 1  # absent: Mistral's default 0.7, sampled
    assert len(set(answers(sim, "openai", temperature=1.0, seed=5))) == 1  # the request's own seed
    sim.update(sampling="always")
    assert len(set(answers(sim, "openai", temperature=0))) > 1
    sim.update(sampling="never")
    assert len(set(answers(sim, "mistral", temperature=1.0))) == 1


def test_the_sdks_get_greedy_answers_at_temperature_zero_and_draws_above_it(simulator):
    """The temperature as each official SDK sends it (OpenAI, Anthropic, Mistral)."""
    import anthropic
    import openai
    from mistralai.client import Mistral

    from shared.suite import load_suite

    simulator.update(quality={"*": 0.5})
    prompt = load_suite("genesis-custom").tasks_for("qa")[0].prompt
    messages = [{"role": "user", "content": prompt}]
    oa = openai.OpenAI(api_key="x", base_url=f"{simulator.url}/v1", max_retries=0)
    an = anthropic.Anthropic(api_key="x", base_url=simulator.url, max_retries=0)
    mi = Mistral(api_key="x", server_url=simulator.url)
    asks = {
        "openai": lambda **t: oa.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=50,
                                                         **t).choices[0].message.content,
        # this SDK generation has no `temperature` argument: the body field is sent as extra_body
        "anthropic": lambda **t: an.messages.create(model="claude-3-5-haiku-latest", messages=messages,
                                                    max_tokens=50, extra_body=t or None).content[0].text,
        "mistral": lambda **t: mi.chat.complete(model="open-mistral-7b", messages=messages, max_tokens=50,
                                                **t).choices[0].message.content,
    }
    for name, ask in asks.items():
        assert len({ask(temperature=0) for _ in range(12)}) == 1, name
        assert len({ask(temperature=1.0) for _ in range(12)}) > 1, name
        assert len({ask() for _ in range(12)}) > 1, name  # absent: the provider's default, above 0


def test_the_simulator_refuses_a_temperature_no_provider_takes():
    from simulator.wire import Api, BadRequest, parse_chat_request

    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert parse_chat_request(Api.ANTHROPIC, {**base, "temperature": 0.3}).temperature == 0.3
    assert parse_chat_request(Api.MISTRAL, {**base, "random_seed": 4}).seed == 4
    for bad in ("hot", -1, 3, True):
        with pytest.raises(BadRequest, match="temperature"):
            parse_chat_request(Api.OPENAI, {**base, "temperature": bad})


def test_a_request_key_is_the_same_for_epoch_one_and_differs_past_it():
    from shared.calls import request_key
    from shared.providers import ChatRequest

    request = ChatRequest(model="m", prompt="p", system=None, max_tokens=10, timeout_s=5)
    first = request_key("openai", request)
    assert request_key("openai", request, 1) == first  # keys written before epochs still match
    assert len({first, request_key("openai", request, 2), request_key("openai", request, 3)}) == 3


# --- end to end: real workers, Redis, the simulator and the SDKs --------------------------------

MISTRAL_PAIR = ["--all-agents", "--backend", "mistral-ft", "--backend", "mistral-base", "--limit", "2"]
SLOTS = 5 * 2 * 2  # agents x tasks x backends


def report_of(snap: dict) -> dict:
    return json.loads((Path(snap["report"]).parent / "report.json").read_text())


def by_slot(jobs) -> dict[tuple, dict[int, object]]:
    slots: dict[tuple, dict[int, object]] = {}
    for j in jobs:
        slots.setdefault((j.agent, j.task_id, j.backend), {})[j.epoch] = j
    return slots


def test_three_epochs_pay_three_calls_per_job_and_the_decision_pairs_task_means(start_worker, simulator,
                                                                                fast_limits):
    from tests.support.runs import ledger_rows, producer, run_jobs, submit, wait_until_reported

    simulator.update(sampling="always")  # the adapters send temperature 0 until backend params land
    start_worker("w1", concurrency=8)
    run_id = submit(*MISTRAL_PAIR, "--epochs", "3")
    snap = wait_until_reported(run_id)
    assert snap["status"] == "completed" and snap["total"] == 3 * SLOTS and snap["by_status"]["ok"] == 3 * SLOTS
    assert simulator.stats()["requests_total"] == 3 * SLOTS and len(ledger_rows(run_id)) == 3 * SLOTS
    slots = by_slot(run_jobs(run_id))
    assert len(slots) == SLOTS and all(set(epochs) == {1, 2, 3} for epochs in slots.values())

    report = report_of(snap)
    assert report["total_jobs"] == 3 * SLOTS and report["epochs"]["k"] == 3
    comparisons = {c["agent"]: c for c in report["comparisons"]}
    for agent in ("qa", "content", "legal", "support", "analyst"):
        c = comparisons[agent]
        assert c["n"] == 2 and c["tasks"] == 2  # tasks, not answers
        for pair in c["pairs"]:
            assert len(pair["candidate_epochs"]) == 3 and len(pair["baseline_epochs"]) == 3
            assert pair["candidate_score"] == pytest.approx(sum(pair["candidate_epochs"]) / 3)
            assert pair["baseline_score"] == pytest.approx(sum(pair["baseline_epochs"]) / 3)
            jobs = slots[(agent, pair["task_id"], "mistral-ft")]
            assert pair["candidate_epochs"] == [jobs[e].score for e in (1, 2, 3)]
    assert comparisons["ALL"]["n"] == 10
    assert report["epochs"]["agreed"] is False  # sampled: 60 draws at 85% and 65% do not all agree
    assert comparisons["ALL"]["epochs"]["within_one_epoch"] > 0
    assert any(line.startswith("all agents pooled (mistral-ft vs mistral-base, 10 tasks)")
               for line in report["epochs"]["lines"])
    markdown = (Path(snap["report"]).parent / "report.md").read_text()
    assert "## Repeated trials" in markdown and "the scores varied between epochs" in markdown
    assert report["disagreements"]  # the drill-down shows each task's first epoch beside its means
    for row in report["disagreements"]:
        jobs = slots[(row["agent"], row["task_id"], "mistral-ft")]
        assert row["candidate_answer"] == (jobs[1].output or "")[:400]

    status = json.loads(producer("status", run_id, "--json").stdout)
    assert status["epochs"] == 3 and status["total"] == 3 * SLOTS
    exported = producer("export", run_id, "--format", "jsonl").stdout.splitlines()
    assert sorted({json.loads(line)["epoch"] for line in exported}) == [1, 2, 3] and len(exported) == 3 * SLOTS
    compared = json.loads(producer("compare", run_id, run_id, "--json").stdout)
    for row in compared["rows"]:
        means = [sum(j.score for j in slots[(row["agent"], task, row["backend"])].values()) / 3
                 for (agent, task, backend) in slots if (agent, backend) == (row["agent"], row["backend"])]
        assert row["n"] == 2 and row["a_accuracy"] == pytest.approx(sum(means) / len(means))  # task means


def test_at_temperature_zero_the_epochs_agree_and_the_report_says_they_were_not_needed(start_worker, simulator,
                                                                                       fast_limits):
    from tests.support.runs import run_jobs, submit, wait_until_reported

    start_worker("w1", concurrency=8)  # the simulator reads the requests' temperature 0: greedy
    run_id = submit(*MISTRAL_PAIR, "--epochs", "2")
    snap = wait_until_reported(run_id)
    assert snap["by_status"]["ok"] == 2 * SLOTS and simulator.stats()["requests_total"] == 2 * SLOTS
    assert all(e[1].output == e[2].output for e in by_slot(run_jobs(run_id)).values())
    report = report_of(snap)
    assert report["epochs"]["agreed"] is True
    assert all(c["epochs"]["k_enough"] == 1 and c["epochs"]["within_one_epoch"] == 0 for c in report["comparisons"])
    markdown = (Path(snap["report"]).parent / "report.md").read_text()
    assert "The 2 epochs agreed" in markdown and "the epochs were not needed" in markdown


def test_a_rerun_reuses_epoch_i_for_epoch_i_and_epochs_never_reuse_each_other(start_worker, simulator,
                                                                             fast_limits):
    from tests.support.runs import producer, run_jobs, submit, wait_until_reported

    simulator.update(sampling="always")
    start_worker("w1", concurrency=8)
    first = submit(*MISTRAL_PAIR, "--epochs", "2", "--reuse")
    assert wait_until_reported(first)["by_status"]["ok"] == 2 * SLOTS
    assert simulator.stats()["requests_total"] == 2 * SLOTS  # epoch 2 did not take epoch 1's answer
    earlier = by_slot(run_jobs(first))
    assert any(e[1].output != e[2].output for e in earlier.values())  # sampled: the epochs differ

    dry = json.loads(producer("submit", *MISTRAL_PAIR, "--epochs", "3", "--reuse", "--dry-run", "--json").stdout)
    assert dry["jobs"] == 3 * SLOTS and dry["reuse"]["calls_saved"] == 2 * SLOTS  # epoch 3 has no earlier answer

    simulator.reset()
    second = submit(*MISTRAL_PAIR, "--epochs", "2", "--reuse")
    assert wait_until_reported(second)["by_status"]["ok"] == 2 * SLOTS
    assert simulator.stats()["requests_total"] == 0
    for slot, epochs in by_slot(run_jobs(second)).items():
        for epoch, job in epochs.items():
            source = earlier[slot][epoch]
            assert (job.reused_from_run_id, job.reused_from_job_id) == (first, source.id)
            assert job.output == source.output
