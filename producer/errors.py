"""Every producer command ends in one line and an exit code, never a traceback: an outage of
Redis or the database says which one is away (its URL without the password) and exits 1, as
does a command Redis refused (said as such: Redis is up, and SQL may hold the write); bad
input that reached the top (a ConfigError, an option click refused, e.g. `--cost inf`) exits 2.
Installed as the click group class of the `producer` app,
so every command and sub-command gets it, however it is invoked."""

from __future__ import annotations

import sys

import typer
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from typer.core import TyperGroup

from producer.output import bad_input, err_console
from shared.config import ConfigError, get_settings, redacted_url


# Click's UsageError (a bad option value, an unknown option), wherever this Typer keeps click:
# current Typer vendors its own copy (typer._click), older ones use the click package.
_USAGE_ERROR = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def outage_line(exc: BaseException) -> str | None:
    """One line for an unreachable Redis or database, or None when `exc` is something else."""
    if _is_redis_error(exc, _REDIS_OUTAGES):
        return f"Redis is not answering at {redacted_url(get_settings().redis_url)} ({_first_line(exc)})"
    if isinstance(exc, SQLAlchemyError):
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        return f"the database at {redacted_url(get_settings().database_url)} failed: {_first_line(cause)}"
    return None


def refusal_line(exc: BaseException) -> str | None:
    """One line for a command Redis answered with an error (it is up, so this is no outage, and
    what the command wrote to SQL before it stays written), or None when `exc` is something else."""
    if _is_redis_error(exc, (("redis.exceptions", "RedisError"),)):
        return (f"Redis at {redacted_url(get_settings().redis_url)} refused a command ({_first_line(exc)}); "
                "what this command wrote to SQL before it is kept")
    return None


# What says Redis (or the broker on it) is away, rather than that it refused a command.
_REDIS_OUTAGES = (("redis.exceptions", "ConnectionError"), ("redis.exceptions", "TimeoutError"),
                  ("kombu.exceptions", "OperationalError"))


def _is_redis_error(exc: BaseException, classes: tuple[tuple[str, str], ...]) -> bool:
    """An error of redis-py or kombu (the broker) of one of `classes`, without importing either:
    an error of theirs can exist only once its module is imported, and `producer status` never
    imports them (~35-80 ms)."""
    found = [getattr(sys.modules.get(module), name, None) for module, name in classes]
    return any(isinstance(cls, type) and isinstance(exc, cls) for cls in found)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


class OneLineErrors(TyperGroup):
    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise bad_input(str(exc)) from None
        except _USAGE_ERROR as exc:  # a bad option value (e.g. --format xml): one line too
            raise bad_input(" ".join(exc.format_message().split())) from None
        except Exception as exc:  # noqa: BLE001 - only outages are turned into a line; the rest re-raises
            if (line := outage_line(exc)) is not None:
                line = f"{line}; nothing more was done"
            elif (line := refusal_line(exc)) is None:
                raise
            err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
