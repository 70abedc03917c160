"""Opening a central ledger for writing: a SQLite file or a server database URL.

Created on first use with the shipped migrations, like any ledger. A SQLite
target begins every transaction with ``BEGIN IMMEDIATE`` and commits with
``synchronous = FULL``; a server target takes the event-order lock
(`lock_event_order`) first thing in each writing transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from ..errors import LedgerNotFoundError
from ..store import migrate
from ..store.log import (
    create_ledger_file,
    ensure_schema,
    is_sqlite_target,
    server_engine,
    sqlite_path,
)

__all__ = ["chunks", "open_target", "placeholders"]

_BUSY_TIMEOUT_MS = 600_000  # ingests queue behind each other's batches: wait, do not fail


def open_target(target: str | os.PathLike[str], *, create: bool = True) -> Engine:
    """An engine on a ledger database to write to, its schema checked (created if new).

    Raises:
        LedgerNotFoundError: a SQLite target in a folder that does not exist, or
            missing while ``create`` is False.
        NotALedgerError, SchemaTooOldError, SchemaTooNewError: as for `Ledger.open`.
    """
    where = os.fspath(target)
    if not is_sqlite_target(where):
        engine = server_engine(where)
        try:
            ensure_schema(engine, migrate.display_target(where), create=create)
        except DBAPIError as e:
            engine.dispose()
            raise migrate.translate_db_error(e, migrate.display_target(where)) from e
        return engine
    path = sqlite_path(where)
    if path == ":memory:":
        raise LedgerNotFoundError("a central ledger must be a file or a server database")
    if not (os.path.exists(path) and os.path.getsize(path) > 0):
        if not create:
            raise LedgerNotFoundError(f"no ledger at {path}")
        create_ledger_file(path)
    engine = create_engine("sqlite:///" + os.path.abspath(path))

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, explicitly
        dbapi_connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA synchronous = FULL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.connect() as conn:
            migrate.check_schema(conn, path)
    except BaseException:
        engine.dispose()
        raise
    return engine


def placeholders(conn: Connection, n: int) -> str:
    """``n`` positional placeholders in the driver's style (for `exec_driver_sql`)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (to bound the parameters of an IN list)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
