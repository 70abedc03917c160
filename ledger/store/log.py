"""Appending to the event log: the hot path, durability modes, one writer at a time.

SQLAlchemy owns the schema, migrations and queries; appends to a SQLite file go
through the driver connection with cached prepared statements, because Core on
this path alone costs about 1.9x a bare INSERT (measured in ``benchmarks/``).
Other databases (PostgreSQL) append through SQLAlchemy Core.

Every append chains onto the quantum's tip and inserts inside one
``BEGIN IMMEDIATE`` transaction: a deferred transaction that reads first fails
with SQLITE_BUSY_SNAPSHOT under concurrency, which ignores the busy timeout.
The tip is read inside that transaction; a SQLite writer then remembers the
tip it committed and reads it again only when another writer has moved it,
which UNIQUE(quantum_id, quantum_seq) reveals (see `_SQLiteAppender.write`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Table, create_engine, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import TextClause

from .._logging import get_logger
from ..errors import (
    LedgerBusyError,
    LedgerDiskFullError,
    LedgerError,
    LedgerNotFoundError,
)
from ..events import EVENT_COLUMNS, chain_hash, clean_detail, clean_text, utc_now
from . import connect, migrate
from .connect import is_sqlite_target, sqlite_path
from .schema import events, ledger_info

__all__ = [
    "Durability",
    "Entry",
    "EventLog",
    "PendingCall",
    "Transaction",
    "create_ledger_file",
    "ensure_schema",
    "finish_sqlite",
    "finish_sqlite_file",
    "is_sqlite_target",
    "lock_event_order",
    "server_engine",
    "sqlite_path",
    "wal_on",
]

_log = get_logger(__name__)

Durability = Literal["full", "normal", "batch"]
_DURABILITIES = ("full", "normal", "batch")

#: (dataset_id, outcome, error_type, error_message, detail JSON text)
Entry = tuple[str | None, str, str | None, str | None, str | None]

_TIP_SQL = (
    "SELECT quantum_seq, hash FROM events WHERE quantum_id = ? ORDER BY quantum_seq DESC LIMIT 1"
)
_INSERT_SQL = (
    "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, "
    "error_type, error_message, detail, recorded_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BUSY_TIMEOUT_S = 60.0
_T = TypeVar("_T")


@dataclass(slots=True)
class PendingCall:
    """One butler call not yet written: its kind, time and one entry per dataset."""

    quantum_id: str
    attempt: int
    kind: str
    entries: Sequence[Entry]
    recorded_at: str = field(default_factory=utc_now)


def translate_sqlite_error(e: sqlite3.Error, where: str) -> LedgerError:
    """Map a driver error to the library's error tree, naming the file."""
    return migrate.translate_db_error(e, where)


def chain_rows(
    calls: Sequence[PendingCall], tips: dict[str, tuple[int, str | None]]
) -> list[tuple[Any, ...]]:
    """Number and hash the entries of ``calls`` after each quantum's chain tip.

    ``tips`` is updated in place so that consecutive batches continue the chain.
    """
    rows: list[tuple[Any, ...]] = []
    for call in calls:
        qid = call.quantum_id
        seq, prev = tips[qid]
        call_id = seq + 1
        # Kinds and outcomes arrive as StrEnum members; their plain text binds
        # faster (sqlite3 looks for an adapter for every str subclass) and is
        # what is stored and hashed either way.
        kind = str(call.kind)
        for dataset_id, outcome, error_type, error_message, detail in call.entries:
            seq += 1
            # Lone surrogates (from surrogateescape-decoded names) cannot be stored as
            # UTF-8: record them escaped, the same way every time, so the hash holds.
            if error_message is not None:
                error_message = clean_text(error_message)
            if error_type is not None:
                error_type = clean_text(error_type)
            if detail is not None and not detail.isascii():
                detail = clean_detail(detail)
            # The row without its hash is exactly chain_hash's argument list.
            head = (
                qid,
                seq,
                call_id,
                call.attempt,
                kind,
                dataset_id,
                str(outcome),
                error_type,
                error_message,
                detail,
                call.recorded_at,
                prev,
            )
            digest = chain_hash(*head)
            rows.append((*head, digest))
            prev = digest
        tips[qid] = (seq, prev)
    return rows


