"""The `worker` script starts Celery's own worker command without Celery's umbrella CLI (so
none of the CLI plugins and subcommands are loaded into every worker), and `celery -A
worker.app worker` still works as Celery users expect."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.harness import ROOT, producer, wait_until_reported

UMBRELLA_ONLY = ["celery.bin.celery", "flower", "tornado", "prompt_toolkit"]
_LOADED = f"import json, sys; print(json.dumps([m for m in {UMBRELLA_ONLY!r} if m in sys.modules]))"


def loaded_after(code: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_LOADED}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    *output, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(output)


def test_the_worker_script_loads_no_umbrella_cli_code() -> None:
    umbrella, _ = loaded_after("import celery.bin.celery")  # what `celery -A worker.app worker` carries
    assert "celery.bin.celery" in umbrella and "prompt_toolkit" in umbrella
    if importlib.util.find_spec("flower"):  # the `monitor` extra
        assert {"flower", "tornado"} <= set(umbrella)

    ours, help_text = loaded_after(
        "from worker.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert ours == []
    assert "--queues" in help_text and "--concurrency" in help_text and "--pool" in help_text


@pytest.mark.integration
def test_celery_umbrella_cli_still_starts_a_working_worker(start_worker) -> None:
    start_worker("umbrella", concurrency=2, launcher="celery")
    result = producer("submit", "--agent", "qa", "--backend", "openai", "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    snap = wait_until_reported(json.loads(result.stdout)["run_id"])
    assert snap["by_status"]["ok"] == 2 == snap["total"]
