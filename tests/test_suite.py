"""The shipped suite is complete and self-consistent; broken suites fail with file:line."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from shared.config import ConfigError
from shared.scoring import SCORER_TYPES, reference_answer, score
from simulator.wrong import wrong_answer
from shared.suite import SUITES_DIR, Suite, SuiteError, SuiteTask, load_suite, load_task, resolve_suite_path

AGENTS = ["analyst", "content", "legal", "qa", "support"]


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite("genesis-custom")


# --- the shipped suite --------------------------------------------------------------------


def test_shipped_suite_has_20_tasks_for_each_of_5_agents(suite: Suite) -> None:
    assert suite.name == "genesis-custom"
    assert len(suite.tasks) == 100
    assert suite.agents() == AGENTS
    for agent in AGENTS:
        tasks = suite.tasks_for(agent)
        assert len(tasks) == 20
        assert all(t.agent == agent for t in tasks)
    assert len({t.key for t in suite.tasks}) == 100


def test_difficulty_is_spread_within_each_agent(suite: Suite) -> None:
    for agent in AGENTS:
        spread = Counter(t.difficulty for t in suite.tasks_for(agent))
        assert all(spread[level] >= 5 for level in ("easy", "medium", "hard")), (agent, spread)


def test_every_scorer_type_is_used(suite: Suite) -> None:
    assert {t.scorer.type for t in suite.tasks} == set(SCORER_TYPES) - {"judge"}  # judge: genesis-judge


def test_prompts_are_unique_and_found_by_prompt(suite: Suite) -> None:
    assert len({t.prompt for t in suite.tasks}) == 100
    for task in suite.tasks:
        assert suite.by_prompt(task.prompt) is task
    assert suite.by_prompt("  " + suite.tasks[0].prompt + "\n") is suite.tasks[0]
    assert suite.by_prompt("What is the meaning of life?") is None


def test_tasks_are_json_serialisable_with_sensible_max_tokens(suite: Suite) -> None:
    for task in suite.tasks:
        assert SuiteTask.model_validate(json.loads(json.dumps(task.model_dump(exclude_none=True)))) == task
        assert 8 <= task.max_tokens <= 512


@pytest.mark.parametrize("agent", AGENTS)
def test_reference_answers_score_one_and_wrong_answers_score_low(suite: Suite, agent: str) -> None:
    for task in suite.tasks_for(agent):
        reference = reference_answer(task)
        assert score(task, reference).score == 1.0, (task.key, reference, score(task, reference))
        for seed in range(5):
            wrong = wrong_answer(task, seed)
            assert wrong.strip(), task.key
            result = score(task, wrong)
            assert result.score <= 0.34, (task.key, seed, wrong, result)


def test_tasks_for_limit_get_and_file_order(suite: Suite) -> None:
    first_three = suite.tasks_for("legal", limit=3)
    assert [t.id for t in first_three] == ["legal-001", "legal-002", "legal-003"]
    assert suite.get("legal", "legal-002") is first_three[1]
    with pytest.raises(KeyError):
        suite.get("legal", "legal-999")
    with pytest.raises(KeyError):
        suite.get("qa", "legal-001")


def test_load_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    first = load_suite(str(folder))
    assert load_suite(str(folder)) is first
    file = folder / "qa.jsonl"
    file.write_text(file.read_text() + task_line("qa-002") + "\n")
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 1_000_000))
    reloaded = load_suite(str(folder))
    assert reloaded is not first
    assert [t.id for t in reloaded.tasks] == ["qa-001", "qa-002"]


def test_a_recent_check_is_trusted_for_max_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import suite as suites

    clock = [1000.0]
    monkeypatch.setattr(suites.time, "monotonic", lambda: clock[0])
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    first = load_suite(str(folder), max_age_s=1.0)
    file = folder / "qa.jsonl"
    file.write_text(file.read_text() + task_line("qa-002") + "\n")
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 1_000_000))
    clock[0] += 0.5
    assert load_suite(str(folder), max_age_s=1.0) is first  # checked 0.5 s ago: files not looked at
    assert [t.id for t in load_suite(str(folder)).tasks] == ["qa-001", "qa-002"]  # no max age: always checked
    clock[0] += 1.0
    assert [t.id for t in load_suite(str(folder), max_age_s=1.0).tasks] == ["qa-001", "qa-002"]



def test_threads_loading_the_same_suite_at_once_parse_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import suite as suites

    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    parses: list[int] = []
    everyone_in = threading.Barrier(8)
    real_read = suites._read_tasks

    def slow_read(files):
        parses.append(1)
        time.sleep(0.2)  # long enough for every other thread to arrive while this one parses
        return real_read(files)

    monkeypatch.setattr(suites, "_read_tasks", slow_read)
    loaded: list[Suite] = []

    def load() -> None:
        everyone_in.wait()
        loaded.append(load_suite(str(folder), max_age_s=1.0))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(loaded) == 8 and all(suite is loaded[0] for suite in loaded)
    assert len(parses) == 1


@pytest.mark.processes
def test_a_child_forked_while_a_thread_parses_loads_the_suite_itself(tmp_path: Path, monkeypatch) -> None:
    """A prefork child must not inherit the parsing thread's lock (nobody would release it)."""
    from shared import suite as suites

    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    parent, parsing, release = os.getpid(), threading.Event(), threading.Event()
    real_read = suites._read_tasks

    def parent_waits_mid_parse(files):
        if os.getpid() == parent:
            parsing.set()
            release.wait(10)
        return real_read(files)

    monkeypatch.setattr(suites, "_read_tasks", parent_waits_mid_parse)
    holder = threading.Thread(target=load_suite, args=(str(folder),))
    holder.start()
    assert parsing.wait(5)
    child = os.fork()
    if child == 0:  # the child: load the suite and leave at once, whatever happens
        code = 1
        try:
            code = 0 if [t.id for t in load_suite(str(folder)).tasks] == ["qa-001"] else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(child, 9)
        os.waitpid(child, 0)
    release.set()
    holder.join(10)
    assert done != (0, 0), "the forked child hung on the parent's parse lock"
    assert os.waitstatus_to_exitcode(done[1]) == 0