class Transaction(Protocol):
    """One open write transaction of an `EventLog` (see `EventLog.transact`).

    SQL is written with ``?`` placeholders for every backend.
    """

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query, read inside the transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows (dicts of column values) into ``table``."""

    def append(self, calls: Sequence[PendingCall]) -> None:
        """Chain and insert ``calls`` after each quantum's tip, read in this transaction."""


class _SQLiteTransaction:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self.tips: dict[str, tuple[int, str | None]] = {}

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._cursor.execute(sql, tuple(params)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._cursor.execute(sql, tuple(params)).rowcount

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            columns = list(rows[0])
            quoted = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table.name} ({quoted}) VALUES ({marks})"
            self._cursor.executemany(sql, [tuple(r[c] for c in columns) for r in rows])

    def append(self, calls: Sequence[PendingCall]) -> None:
        for qid in {c.quantum_id for c in calls}:
            tip = self._cursor.execute(_TIP_SQL, (qid,)).fetchone()
            self.tips[qid] = (tip[0], tip[1]) if tip else (0, None)
        self._cursor.executemany(_INSERT_SQL, chain_rows(calls, self.tips))


def _named(sql: str, params: Sequence[Any]) -> tuple[TextClause, dict[str, Any]]:
    """``?`` placeholders as SQLAlchemy's ``:p0, :p1, ...`` and their values."""
    bound = sql
    names = [f"p{i}" for i in range(len(params))]
    for name in names:
        bound = bound.replace("?", f":{name}", 1)
    return text(bound), dict(zip(names, params, strict=True))


class _CoreTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        statement, values = _named(sql, params)
        return [tuple(r) for r in self._conn.execute(statement, values)]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        statement, values = _named(sql, params)
        return int(self._conn.execute(statement, values).rowcount)

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(insert(table), list(rows))

    def append(self, calls: Sequence[PendingCall]) -> None:
        tips: dict[str, tuple[int, str | None]] = {}
        for qid in sorted({c.quantum_id for c in calls}):
            tip = self.rows(_TIP_SQL, [qid])
            tips[qid] = (tip[0][0], tip[0][1]) if tip else (0, None)
        names = EVENT_COLUMNS[1:]
        self._conn.execute(
            insert(events), [dict(zip(names, r, strict=True)) for r in chain_rows(calls, tips)]
        )


