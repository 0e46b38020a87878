"""`worker` (also `python -m worker`): Celery's own worker command for this project's app,
started without Celery's umbrella CLI. Its options are those of `celery -A worker.app worker`
(`-Q`, `-c`, `-P`, `-n`, `-l`, ..., also as CELERY_WORKER_* variables), its defaults those of
worker/app.py. The umbrella's own options (`-b`, `--config`, `--workdir`, ...) are not taken:
the app is configured by GENESIS_* and config/, and `--detach` is refused (Celery's detach
re-runs `python -m celery` with these arguments, which would start nothing): use a supervisor,
or `celery -A worker.app worker --detach`.

Why not just `celery -A worker.app worker` (which still works): the umbrella imports every
installed `celery.commands` plugin and subcommand at start-up (Flower with Tornado and
prometheus_client, the shell's prompt_toolkit and pygments): a `-Q openai` worker starts at
~112 MB under it and ~100 MB under this script."""

from __future__ import annotations

import os
import sys

ENV_PREFIX = "CELERY_WORKER"  # what the umbrella gives its worker subcommand (`CELERY` + command name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-D", "--detach") for arg in args):
        print("worker: --detach is not supported: run it under a supervisor (systemd, compose), "
              "or use `celery -A worker.app worker --detach`", file=sys.stderr)
        raise SystemExit(2)
    from celery import maybe_patch_concurrency

    maybe_patch_concurrency(["worker", *args])  # gevent/eventlet patch before anything else is imported, as celery does

    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as worker_command

    from shared.config import ConfigError
    from shared.messaging import use_pool

    try:
        from worker.app import app  # the settings: a bad number or key is refused here
        from shared.db import get_engine

        get_engine()  # the database's driver is installed (PostgreSQL: the postgres extra)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    use_pool(app, args, dict(os.environ))  # `-P prefork` wins over the config's pool
    no_color = os.environ.get("NO_COLOR", "").lower() not in ("", "0", "false") or None
    worker_command.main(args=args, prog_name="worker", auto_envvar_prefix=ENV_PREFIX,
                        obj=CLIContext(app=app, no_color=no_color, workdir=None, quiet=False))
