"""The `worker` script starts Celery's own worker command without Celery's umbrella CLI (so
none of the CLI plugins and subcommands are loaded into every worker), and `celery -A
worker.app worker` still works as Celery users expect."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support.processes import modules_loaded_after
from tests.support.runs import submit, wait_until_reported

UMBRELLA_ONLY = ["celery.bin.celery", "flower", "tornado", "prompt_toolkit"]


def loaded_after(code: str) -> tuple[list[str], str]:
    return modules_loaded_after(code, UMBRELLA_ONLY)


@pytest.mark.processes
def test_the_worker_script_loads_no_umbrella_cli_code() -> None:
    umbrella, _ = loaded_after("import celery.bin.celery")  # what `celery -A worker.app worker` carries
    assert "celery.bin.celery" in umbrella and "prompt_toolkit" in umbrella
    if importlib.util.find_spec("flower"):  # the `monitor` extra
        assert {"flower", "tornado"} <= set(umbrella)

    ours, help_text = loaded_after(
        "from worker.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert ours == []
    assert "--queues" in help_text and "--concurrency" in help_text and "--pool" in help_text



class RecordingWorker:
    """Stands in for app.Worker: records the options the command line became, starts nothing."""

    made: list[dict] = []

    def __init__(self, **options) -> None:
        RecordingWorker.made.append(options)
        self.exitcode = 0

    def start(self) -> None:
        pass


def run_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    from worker.app import app
    from worker.cli import main

    RecordingWorker.made.clear()
    monkeypatch.setattr(app, "Worker", RecordingWorker)
    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code


def test_worker_options_and_celery_worker_variables_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.concurrency.thread import TaskPool

    monkeypatch.setenv("CELERY_WORKER_CONCURRENCY", "3")  # as `celery -A worker.app worker` reads it
    assert run_main(monkeypatch, ["-Q", "openai,reports", "-P", "threads", "-n", "w9@host"]) == 0
    (options,) = RecordingWorker.made
    assert options["concurrency"] == 3 and options["queues"] == ["openai", "reports"]
    assert options["hostname"] == "w9@host" and options["pool"] is TaskPool
    assert run_main(monkeypatch, ["-c", "5"]) == 0 and RecordingWorker.made[0]["concurrency"] == 5  # flag beats env


def test_an_explicit_pool_option_wins_over_the_configured_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's `-P` defaults to `prefork` and took an explicit `-P prefork` for that default,
    so the config's `worker.pool` (threads) won and `-P prefork` was silently ignored (P2f)."""
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.thread import TaskPool as Threads

    from worker.app import app

    monkeypatch.setitem(app.conf, "worker_pool", app.conf.worker_pool)  # put back after the test
    assert run_main(monkeypatch, ["-c", "1"]) == 0 and RecordingWorker.made[0]["pool"] is Threads  # the config's
    for args in (["-P", "prefork"], ["-Pprefork"], ["--pool", "prefork"], ["--pool=prefork"]):
        app.conf.worker_pool = "threads"
        assert run_main(monkeypatch, ["-c", "1", *args]) == 0 and RecordingWorker.made[0]["pool"] is Prefork, args
    app.conf.worker_pool = "threads"
    monkeypatch.setenv("CELERY_WORKER_POOL", "prefork")  # as `celery -A worker.app worker` reads it
    assert run_main(monkeypatch, ["-c", "1"]) == 0 and RecordingWorker.made[0]["pool"] is Prefork


@pytest.mark.processes
def test_the_umbrella_clis_pool_option_wins_over_the_configured_pool_too() -> None:
    _, said = modules_loaded_after("import sys\nsys.argv = ['celery', '-A', 'worker.app', 'worker', '-P', 'prefork']\n"
                                   "from worker.app import app\nprint(app.conf.worker_pool)", [])
    assert said.strip() == "prefork"


def test_detach_is_refused_with_one_line_instead_of_starting_nothing(monkeypatch, capsys) -> None:
    assert run_main(monkeypatch, ["-Q", "openai", "--detach"]) == 2
    assert RecordingWorker.made == []
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "--detach is not supported" in said[0]

def test_celery_umbrella_cli_still_starts_a_working_worker(start_worker) -> None:
    start_worker("umbrella", concurrency=2, launcher="celery")
    snap = wait_until_reported(submit("--agent", "qa", "--backend", "openai", "--limit", "2"))
    assert snap["by_status"]["ok"] == 2 == snap["total"]