class _Appender(Protocol):
    def write(self, calls: Sequence[PendingCall], extra: Sequence[tuple[Any, list[Any]]]) -> None:
        """Append ``calls`` (and insert ``extra`` rows first) in one transaction."""

    def transact(self, body: Callable[[Transaction], _T]) -> _T:
        """Run ``body`` inside one write transaction, committed when it returns."""

    def query(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a read-only query."""

    def close(self) -> None:
        """Release the connection."""


class _StaleTipError(Exception):
    """A remembered chain tip was stale: another writer appended to that quantum."""


class _SQLiteAppender:
    """Appends through the driver connection; one held connection, cached statements."""

    def __init__(self, conn: sqlite3.Connection, where: str, durability: Durability) -> None:
        self._conn = conn
        self._where = where
        #: quantum id -> (quantum_seq, hash) of the last event this connection committed.
        self._tips: dict[str, tuple[int, str | None]] = {}
        conn.isolation_level = None  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = " + ("FULL" if durability == "full" else "NORMAL"))
        # Appends run their statements on one cursor: conn.execute makes a new one each time.
        self._cursor = conn.cursor()
        #: Whether this writer turned WAL on (before its first write; a writer that
        #: never writes leaves the file as it found it, byte for byte).
        self._wal = where == ":memory:"

    def _begin(self) -> None:
        if not self._wal:
            wal_on(self._conn, self._where)
            self._wal = True
        # busy_timeout covers waiting for the write lock; this loop covers the rare
        # SQLITE_BUSY returned without waiting (e.g. while a WAL is being recovered).
        deadline: float | None = None  # read the clock only when a retry is needed
        while True:
            try:
                self._cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise translate_sqlite_error(e, self._where) from e
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _BUSY_TIMEOUT_S
                if now > deadline:
                    raise translate_sqlite_error(e, self._where) from e
                time.sleep(0.005)

    def write(self, calls: Sequence[PendingCall], extra: Sequence[tuple[Any, list[Any]]]) -> None:
        # Reading a quantum's tip costs a query per append (~10% of a bare INSERT +
        # COMMIT), so the tip this connection committed last is reused. It can only
        # be stale if another writer appended to that quantum since; then the row
        # numbered after it exists, UNIQUE(quantum_id, quantum_seq) refuses ours and
        # the transaction is rolled back whole: read the tips, chain again, write.
        try:
            self._write(calls, extra, remembered=self._tips)
        except _StaleTipError:
            self._tips.clear()
            self._write(calls, extra, remembered={})

    def _write(
        self,
        calls: Sequence[PendingCall],
        extra: Sequence[tuple[Any, list[Any]]],
        remembered: dict[str, tuple[int, str | None]],
    ) -> None:
        conn = self._cursor
        self._begin()
        trusted = False  # whether a remembered tip was used
        try:
            for table, rows in extra:
                if rows:
                    columns = list(rows[0])
                    quoted = ", ".join(f'"{c}"' for c in columns)
                    marks = ", ".join("?" * len(columns))
                    sql = f"INSERT INTO {table.name} ({quoted}) VALUES ({marks})"
                    conn.executemany(sql, [tuple(r[c] for c in columns) for r in rows])
            tips: dict[str, tuple[int, str | None]] = {}
            for call in calls:
                qid = call.quantum_id
                if qid in tips:
                    continue
                if qid in remembered:
                    tips[qid] = remembered[qid]
                    trusted = True
                else:
                    tip = conn.execute(_TIP_SQL, (qid,)).fetchone()
                    tips[qid] = (tip[0], tip[1]) if tip else (0, None)
            rows = chain_rows(calls, tips)
            if len(rows) == 1:
                conn.execute(_INSERT_SQL, rows[0])
            else:
                conn.executemany(_INSERT_SQL, rows)
            conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if trusted and isinstance(e, sqlite3.IntegrityError):
                raise _StaleTipError from e
            if isinstance(e, sqlite3.Error):
                raise translate_sqlite_error(e, self._where) from e
            raise
        self._tips.update(tips)  # chain_rows moved them to the rows just committed

    def transact(self, body: Callable[[Transaction], _T]) -> _T:
        cursor = self._cursor
        self._begin()
        tx = _SQLiteTransaction(cursor)
        try:
            result = body(tx)
            cursor.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                cursor.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise translate_sqlite_error(e, self._where) from e
            raise
        self._tips.update(tx.tips)
        return result

    def query(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        try:
            yield from self._conn.execute(sql.replace(":p", "?"), tuple(params))
        except sqlite3.Error as e:
            raise translate_sqlite_error(e, self._where) from e

    def close(self) -> None:
        try:
            if self._wal and self._where != ":memory:":
                finish_sqlite(self._conn, self._where)
        finally:
            self._conn.close()


class _CoreAppender:
    """Appends through SQLAlchemy Core (PostgreSQL and any other server database)."""

    def __init__(self, engine: Engine, where: str) -> None:
        self._engine = engine
        self._where = where

    @property
    def engine(self) -> Engine:
        """The engine (its pool hands each thread its own connection)."""
        return self._engine

    def write(self, calls: Sequence[PendingCall], extra: Sequence[tuple[Any, list[Any]]]) -> None:
        with self._engine.begin() as conn:
            lock_event_order(conn)  # first: every writer takes its locks in the same order
            for table, rows in extra:
                if rows:
                    conn.execute(insert(table), rows)
            tips: dict[str, tuple[int, str | None]] = {}
            for qid in sorted({c.quantum_id for c in calls}):
                tip = conn.execute(text(_TIP_SQL.replace("?", ":qid")), {"qid": qid}).fetchone()
                tips[qid] = (tip[0], tip[1]) if tip else (0, None)
            rows = chain_rows(calls, tips)
            names = EVENT_COLUMNS[1:]
            conn.execute(insert(events), [dict(zip(names, r, strict=True)) for r in rows])

    def transact(self, body: Callable[[Transaction], _T]) -> _T:
        try:
            with self._engine.begin() as conn:
                lock_event_order(conn)  # first: every writer takes its locks in the same order
                return body(_CoreTransaction(conn))
        except DBAPIError as e:
            raise migrate.translate_db_error(e, self._where) from e

    def query(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        statement, values = _named(sql, params)
        with self._engine.connect() as conn:
            yield from conn.execute(statement, values)

    def close(self) -> None:
        self._engine.dispose()


#: The advisory lock every PostgreSQL writer of events holds until it commits.
EVENT_ORDER_LOCK = 0x71_6C_65_64_67_65_72  # "qledger"


def lock_event_order(conn: Connection) -> None:
    """Serialise the writers of ``events`` on a server database, until commit.

    A global sequence hands out ``seq`` at insert time but rows become visible at
    commit: two overlapping writers could commit ``seq`` 7 after a reader has
    seen 8, and a reader following by ``seq`` would skip 7 for good. Holding one
    lock from before the first insert until commit makes ``seq`` order the
    commit order (SQLite's ``BEGIN IMMEDIATE`` does the same on a file). It also
    serialises appends to each quantum's chain.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_ORDER_LOCK})


class EventLog:
    """An open ledger for writing: appends calls durably, per the durability mode.

    ``full`` and ``normal`` commit each call before returning; ``batch`` buffers
    calls and writes every ``batch_size`` events, on `flush` and on `close`:
    a crash loses the unflushed tail. A batch writer holds the ledger alone.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        batch_size: int = 1000,
        create: bool = True,
    ) -> None:
        if durability not in _DURABILITIES:
            raise ValueError(f"durability must be one of {_DURABILITIES}, not {durability!r}")
        self.target = os.fspath(target)
        self.durability: Durability = durability
        self.batch_size = batch_size
        self._pending: list[PendingCall] = []
        self._pending_events = 0
        self._lock_fd: int | None = None
        self.where = migrate.display_target(self.target)
        self._log = _log.bind(ledger=self.where, durability=durability)
        #: the SQLite file (``:memory:``), or None for a server database
        self._path: str | None = None
        if is_sqlite_target(self.target):
            self._path = sqlite_path(self.target)
            self._appender: _Appender = self._open_sqlite(self._path, create)
        else:
            engine = server_engine(self.target)
            try:
                ensure_schema(engine, self.where, create=create)
            except DBAPIError as e:
                engine.dispose()
                raise migrate.translate_db_error(e, self.where) from e
            self._appender = _CoreAppender(engine, self.where)

    # --- opening ----------------------------------------------------------

    def _open_sqlite(self, path: str, create: bool) -> _SQLiteAppender:
        if path == ":memory:":
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            _create_sqlite(conn)
            return _SQLiteAppender(conn, path, self.durability)
        if not (os.path.exists(path) and os.path.getsize(path) > 0):
            if not create:
                raise LedgerNotFoundError(f"no ledger at {path}")
            create_ledger_file(path)
        self._take_writer_lock(path)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S)
        try:
            _check_sqlite(conn, path)
        except BaseException:
            conn.close()
            self._release_writer_lock()
            raise
        return _SQLiteAppender(conn, path, self.durability)

    def _take_writer_lock(self, path: str) -> None:
        # flock locks are independent of SQLite's own fcntl byte-range locks, so this
        # cannot interfere with them: writers share the lock, a batch writer owns it.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if self.durability == "batch" else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            who = "another writer" if self.durability == "batch" else "a batch-mode writer"
            raise LedgerBusyError(
                f"{path} is held by {who}; a batch-mode writer must be the only writer "
                "(wait for it to close, or use durability='normal')"
            ) from e
        self._lock_fd = fd

    def _release_writer_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # --- writing ----------------------------------------------------------

    def append(self, call: PendingCall) -> None:
        """Record one call: durable on return unless the mode is ``batch``."""
        if self.durability == "batch":
            self._pending.append(call)
            self._pending_events += len(call.entries)
            if self._pending_events >= self.batch_size:
                self.flush()
        else:
            self._appender.write((call,), ())

    def transact(self, body: Callable[[Transaction], _T]) -> _T:
        """Run ``body`` in one write transaction (after a flush); its result.

        On SQLite a ``BEGIN IMMEDIATE`` transaction, on PostgreSQL one holding the
        event-order lock: what ``body`` reads cannot change before it commits,
        so a check and the append that depends on it are one step (e.g. the
        check that no other process runs a quantum, and its ``quantum_started``).
        """
        self.flush()
        return self._appender.transact(body)

    @property
    def shared(self) -> bool:
        """Whether other processes can see this ledger (a file or a server, not ``:memory:``)."""
        return self._path != ":memory:"

    def side_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own short transaction and connection; rows changed.

        Safe from another thread than the writer's (a lease renewal timer): it
        never touches the held connection, its transaction or the batch buffer.
        """
        if self._path is None:
            statement, values = _named(sql, params)
            try:
                with self._side_engine().begin() as server:
                    return int(server.execute(statement, values).rowcount)
            except DBAPIError as e:
                raise migrate.translate_db_error(e, self.where) from e
        side = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            side.execute("BEGIN IMMEDIATE")
            changed = side.execute(sql, tuple(params)).rowcount
            side.execute("COMMIT")
            return changed
        except sqlite3.Error as e:
            raise translate_sqlite_error(e, self.where) from e
        finally:
            side.close()

    def _side_engine(self) -> Engine:
        assert isinstance(self._appender, _CoreAppender)
        return self._appender.engine

    def flush(self) -> None:
        """Write buffered calls (``batch`` mode) in one transaction.

        The buffer is emptied only once that transaction committed: when the
        write fails (e.g. `LedgerDiskFullError`) every buffered call is kept,
        and the next flush writes them all, in order, continuing the chain.
        """
        if self._pending:
            self._appender.write(self._pending, ())
            self._pending, self._pending_events = [], 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Stream rows through the writer's connection (after flushing)."""
        self.flush()
        return self._appender.query(sql, params)

    def close(self) -> None:
        """Flush, then release the connection and the writer lock.

        If the flush fails for want of space or of the lock
        (`LedgerDiskFullError`, `LedgerBusyError`), the log stays open with its
        buffer, so that a later ``close()`` (or ``flush()``) writes it.
        """
        try:
            self.flush()
        except (LedgerDiskFullError, LedgerBusyError):
            raise
        except BaseException:
            self._release()
            raise
        self._release()

    def _release(self) -> None:
        try:
            self._appender.close()
        finally:
            self._release_writer_lock()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- creation and schema checks --------------------------------------------------


def server_engine(url: str) -> Engine:
    """An engine on a server database; on PostgreSQL at READ COMMITTED, whatever the default.

    The event-order lock relies on it: a writer that waited for the lock must
    see what the previous holder committed, which a REPEATABLE READ snapshot
    taken before the wait would hide.
    """
    if connect.server_url(url).get_backend_name() == "postgresql":
        return connect.server_engine(url, isolation_level="READ COMMITTED")
    return connect.server_engine(url)


def ensure_schema(
    engine: Engine, where: str, *, create: bool, info: Mapping[str, str] | None = None
) -> None:
    """Check a server database's schema; with ``create``, first create it when empty.

    ``info`` adds rows to ``ledger_info`` when the schema is created here.
    """
    with engine.begin() as conn:
        if create and migrate.current_revision(conn) is None:
            lock_event_order(conn)  # two first writers: one creates, the other waits
            if migrate.current_revision(conn) is None:
                migrate.upgrade(conn)
                _write_info(conn, info)
        migrate.check_schema(conn, where)


def create_ledger_file(path: str, info: Mapping[str, str] | None = None) -> None:
    """Create a ledger at ``path`` atomically: build it aside, then link it into place.

    Several processes may race to create the same ledger; ``os.link`` refuses to
    replace an existing file, so exactly one wins and the others use its file.
    ``info`` adds rows to its ``ledger_info``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise LedgerNotFoundError(f"cannot create ledger {path}: no directory {directory}")
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.creating"
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            _create_sqlite(conn, info)
            # Move everything into the main file now, or fail here: close() would keep a
            # WAL it cannot checkpoint (a full disk), and the file linked into place below
            # must be whole on its own (its WAL keeps the temporary name and is removed).
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                raise LedgerBusyError(f"cannot create ledger {path}: its new file stayed busy")
        finally:
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(path) == 0:
                os.unlink(path)  # an empty placeholder is not a ledger yet
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp + suffix)


def wal_on(conn: sqlite3.Connection, where: str) -> None:
    """Put a ledger file in WAL mode for writing (a finished one was left out of it).

    The mode is kept in the file's header, so this is a no-op while another
    writer has it on; switching waits (busy timeout) for readers holding locks.

    Raises:
        LedgerBusyError: the file stayed locked for longer than the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            # Read at once: that creates -wal and -shm, which readers take as the sign of a
            # writer; between the switch and this read, a reader reads the file immutable.
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            return
        except sqlite3.OperationalError as e:
            # The switch needs the file to itself and SQLite may refuse it at once, without
            # its busy handler, while another writer switches too: try again until the timeout.
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise translate_sqlite_error(e, where) from e
            time.sleep(0.01)
        except sqlite3.Error as e:
            raise translate_sqlite_error(e, where) from e


def finish_sqlite(conn: sqlite3.Connection, where: str) -> bool:
    """At a writer's clean close, leave the ledger file self-contained; whether it was.

    ``journal_mode = DELETE`` checkpoints the whole WAL into the file, removes
    ``-wal`` and ``-shm`` and marks the header "not WAL", so that any reader
    (ours, ``sqlite3``, Datasette) reads the file alone, with no write access
    and without creating anything beside it. SQLite does it only for the file's
    only connection: while another writer, or a reader through the WAL, is
    connected it refuses at once and nothing changes (the last writer to close
    does it; the next writer turns WAL on again, see `wal_on`).

    Durability is unchanged: the checkpoint copies committed pages and syncs
    before the WAL is removed, and a kill at any point leaves either the WAL
    (replayed by the next opener) or the file with everything in it; a kill
    while the header itself is rewritten leaves a one-page journal that readers
    recognise as harmless (see `ledger.store.readonly`).
    """
    try:
        mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    except sqlite3.Error as e:  # another connection is open; or a failing disk: WAL stays
        _log.debug("ledger_left_in_wal", ledger=where, why=str(e))
        return False
    return bool(mode == "delete")


def finish_sqlite_file(path: str, release: Callable[[], None]) -> bool:
    """`finish_sqlite` for a file whose writers hold a pool of connections; whether it was.

    A connection of its own joins the file first, then ``release`` closes the
    pool's, then it finishes the file. Were the pool closed first, its last
    connection would remove ``-wal`` and ``-shm`` while the header still says
    WAL, and a reader opening in that moment would read the file immutable.
    """
    try:  # mode=rw: never create the file
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=rw", uri=True, timeout=0)
    except sqlite3.Error as e:
        release()
        _log.debug("ledger_left_in_wal", ledger=path, why=str(e))
        return False
    try:
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # joins the WAL
        finally:
            release()
        return finish_sqlite(conn, path)
    except sqlite3.Error as e:
        _log.debug("ledger_left_in_wal", ledger=path, why=str(e))
        return False
    finally:
        conn.close()


def _sqlite_engine(conn: sqlite3.Connection) -> Engine:
    """An engine over an existing driver connection (for Alembic and Core)."""
    return create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)


def _create_sqlite(conn: sqlite3.Connection, info: Mapping[str, str] | None = None) -> None:
    """Create the schema with the shipped migrations, then write ``ledger_info``."""
    conn.isolation_level = "DEFERRED"  # let SQLAlchemy/Alembic manage this transaction
    engine = _sqlite_engine(conn)
    with engine.begin() as sa_conn:
        migrate.upgrade(sa_conn)
        _write_info(sa_conn, info)


def _check_sqlite(conn: sqlite3.Connection, where: str) -> None:
    engine = _sqlite_engine(conn)
    with engine.connect() as sa_conn:
        migrate.check_schema(sa_conn, where)


def _write_info(conn: Connection, info: Mapping[str, str] | None = None) -> None:
    from .._version import __version__

    conn.execute(
        insert(ledger_info),
        [
            {"key": "schema_version", "value": migrate.HEAD_REVISION},
            {"key": "library_version", "value": __version__},
            {"key": "created_at", "value": utc_now()},
            *({"key": key, "value": value} for key, value in (info or {}).items()),
        ],
    )
