"""Suites a test generates (issue #28's sizes are not shipped): the shipped suite's tasks with a
local scorer, each repeated under a new id and a prompt of its own, so the simulator draws
every task's answer apart (its draw hashes the prompt)."""

from __future__ import annotations

import json
from pathlib import Path


def generate_suite(folder: Path, per_agent: int, agents: tuple[str, ...] | None = None) -> Path:
    from shared.suite import load_suite

    shipped = load_suite("genesis-custom")
    folder.mkdir(parents=True, exist_ok=True)
    for agent in agents or tuple(shipped.agents()):
        tasks = [t for t in shipped.tasks_for(agent) if t.scorer.local]
        with (folder / f"{agent}.jsonl").open("w") as out:
            for i in range(per_agent):
                task = tasks[i % len(tasks)]
                out.write(json.dumps({**task.model_dump(exclude_none=True), "id": f"{task.id}-g{i:04d}",
                                      "prompt": f"{task.prompt}\n(item {i})"}) + "\n")
    return folder