# --- resolving ----------------------------------------------------------------------------


def test_resolve_by_name_and_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_suite_path("genesis-custom") == (SUITES_DIR / "genesis-custom").resolve()
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    assert resolve_suite_path(str(folder)) == folder.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_suite_path("mysuite") == folder.resolve()  # an existing folder wins over a name
    assert load_suite("./mysuite").name == "mysuite"


@pytest.mark.parametrize("name", ["no-such-suite", "./missing/dir"])
def test_resolve_unknown_suite(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError, match=rf"unknown suite '{name}': no folder at .*\(known: .*genesis-custom"):
        resolve_suite_path(name)


def test_suite_error_is_a_config_error() -> None:
    assert issubclass(SuiteError, ConfigError)


# --- malformed suites ---------------------------------------------------------------------


def task_line(task_id: str, **changes: object) -> str:
    task: dict = {
        "id": task_id,
        "agent": "qa",
        "prompt": f"Question {task_id}? Answer with just the number.",
        "difficulty": "easy",
        "max_tokens": 16,
        "scorer": {"type": "numeric", "expected": 4},
    }
    task.update(changes)
    return json.dumps({k: v for k, v in task.items() if v is not None}, ensure_ascii=False)


def write_suite(tmp_path: Path, files: dict[str, list[str]]) -> Path:
    folder = tmp_path / "mysuite"
    folder.mkdir(exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"id": "qa-003", "agent": "qa",', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (task_line("qa-003", prompt=None), "missing field 'prompt'"),
        (task_line("qa-003", promt="typo"), "unknown field 'promt'"),
        (task_line("qa-003", difficulty="extreme"), "unknown difficulty 'extreme'"),
        (task_line("qa-003", max_tokens=0), "max_tokens must be a whole number from 1 to 1,000,000"),
        (task_line("qa-003", max_tokens="64"), "max_tokens must be a whole number from 1 to 1,000,000"),
        (task_line("qa-003", max_tokens=10**12), "max_tokens must be a whole number from 1 to 1,000,000 (got 1000000000000)"),
        (task_line("qa-003", scorer={"type": "fuzzy"}), "bad scorer: unknown scorer type 'fuzzy'"),
        (task_line("qa-003", scorer={"type": "regex", "pattern": "(", "reference": "x"}), "bad scorer: regex scorer: invalid pattern"),
        (task_line("qa-003", scorer={"type": "contains"}), "bad scorer: contains scorer needs"),
        (task_line("qa-003", scorer={"type": "exact", "expected": "a", "reference": "b"}), "bad scorer: its reference answer scores 0.00"),
        (task_line("qa-003", agent="QA team"), "field 'agent'"),
        (task_line("qa-003", cluster="doc 7"), "cluster must be a name of letters, digits"),
        (task_line("qa-003", cluster=7), "cluster must be a name of letters, digits"),
        (task_line("qa-001"), "duplicate id 'qa-001' for agent 'qa'"),
    ],
)
def test_bad_line_names_file_line_and_reason(tmp_path: Path, bad_line: str, reason: str) -> None:
    # The bad task sits on line 4 of the second file, after a blank line.
    folder = write_suite(tmp_path, {
        "a.jsonl": [task_line("other-1", agent="legal")],
        "qa.jsonl": [task_line("qa-001"), task_line("qa-002"), "", bad_line],
    })
    with pytest.raises(SuiteError) as caught:
        load_suite(str(folder))
    message = str(caught.value)
    assert f"qa.jsonl:4: {reason}" in message
    assert "\n" not in message


