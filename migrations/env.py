"""Alembic environment for the photosync ledger.

photosync passes its own engine in `config.attributes["engine"]` (so the SQLite pragmas apply);
the `alembic` command line falls back to sqlalchemy.url from alembic.ini.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, engine_from_config, pool

from reconciler.ledger.orm import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        engine = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
    with engine.connect() as connection:
        # Batch mode: SQLite cannot ALTER most things in place, so Alembic copies the table.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
