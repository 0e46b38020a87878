"""Alembic environment: the target is shared.models; the engine comes from shared.db.

The URL is, first to last: `alembic -x url=...`, the one shared.db.migrate() sets, the
configured database (GENESIS_DATABASE_URL / config/genesis.toml), so `alembic upgrade head`
from the repo root migrates the same database the workers use."""

from logging.config import fileConfig

from alembic import context
from sqlmodel import SQLModel

import shared.models  # noqa: F401  (registers every table on SQLModel.metadata)
from shared.db import get_engine

config = context.config
target_metadata = SQLModel.metadata

if config.config_file_name and not config.attributes.get("engine"):  # the alembic CLI, not migrate()
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from shared.config import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or get_engine(database_url())
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