def test_a_task_may_name_its_family_and_a_job_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import producer.submit as submit

    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001", cluster="doc-7"), task_line("qa-002")]})
    suite = load_suite(str(folder))
    first, second = suite.get("qa", "qa-001"), suite.get("qa", "qa-002")
    assert first.cluster == "doc-7" and second.cluster is None
    monkeypatch.setattr(submit, "request_key", lambda *args: "key")  # the request is not what this checks
    monkeypatch.setattr(submit, "job_request", lambda *args: None)
    settings = SimpleNamespace(backends={"b": SimpleNamespace(provider="openai")})
    assert submit.new_job(settings, "r", "qa", first, "b", "m")["cluster"] == "doc-7"
    assert submit.new_job(settings, "r", "qa", second, "b", "m")["cluster"] is None


def test_same_id_under_another_agent_is_fine(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"mixed.jsonl": [task_line("t-1"), task_line("t-1", agent="legal", prompt="Other?")]})
    assert [t.key for t in load_suite(str(folder)).tasks] == ["qa/t-1", "legal/t-1"]


def test_agent_comes_from_the_field_not_the_file_name(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("x-1", agent="support")]})
    assert load_suite(str(folder)).agents() == ["support"]


def test_folder_without_jsonl_or_tasks_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SuiteError, match="no \\*.jsonl files"):
        load_suite(str(empty))
    (empty / "qa.jsonl").write_text("\n\n")
    with pytest.raises(SuiteError, match="no tasks"):
        load_suite(str(empty))


def test_the_judge_suite_has_rubric_graded_variants_the_simulated_judge_grades_sensibly() -> None:
    from simulator.judging import rubric_grade
    from simulator.wrong import WRONG_MAX_SCORE

    judged = load_suite("genesis-judge")
    assert judged.agents() == ["content", "legal", "support"]
    for agent in judged.agents():
        tasks = judged.tasks_for(agent)
        assert len(tasks) == 5 and {t.difficulty for t in tasks} == {"easy", "medium", "hard"}
        for task in tasks:
            assert task.scorer.type == "judge" and len(task.scorer.rubric) >= 3
            assert rubric_grade(task.scorer.rubric, reference_answer(task))[0] == 1.0, task.key
            for seed in range(5):
                assert rubric_grade(task.scorer.rubric, wrong_answer(task, seed))[0] <= WRONG_MAX_SCORE, task.key


# --- one task, read from its line (workers) --------------------------------------------


def test_load_task_gives_each_task_as_the_whole_suite_does(suite: Suite) -> None:
    for task in suite.tasks:
        assert load_task("genesis-custom", task.agent, task.id) == task
    with pytest.raises(KeyError, match="no task qa/qa-999"):
        load_task("genesis-custom", "qa", "qa-999")


