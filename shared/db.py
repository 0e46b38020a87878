"""The engine, in one place. SQLite gets WAL and a busy timeout so many worker processes can
write; every write transaction is kept short (never open across a provider call)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)


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
    """Bring the schema to the newest Alembic revision (idempotent; cheap when current)."""
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
