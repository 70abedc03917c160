"""Opening a central ledger for writing: a SQLite file or a server database URL.

Created on first use with the shipped migrations, like any ledger, and marked
central (``ledger_info`` row ``role = central``), so that ingest can tell it
from a butler's ledger given as target by mistake (`check_central`). A SQLite
target begins every transaction with ``BEGIN IMMEDIATE`` and commits with
``synchronous = FULL``; a server target takes the event-order lock
(`lock_event_order`) first thing in each writing transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.exc import DBAPIError

from ..errors import LedgerNotFoundError, NotACentralLedgerError, NotALedgerError
from ..store import migrate
from ..store.log import (
    create_ledger_file,
    ensure_schema,
    finish_sqlite_file,
    is_sqlite_target,
    server_engine,
    sqlite_path,
    wal_on,
)
from ..store.schema import ingests, ledger_info, quanta

__all__ = [
    "CENTRAL_INFO",
    "begin_writing",
    "check_central",
    "chunks",
    "close_target",
    "open_target",
    "placeholders",
]

#: The ``ledger_info`` row that marks a ledger created by `open_target` as central.
CENTRAL_INFO = {"role": "central"}

_BUSY_TIMEOUT_MS = 600_000  # ingests queue behind each other's batches: wait, do not fail


def open_target(target: str | os.PathLike[str], *, create: bool = True) -> Engine:
    """An engine on a ledger database to write to, its schema checked (created if new).

    Raises:
        LedgerNotFoundError: a SQLite target in a folder that does not exist, or
            missing while ``create`` is False.
        NotALedgerError: a directory, or a file that is not a ledger.
        SchemaTooOldError, SchemaTooNewError: as for `Ledger.open`.
        LedgerDiskFullError: no room on the disk to create it.
    """
    where = os.fspath(target)
    if not is_sqlite_target(where):
        engine = server_engine(where)
        try:
            ensure_schema(engine, migrate.display_target(where), create=create, info=CENTRAL_INFO)
        except DBAPIError as e:
            engine.dispose()
            raise migrate.translate_db_error(e, migrate.display_target(where)) from e
        return engine
    path = sqlite_path(where)
    if path == ":memory:":
        raise LedgerNotFoundError("a central ledger must be a file or a server database")
    if os.path.isdir(path):
        raise NotALedgerError(
            f"{path} is a directory, not a ledger: name a file for the central ledger "
            f"(e.g. {os.path.join(path, 'central.sqlite')})"
        )
    if not (os.path.exists(path) and os.path.getsize(path) > 0):
        if not create:
            raise LedgerNotFoundError(f"no ledger at {path}")
        try:
            create_ledger_file(path, CENTRAL_INFO)
        except (sqlite3.Error, DBAPIError) as e:
            raise migrate.translate_db_error(e, path) from e
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
    except DBAPIError as e:  # e.g. a text file: its first PRAGMA fails, before any query
        engine.dispose()
        raise migrate.translate_db_error(e, path) from e
    except BaseException:
        engine.dispose()
        raise
    return engine


def begin_writing(engine: Engine) -> None:
    """Before a target's first write: turn a SQLite file's WAL on (a finished one is left without).

    Called once the target is known to be one to write (after `check_central`),
    so a target refused before it is left as it was, byte for byte.
    """
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        wal_on(driver, engine.url.database)


def close_target(engine: Engine) -> None:
    """Release a target that `begin_writing` readied; a SQLite file is left self-contained.

    Once the pool's connections are closed, the file's WAL is folded in and
    turned off (`finish_sqlite_file`), so readers need no write access to it;
    the next `begin_writing` turns WAL on again.
    """
    if engine.dialect.name == "sqlite" and engine.url.database:
        finish_sqlite_file(engine.url.database, engine.dispose)
    else:
        engine.dispose()


def check_central(engine: Engine, where: str, *, into_existing: bool = False) -> None:
    """Refuse a SQLite target that a butler wrote: ingest would change it for good.

    A target is central when `open_target` created it (``role = central`` in
    ``ledger_info``), when an ingest filled it before that mark existed (it has
    ``ingests`` rows), or when it holds no quanta. A server database is shared
    by design (butlers may record into it directly), so it is always accepted.

    Raises:
        NotACentralLedgerError: the target holds quanta, no ingests and no mark,
            and ``into_existing`` is False.
    """
    if into_existing or engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            role = conn.execute(
                select(ledger_info.c.value).where(ledger_info.c.key == "role")
            ).scalar()
            if role == CENTRAL_INFO["role"]:
                return
            if conn.execute(select(ingests.c.quantum_id).limit(1)).first() is not None:
                return
            n = conn.execute(select(func.count()).select_from(quanta)).scalar_one()
    except DBAPIError as e:
        raise migrate.translate_db_error(e, where) from e
    if n == 0:
        return
    noun = "quantum" if n == 1 else "quanta"
    raise NotACentralLedgerError(
        f"{where} is a ledger a butler wrote ({n:,} {noun}, not created by qledger ingest), "
        "not a central ledger: ingesting into it would add other quanta to it for good. "
        f"Was the target forgotten? Give a new file first (qledger ingest central.sqlite "
        f"{where} ...), or pass --into-existing (into_existing=True) to merge into it anyway"
    )


def placeholders(conn: Connection, n: int) -> str:
    """``n`` positional placeholders in the driver's style (for `exec_driver_sql`)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (to bound the parameters of an IN list)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