def test_load_task_parses_only_the_line_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import suite as suites

    # Non-ASCII text before the task: offsets are in bytes, not characters.
    lines = [task_line(f"qa-{i:03d}", prompt=f"Größe {i}? Answer with just the number.") for i in range(50)]
    folder = write_suite(tmp_path, {"qa.jsonl": lines[:25], "qb.jsonl": [""] + lines[25:]})
    parsed: list[str] = []
    real_parse = suites._parse_line
    monkeypatch.setattr(suites, "_parse_line", lambda line, where: parsed.append(where) or real_parse(line, where))
    monkeypatch.setattr(suites, "_read_tasks", lambda files: pytest.fail("the whole suite was parsed"))
    task = load_task(str(folder), "qa", "qa-030")
    assert (task.id, task.prompt) == ("qa-030", "Größe 30? Answer with just the number.")
    assert parsed == [f"{folder / 'qb.jsonl'}:7"]
    assert load_task(str(folder), "qa", "qa-030") is task and len(parsed) == 1  # its other backends


def test_load_task_sees_a_changed_file_and_names_a_broken_line(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    assert load_task(str(folder), "qa", "qa-001").max_tokens == 16
    file = folder / "qa.jsonl"
    file.write_text(task_line("qa-000") + "\n" + task_line("qa-001", max_tokens=32) + "\n")
    assert load_task(str(folder), "qa", "qa-001").max_tokens == 32
    file.write_text(task_line("qa-001") + "\n" + '{"id": "qa-002",' + "\n")
    with pytest.raises(SuiteError, match=r"qa\.jsonl:2: invalid JSON"):
        load_task(str(folder), "qa", "qa-001")
    file.write_text(task_line("qa-001", difficulty="trivial") + "\n")
    with pytest.raises(SuiteError, match=r"qa\.jsonl:1: unknown difficulty 'trivial'"):
        load_task(str(folder), "qa", "qa-001")


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([task_line("qa-001"), task_line("qa-002", id=None)], r"qa\.jsonl:2: missing field 'id'"),
        ([task_line("qa-001"), task_line("qa-001", max_tokens=99)], r"qa\.jsonl:2: duplicate id 'qa-001'"),
    ],
)
def test_load_task_fails_a_suite_as_the_whole_load_does(tmp_path: Path, lines: list[str], reason: str) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": lines})
    for load in (lambda: load_suite(str(folder)), lambda: load_task(str(folder), "qa", "qa-001")):
        with pytest.raises(SuiteError, match=reason):
            load()


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001")]})
    (folder / "qa.jsonl").write_bytes(task_line("qa-001").encode() + b"\n" + b'{"id": "\xff"}\n')
    for load in (lambda: load_suite(str(folder)), lambda: load_task(str(folder), "qa", "qa-001")):
        with pytest.raises(SuiteError, match=r"qa\.jsonl:2: not UTF-8 text"):
            load()


def test_a_task_moved_within_the_recheck_window_is_still_the_task_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import suite as suites

    clock = [1000.0]
    monkeypatch.setattr(suites.time, "monotonic", lambda: clock[0])
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001"), task_line("qa-002")]})
    assert load_task(str(folder), "qa", "qa-001", max_age_s=1.0).id == "qa-001"
    (folder / "qa.jsonl").write_text(task_line("qa-002") + "\n" + task_line("qa-001") + "\n")
    clock[0] += 0.5  # within the window: the files are not looked at, the old offsets point elsewhere
    assert load_task(str(folder), "qa", "qa-002", max_age_s=1.0).id == "qa-002"
    assert load_task(str(folder), "qa", "qa-001", max_age_s=1.0).id == "qa-001"


def test_a_same_size_rewrite_within_one_clock_tick_is_noticed(tmp_path: Path) -> None:
    folder = write_suite(tmp_path, {"qa.jsonl": [task_line("qa-001"), task_line("qa-002")]})
    file = folder / "qa.jsonl"
    assert load_task(str(folder), "qa", "qa-001").id == "qa-001"
    before = file.stat()
    file.write_text(task_line("qa-002") + "\n" + task_line("qa-001") + "\n")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime: the same signature
    assert load_task(str(folder), "qa", "qa-002").id == "qa-002"
    assert load_task(str(folder), "qa", "qa-001").id == "qa-001"
