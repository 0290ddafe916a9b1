"""Alembic environment for mimax's own tables.

mimax runs this programmatically (``mimax.storage.db``), handing over an open connection whose
transaction it owns; ``alembic -x url=...`` from a shell works too. Optuna's tables live in the same
database with Optuna's own ``alembic_version``: mimax records its revision in
``mimax_alembic_version`` and autogenerate looks only at tables named ``mimax_*``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mimax.storage.db import VERSION_TABLE, Base

config = context.config


def include_name(name, type_, parent_names) -> bool:
    return type_ != "table" or (name or "").startswith("mimax_")


def _migrate(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():  # a no-op inside the transaction mimax hands over
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as conn:
        _migrate(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("mimax migrations run online only: pass -x url=<database url>")
run_online()
