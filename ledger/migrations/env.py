"""Alembic environment for the ledger schema.

Used by the ``alembic`` command (with ``alembic.ini``; the URL comes from
``-x url=...`` or ``sqlalchemy.url``) and programmatically with a connection in
``config.attributes["connection"]``. Only the command line configures logging.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from ledger.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a given connection, or one built from the URL."""
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    if config.config_file_name is not None and not config.attributes.get("quiet"):
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine(str(url))
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the ledger needs triggers and views")
run_migrations_online()
