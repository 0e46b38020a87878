"""The engine, in one place. SQLite gets WAL and a busy timeout so many worker processes can
write; every write transaction is kept short (never open across a provider call).

Connections to a server database (PostgreSQL) are sized from the threads of the process, not
a fixed 10 + 30: a thread holds a connection only for one short transaction, so a quarter of
the threads (plus one) in the pool, with no overflow, is enough, and a thread that finds the
pool busy waits up to POOL_TIMEOUT_S. A worker with -c 16 opens at most 5 connections, so 4
such workers stay at 20 of PostgreSQL's default 100. The worker sizes its pool at start-up
(worker/app.py); `GENESIS_WORKER__DB_POOL_SIZE` overrides the computed size."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
POOL_TIMEOUT_S = 30
DEFAULT_POOL_SIZE = 2  # single-threaded processes: the producer, the metrics endpoint
T = TypeVar("T")

_pool_size = DEFAULT_POOL_SIZE
_application_name = "genesis-bench"  # how this process's connections show in pg_stat_activity


def pool_size_for(threads: int) -> int:
    """Connections a process with `threads` concurrent tasks needs (see the module docstring)."""
    return math.ceil(max(threads, 1) / 4) + 1


def size_pool(connections: int, application_name: str | None = None) -> None:
    """Set the pool size (and the name PostgreSQL shows) for server databases in this process;
    engines already made are rebuilt on next use (call it at start-up, before work begins)."""
    global _pool_size, _application_name
    _pool_size = max(int(connections), 1)
    _application_name = application_name or _application_name
    for url in [u for u in _engines if not u.startswith("sqlite")]:
        _engines.pop(url).dispose()


def pool_size() -> int:
    return _pool_size


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args = {"application_name": _application_name[:63]} if url.startswith("postgresql") else {}
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=_pool_size, max_overflow=0,
                             pool_timeout=POOL_TIMEOUT_S, connect_args=connect_args)
    except ModuleNotFoundError as exc:  # the URL's driver is an optional dependency
        if not (exc.name or "").startswith("psycopg"):
            raise
        from shared.config import ConfigError

        raise ConfigError(f"a PostgreSQL database needs the postgres extra ({exc.name} is not installed): "
                          "pip install 'genesis-bench[postgres]'") from None


_engines: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process; None means the configured database."""
    if url is None:
        from shared.config import get_settings

        url = get_settings().database_url
    engine = _engines.get(url)
    if engine is None:
        engine = _engines.setdefault(url, make_engine(url))
    return engine


def forget_inherited_connections() -> None:
    """In a forked child (prefork workers): never reuse the parent's pooled connections."""
    for engine in _engines.values():
        engine.dispose(close=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A short unit of work: commit on success, roll back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(url: str | None = None) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; ~0.2 s even when current:
    Alembic and its revision scripts are loaded)."""
    from alembic import command
    from alembic.config import Config

    if url is None:
        from shared.config import get_settings

        url = get_settings().database_url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = get_engine(url)
    command.upgrade(cfg, "head")


def read_migrating(read: Callable[[], T]) -> T:
    """`read()`; when it fails because a table or column is missing (a fresh or older database),
    migrate and read once more. For read-only commands (`producer status`, `runs`), which need
    not pay `migrate` each time; any other error (an outage, a lock) is raised as it came."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        return read()
    except (OperationalError, ProgrammingError) as exc:
        if not _is_missing_schema(exc):
            raise
    migrate()
    return read()


# "no such table"/"no such column" (SQLite); undefined_table, undefined_column (PostgreSQL).
_MISSING_SCHEMA_MESSAGES = ("no such table", "no such column")
_MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}


def _is_missing_schema(exc) -> bool:
    cause = getattr(exc, "orig", None)
    if getattr(cause, "sqlstate", None) in _MISSING_SCHEMA_SQLSTATES:
        return True
    return str(cause or exc).lower().startswith(_MISSING_SCHEMA_MESSAGES)
