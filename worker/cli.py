"""`worker` (also `python -m worker`): Celery's own worker command for this project's app,
started without Celery's umbrella CLI. Options are those of `celery -A worker.app worker`
(`-Q`, `-c`, `-P`, `-n`, `-l`, ...), defaults those of worker/app.py.

Why not just `celery -A worker.app worker` (which still works): the umbrella imports every
installed `celery.commands` plugin and subcommand at start-up (Flower with Tornado and
prometheus_client, the shell's prompt_toolkit and pygments), ~23 MB resident in each worker
process for code a worker never runs."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as worker_command

    from worker.app import app

    worker_command.main(args=sys.argv[1:] if argv is None else argv, prog_name="worker",
                        obj=CLIContext(app=app, no_color=None, workdir=None, quiet=False))
