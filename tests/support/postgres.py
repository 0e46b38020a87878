"""The PostgreSQL server of the tests: a database reset to nothing, cut off for a while, or
watched for the connections each worker holds. Only the test URL's own database is touched."""

from __future__ import annotations

import threading
import time


def reset_postgres(url: str) -> None:
    """Drop every table of the project (as the models declare them) and Alembic's version, so
    the next migrate builds the schema afresh."""
    from sqlalchemy import text
    from sqlmodel import SQLModel

    import shared.models  # noqa: F401  (registers the tables)
    from shared.db import get_engine

    tables = ", ".join(SQLModel.metadata.tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {tables}, alembic_version CASCADE"))


def _postgres_admin(url: str):
    """A connection to the server's `postgres` database (ALTER DATABASE cannot target the
    database it runs in)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def postgres_outage(url: str, seconds: float) -> None:
    """The database of `url` refuses new connections and drops its open ones for `seconds`,
    then answers again (always, even if this is interrupted)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    engine = _postgres_admin(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})
            time.sleep(seconds)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        engine.dispose()


class ConnectionSampler:
    """Samples pg_stat_activity of one database every 0.2 s: the most connections seen per
    application_name (each worker names its connections after its node)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.database = make_url(url).database
        self.engine = create_engine(url, pool_size=1, max_overflow=0)
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sqlalchemy import text

        query = text("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = :db "
                     "GROUP BY application_name")
        while not self._stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"db": self.database}).all()
            workers = {name: n for name, n in rows if name.startswith("genesis-worker")}
            for name, n in workers.items():
                self.peak[name] = max(self.peak.get(name, 0), n)
            self.peak_total = max(self.peak_total, sum(workers.values()))
            time.sleep(0.2)

    def __enter__(self) -> "ConnectionSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()
