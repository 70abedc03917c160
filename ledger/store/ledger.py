"""`Ledger`: open a ledger for reading; events, replay, verify, head, quantum.

Opening never writes: a SQLite file is opened by the reader's rule
(`ledger.store.readonly`: through its WAL, read-only, when a writer may be
active; ``immutable`` when none is), so inspecting a ledger needs no write
access and leaves its folder as it was, file for file and byte for byte.
Replay streams rows through the driver cursor into the pure fold; memory grows
with distinct datasets, not events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from ..errors import (
    LedgerChangedError,
    LedgerCorruptError,
    LedgerError,
    LedgerNotFoundError,
    MalformedDetailError,
    MalformedRowError,
    OutOfRangeError,
    PathEscapeError,
    UnknownAttemptError,
    UnknownQuantumError,
)
from ..events import Event, EventRow, row_to_event
from ..model import DatasetRef, DatasetType
from ..provenance import ProvenanceFold, QuantumProvenanceData
from ..quantum import Quantum
from ..records import DatastoreRecordData, StoredFileInfo
from . import catalog, connect, migrate
from .connect import is_sqlite_target, sqlite_path
from .lease import all_leases, liveness
from .readonly import SQLiteReader
from .validate import (
    QUANTA_COLUMNS,
    check_dataset,
    check_event,
    check_quanta,
    detail_problem,
    is_time,
    is_uuid,
    show,
)
from .verify import Head, VerifyReport, verify_ledger

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["Head", "Ledger", "QuantumInfo", "VerifyReport"]

_T = TypeVar("_T")

_EVENT_SELECT = "SELECT " + ", ".join(EventRow._fields) + " FROM events"
# The fold reads the detail of put and prune only, but a CASE that drops the others
# costs more per row (measured: ~5% of a replay) than the few other details it saves.
_REPLAY_SELECT = "SELECT kind, dataset_id, outcome, detail FROM events"


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    """The revision stamped in a SQLite file's ``alembic_version``, or None when there is none.

    Read with the driver alone: reading a SQLite ledger never imports SQLAlchemy.
    """
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if found is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


class QuantumInfo(BaseModel):
    """One row of ``quanta``: who ran what, where."""

    model_config = ConfigDict(frozen=True)

    quantum_id: uuid.UUID
    task_label: str
    data_id: dict[str, int | str]
    run: str | None
    created_at: str
    host: str
    pid: int
    user: str
    python_version: str
    library_version: str
    datastore_name: str | None


class _Cursor(sqlite3.Cursor):
    """A cursor whose ``close`` is harmless once the ledger is closed.

    A caller that stops reading a `Ledger.rows` stream (a reader of stdout gone,
    an exception) may let the generator be collected after the ledger closed;
    closing its cursor then must not raise "Cannot operate on a closed database".
    """

    def close(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):
            super().close()


_SQL_INT_MAX = 2**63 - 1  # the largest integer SQLite and PostgreSQL's BIGINT hold


def _vanished(error: sqlite3.Error) -> bool:
    """Whether SQLite could not open a file it had a moment before (a journal switch)."""
    return "unable to open database file" in str(error)


def _sql_int(value: int, name: str) -> int:
    """``value`` as an int a query can bind, or a named error for one no ledger can hold."""
    number = int(value)
    if not -_SQL_INT_MAX - 1 <= number <= _SQL_INT_MAX:
        raise OutOfRangeError(
            f"{name}={number} is beyond any value a ledger holds (at most {_SQL_INT_MAX}); "
            "give a smaller one, or none"
        )
    return number


def _to_until_text(until: datetime) -> str:
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return until.astimezone(UTC).isoformat(timespec="microseconds")


class Ledger:
    """A ledger opened for reading (a SQLite file, or any SQLAlchemy URL).

    A SQLite file is read through the driver (`SQLiteReader`); a server
    database through a SQLAlchemy engine. Only the latter imports SQLAlchemy.
    """

    def __init__(
        self, target: str, *, engine: Engine | None = None, reader: SQLiteReader | None = None
    ) -> None:
        if (engine is None) == (reader is None):
            raise TypeError("a ledger reads through an engine or a SQLite reader, one of them")
        self.target = target
        #: The target as messages show it (a URL's password hidden).
        self.where = migrate.display_target(target)
        self._engine = engine
        self._reader = reader
        self._raw = reader.conn if reader is not None else None
        #: The connection of an open `snapshot` on a server database, and its depth.
        self._held: Connection | None = None
        self._depth = 0

    # --- opening ------------------------------------------------------------

    @classmethod
    def open(cls, target: str | os.PathLike[str]) -> Ledger:
        """Open ``target`` read-only and check its schema.

        Raises:
            LedgerNotFoundError: no such file.
            NotALedgerError: not SQLite, or SQLite without the ledger tables.
            SchemaTooOldError / SchemaTooNewError: the schema is not this library's.
        """
        where = os.fspath(target)
        if not is_sqlite_target(where):
            return cls._open_server(where)
        path = sqlite_path(where)
        if path == ":memory:":
            raise LedgerError("an in-memory ledger lives only inside its butler")
        for tries in itertools.count():
            if not os.path.isfile(path):
                raise LedgerNotFoundError(f"no ledger at {path}")
            ledger = cls(path, reader=SQLiteReader(path, check_same_thread=False))
            try:
                assert ledger._raw is not None
                migrate.check_revision(_sqlite_revision(ledger._raw), ledger.where)
            except sqlite3.Error as e:
                ledger.close()
                if tries < 3 and _vanished(e):
                    # A writer switched the journal between our look at the file and the
                    # open (its -wal/-shm went): look again and choose the read anew.
                    time.sleep(0.01)
                    continue
                raise migrate.translate_db_error(e, ledger.where) from e
            except BaseException:
                ledger.close()
                raise
            return ledger
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _open_server(cls, url: str) -> Ledger:
        from sqlalchemy.exc import DBAPIError

        ledger = cls(url, engine=connect.server_engine(url))
        try:
            with ledger._server().connect() as conn:
                migrate.check_schema(conn, ledger.where)
        except DBAPIError as e:
            ledger.close()
            raise migrate.translate_db_error(e, ledger.where) from e
        except BaseException:
            ledger.close()
            raise
        return ledger

    def _server(self) -> Engine:
        """The engine of a server ledger."""
        if self._engine is None:
            raise TypeError("a SQLite ledger is read through its one connection; use rows()")
        return self._engine

    def close(self) -> None:
        """Release the connection."""
        if self._reader is not None:
            self._reader.close()
        if self._engine is not None:
            self._engine.dispose()

    def _refresh(self) -> None:
        """Before a read outside a snapshot: re-open a SQLite file a writer changed since.

        A connection opened ``immutable`` (no writer was active) reads the file as
        it was; once a writer started or changed it, the next read opens again by
        the reader's rule, so it sees what was committed since, as a WAL reader does.
        """
        if self._reader is not None and self._reader.stale():
            self._raw = self._reader.reopen()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- low-level reading ------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read every query inside the block from one moment of the ledger.

        A ledger may be written while it is read (a worker still appending to a
        shared file, an ingest into a central database). Queries run one after
        the other would each see a later moment: a quantum's ``quanta`` row
        without the events read before it, and so a false report of tampering.
        Inside the block, SQLite reads in one read transaction (a WAL snapshot)
        and a server database in one REPEATABLE READ transaction. Blocks nest.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self._raw is not None:
            try:
                self._refresh()
                self._raw.execute("BEGIN")
                self._raw.execute("SELECT 1 FROM ledger_info LIMIT 1").fetchall()  # pin it now
            except sqlite3.Error as e:
                raise self._translate(e) from e
        else:
            self._hold()
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._release()
        if self._reader is not None:
            self._reader.check_unchanged()  # what an immutable read saw was one moment

    def _hold(self) -> None:
        """Begin the REPEATABLE READ transaction of a snapshot of a server ledger."""
        from sqlalchemy.exc import DBAPIError

        try:
            self._held = (
                self._server().connect().execution_options(isolation_level="REPEATABLE READ")
            )
            self._held.begin()
        except DBAPIError as e:
            self._release()
            raise migrate.translate_db_error(e, self.where) from e

    def _translate(self, e: sqlite3.Error) -> LedgerError:
        """A driver error while reading a SQLite file, as the library's error."""
        if self._reader is not None:
            return self._reader.translate(e)
        return migrate.translate_db_error(e, self.where)

    def _release(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(sqlite3.Error):
                self._raw.execute("ROLLBACK")
        elif self._held is not None:
            from sqlalchemy.exc import DBAPIError

            held, self._held = self._held, None
            with contextlib.suppress(DBAPIError):
                held.rollback()
            held.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Generator[tuple[Any, ...], None, None]:
        """Stream the rows of a query written with ``?`` placeholders."""
        if self._raw is not None:
            if not self._depth:
                self._refresh()
            try:
                yield from self._raw.cursor(_Cursor).execute(sql, tuple(params))
            except sqlite3.Error as e:
                raise self._translate(e) from e
            if not self._depth and self._reader is not None:
                self._reader.check_unchanged()  # what an immutable read saw was one moment
            return
        yield from self._server_rows(sql, params)

    def _server_rows(
        self, sql: str, params: Sequence[Any]
    ) -> Generator[tuple[Any, ...], None, None]:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        names = [f"p{i}" for i in range(len(params))]
        bound = sql
        for name in names:
            bound = bound.replace("?", f":{name}", 1)
        try:
            if self._held is not None:
                result = self._held.execution_options(
                    stream_results=True, yield_per=10_000
                ).execute(text(bound), dict(zip(names, params, strict=True)))
                try:
                    for row in result:
                        yield tuple(row)
                finally:
                    result.close()
                return
            with self._server().connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                    text(bound), dict(zip(names, params, strict=True))
                )
                for row in result:
                    yield tuple(row)
        except DBAPIError as e:
            if not connect.connection_lost(e):
                raise  # a query of ours the server refused: a bug, not the environment
            raise migrate.translate_db_error(e, self.where) from e

    def server_connection(self) -> Connection:
        """A new connection to a server ledger, outside any `snapshot`; the caller closes it.

        For checks that need a transaction of their own and roll it back.
        """
        return self._server().connect()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (or another SQLAlchemy dialect name)."""
        return "sqlite" if self._raw is not None else self._server().dialect.name

    def shipped_view(self, name: str) -> str:
        """``(SELECT ...) AS name``: a view as the shipped migrations define it, to query from.

        The views in the file are the ledger's own, and a ledger could carry one
        that says what its events do not: readers that want a view's rows
        query its shipped definition for the ledger's schema revision instead.
        """
        ((revision,),) = self.rows("SELECT version_num FROM alembic_version")
        body = catalog.shipped_views(str(revision), self.dialect)[name]
        return f"({body}) AS {name}"

    # --- quanta -------------------------------------------------------------------

    def quantum_ids(self) -> list[uuid.UUID]:
        """Every quantum in the ledger, in order of creation."""
        ids = []
        for (qid,) in self.rows("SELECT quantum_id FROM quanta ORDER BY created_at"):
            if not is_uuid(qid):
                raise MalformedRowError(
                    f"{self.where}: quanta holds quantum_id {show(qid)}, not a canonical UUID; "
                    f'the ledger was damaged or edited (run "qledger verify {self.where}")'
                )
            ids.append(uuid.UUID(qid))
        return ids

    def resolve_quantum(self, quantum_id: uuid.UUID | str | None) -> str:
        """The id as stored; with None, the ledger's only quantum.

        Raises:
            UnknownQuantumError: no such quantum, or None with several in the ledger.
        """
        if quantum_id is not None:
            qid = str(uuid.UUID(str(quantum_id)))
            if not list(self.rows("SELECT 1 FROM quanta WHERE quantum_id = ?", [qid])):
                raise UnknownQuantumError(f"{self.where} holds no quantum {qid}")
            return qid
        ids = [r[0] for r in self.rows("SELECT quantum_id FROM quanta LIMIT 2")]
        if not ids:
            raise UnknownQuantumError(f"{self.where} holds no quanta yet")
        if len(ids) > 1:
            raise UnknownQuantumError(
                f"{self.where} holds several quanta; name one (qledger show {self.where} "
                "lists them)"
            )
        return str(ids[0])

    def info(self, quantum_id: uuid.UUID | str | None = None) -> QuantumInfo:
        """The ``quanta`` row of one quantum."""
        qid = self.resolve_quantum(quantum_id)
        columns = list(QUANTA_COLUMNS)
        (row,) = self.rows(
            "SELECT " + ", ".join(f'"{c}"' for c in columns) + " FROM quanta WHERE quantum_id = ?",
            [qid],
        )
        check_quanta(row, self.where)
        values = dict(zip(columns, row, strict=True))
        values["data_id"] = json.loads(values["data_id"])
        return QuantumInfo.model_validate(values)

    def quantum(self, quantum_id: uuid.UUID | str | None = None) -> Quantum:
        """Rebuild the `Quantum` from the ledger alone (its id is the quantum id)."""
        qid = self.resolve_quantum(quantum_id)
        info = self.info(qid)
        inputs: dict[str, list[DatasetRef]] = {}
        outputs: dict[str, list[DatasetRef]] = {}
        init_inputs: dict[str, DatasetRef] = {}
        records: dict[str, list[StoredFileInfo]] = {}
        for row in self.rows(
            "SELECT quantum_id, dataset_id, role, connection, position, dataset_type, dimensions, "
            "storage_class, data_id, run, datastore_records FROM datasets WHERE quantum_id = ? "
            "ORDER BY role, connection, position",
            [qid],
        ):
            check_dataset(row, self.where)
            _, dsid, role, connection, _, dtype, dims, sclass, data_id, run, recs = row
            ref = DatasetRef(
                dataset_type=DatasetType(
                    name=dtype, dimensions=tuple(json.loads(dims)), storage_class=sclass
                ),
                data_id=json.loads(data_id),
                run=run,
                id=uuid.UUID(dsid),
            )
            if role == "input":
                inputs.setdefault(connection, []).append(ref)
            elif role == "init_input":
                init_inputs[connection] = ref
            else:
                outputs.setdefault(connection, []).append(ref)
            for name, rows in (json.loads(recs) if recs else {}).items():
                records.setdefault(name, []).extend(
                    StoredFileInfo.model_validate({"dataset_id": dsid, **r}) for r in rows
                )
        return Quantum(
            task_label=info.task_label,
            data_id=info.data_id,
            inputs={k: tuple(v) for k, v in inputs.items()},
            init_inputs=init_inputs,
            outputs={k: tuple(v) for k, v in outputs.items()},
            datastore_records={k: DatastoreRecordData.from_records(v) for k, v in records.items()},
            id=uuid.UUID(qid),
        )

    def predicted(self, quantum_id: str) -> tuple[list[str], list[str]]:
        """The predicted input ids and output ids of one quantum, as stored text."""
        inputs: list[str] = []
        outputs: list[str] = []
        for dsid, role in self.rows(
            "SELECT dataset_id, role FROM datasets WHERE quantum_id = ?", [quantum_id]
        ):
            (outputs if role == "output" else inputs).append(dsid)
        return inputs, outputs

    # --- events and replay ------------------------------------------------------------

    def events(
        self,
        quantum_id: uuid.UUID | str | None = None,
        *,
        kind: str | Sequence[str] | None = None,
        dataset_id: uuid.UUID | str | None = None,
        outcome: str | Sequence[str] | None = None,
        attempt: int | None = None,
        until: int | datetime | None = None,
        after_seq: int | None = None,
    ) -> Iterator[Event]:
        """Typed events in ``seq`` order, filtered; all quanta when ``quantum_id`` is None.

        ``after_seq`` keeps only events with a larger ``seq``: a follower passes
        the last ``seq`` it saw (or `high_water_mark` from before) and never
        misses one, because writers commit in ``seq`` order (see `follow`).
        """
        where: list[str] = []
        params: list[Any] = []
        if after_seq is not None:
            where.append("seq > ?")
            params.append(_sql_int(after_seq, "after_seq"))
        qid = None if quantum_id is None else self.resolve_quantum(quantum_id)
        if qid is not None:
            where.append("quantum_id = ?")
            params.append(qid)
        for column, value in (("kind", kind), ("outcome", outcome)):
            if value is not None:
                values = [value] if isinstance(value, str) else list(value)
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(str(v) for v in values)
        if dataset_id is not None:
            where.append("dataset_id = ?")
            params.append(str(uuid.UUID(str(dataset_id))))
        if attempt is not None:  # a filter: an attempt no quantum made matches nothing
            where.append("attempt = ?")
            params.append(_sql_int(attempt, "attempt"))
        self._until(until, where, params, qid)
        sql = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        rows = self.rows(sql, params)
        for row in rows:
            try:
                check_event(row, self.where)
                event = row_to_event(row)
            except (MalformedRowError, PathEscapeError):
                rows.close()  # now, while the connection is open
                raise
            except (TypeError, ValueError) as e:  # a damaged page: NULLs or junk in a row
                rows.close()
                raise LedgerCorruptError(
                    f"{self.where}: the event at seq {row[0]} cannot be read ({e}); the file "
                    "is damaged: restore it from a copy (sqlite3's .recover salvages readable rows)"
                ) from e
            yield event

    def high_water_mark(self) -> int:
        """The largest committed ``seq`` (0 when empty): every event up to it is visible.

        Writers hold one lock from their first insert to their commit (SQLite's
        ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so ``seq`` order is
        commit order and no event at or below the mark can still appear later.
        """
        rows = self._again_if_changed(
            lambda: list(self.rows("SELECT COALESCE(MAX(seq), 0) FROM events"))
        )
        return int(rows[0][0])

    def follow(self, after_seq: int = 0, *, limit: int = 10_000) -> list[EventRow]:
        """Up to ``limit`` stored rows with ``seq`` above ``after_seq``, in ``seq`` order.

        A reader of a central ledger polls with the last ``seq`` it saw; because
        ``seq`` order is commit order, it never skips an event that commits late.
        """
        sql = _EVENT_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?"
        params = [_sql_int(after_seq, "after_seq"), _sql_int(limit, "limit")]
        return self._again_if_changed(lambda: [EventRow(*row) for row in self.rows(sql, params)])

    def _again_if_changed(self, read: Callable[[], _T]) -> _T:
        """``read()``, read once more if a writer changed an immutable file meanwhile.

        For reads that return whole results (nothing was handed out yet): the
        second read opens the file again by the reader's rule, with its locks.
        """
        try:
            return read()
        except LedgerChangedError:
            if self._depth:
                raise  # inside a snapshot: the caller's block is what must be read again
            return read()

    def _until(
        self,
        until: int | datetime | None,
        where: list[str],
        params: list[Any],
        quantum_id: str | None = None,
    ) -> None:
        """Filter to the events "until" a quantum_seq, or a time (see `replay`)."""
        if until is None:
            return
        if not isinstance(until, datetime):
            where.append("quantum_seq <= ?")
            params.append(_sql_int(until, "until"))
            return
        # A time cuts each quantum's events in order at its first event stamped after
        # it, so a clock that went backwards never yields a state that never existed.
        at = _to_until_text(until)
        if quantum_id is not None:
            ((cut,),) = self.rows(
                "SELECT MIN(quantum_seq) FROM events WHERE quantum_id = ? AND recorded_at > ?",
                [quantum_id, at],
            )
            if cut is not None:
                where.append("quantum_seq < ?")
                params.append(int(cut))
            return
        where.append(
            "NOT EXISTS (SELECT 1 FROM events AS later WHERE later.quantum_id = events.quantum_id"
            " AND later.quantum_seq <= events.quantum_seq AND later.recorded_at > ?)"
        )
        params.append(at)

    def fold(
        self,
        quantum_id: uuid.UUID | str | None = None,
        *,
        until: int | datetime | None = None,
        attempt: int | None = None,
    ) -> ProvenanceFold:
        """Replay one quantum into a `ProvenanceFold` (its raw state)."""
        qid = self.resolve_quantum(quantum_id)
        fold = ProvenanceFold(*self.predicted(qid))
        where = ["quantum_id = ?"]
        params: list[Any] = [qid]
        if attempt is not None:
            self._check_attempt(qid, attempt)
            where.append("attempt = ?")
            params.append(_sql_int(attempt, "attempt"))
        self._until(until, where, params, qid)
        table, order = "events", "quantum_seq"
        if self._raw is not None and self._one_quantum():
            # A one-quantum file (the common case): read the table in rowid order instead
            # of walking the (quantum_id, quantum_seq) index and fetching each row from
            # the table. Within a quantum, seq order is quantum_seq order (appends chain
            # in order; verify checks it).
            table, order = "events NOT INDEXED", "seq"
        sql = (
            _REPLAY_SELECT.replace("FROM events", f"FROM {table}")
            + " WHERE "
            + " AND ".join(where)
            + f" ORDER BY {order}"
        )
        rows = self.rows(sql, params)
        try:
            fold.apply_all(rows)
            fold.result()  # parse and check the surviving puts' records here, to map errors
        except (ValueError, AttributeError, TypeError, RecursionError) as e:
            rows.close()  # now, while the connection is open
            bad = self._malformed_row(qid)
            if bad is None:
                raise
            raise bad from e
        return fold

    def _check_attempt(self, quantum_id: str, attempt: int) -> None:
        """Refuse an attempt the quantum never made.

        Raises:
            UnknownAttemptError: ``attempt`` is not one of the quantum's attempts.
            OutOfRangeError: ``attempt`` is past what any ledger holds.
        """
        number = _sql_int(attempt, "attempt")
        ((low, high),) = self.rows(
            "SELECT MIN(attempt), MAX(attempt) FROM events WHERE quantum_id = ?", [quantum_id]
        )
        if low is not None and (type(low) is not int or type(high) is not int):
            return  # a damaged row: the read that follows names it (verify reports it)
        if low is not None and low <= number <= high:
            return
        if low is None:
            raise UnknownAttemptError(
                f"{self.where}: quantum {quantum_id} has no attempt recorded yet, so no "
                f"attempt {number}"
            )
        span = f"attempt {low} only" if low == high else f"attempts {low}..{high}"
        raise UnknownAttemptError(
            f"{self.where}: quantum {quantum_id} has {span}; there is no attempt {number} "
            "(give one of those, or none)"
        )

    def _one_quantum(self) -> bool:
        """Whether the ledger holds a single quantum."""
        return len(list(self.rows("SELECT quantum_id FROM quanta LIMIT 2"))) == 1

    def _malformed_row(self, qid: str) -> LedgerError | None:
        """The error naming the first event of a quantum that breaks a rule, if one does."""
        rows = self.rows(_EVENT_SELECT + " WHERE quantum_id = ? ORDER BY quantum_seq", [qid])
        for row in rows:
            try:
                check_event(row, self.where)
            except (MalformedRowError, PathEscapeError) as e:
                rows.close()
                return e
        return None

    def replay(
        self,
        quantum_id: uuid.UUID | str | None = None,
        until: int | datetime | None = None,
        *,
        attempt: int | None = None,
    ) -> QuantumProvenanceData:
        """The provenance of one quantum as of ``until`` (a quantum_seq or a time).

        Events are folded in order (``quantum_seq``, which is ``seq`` order within
        a quantum). ``until`` as an int keeps the events with ``quantum_seq <=
        until``. As a datetime (naive means UTC) it gives the state after the
        last event before the quantum's first event whose ``recorded_at`` is
        later than ``until``: a prefix of the events, so a clock that went
        backwards never yields a state that never existed (an output without
        the inputs read before it). ``attempt`` then keeps that attempt's events.
        """
        qid = self.resolve_quantum(quantum_id)
        return self.fold(qid, until=until, attempt=attempt).result(self.datastore_names(qid))

    def datastore_names(self, quantum_id: uuid.UUID | str | None = None) -> list[str]:
        """The datastores a quantum's provenance lists: its datastore, or a chain's children.

        A quantum recorded over a chained datastore (`ledger.lsst.RecordingButler`)
        names every child in its first ``quantum_started`` (``datastore_names``),
        as upstream's provenance lists each; any other names its one datastore.
        """
        qid = self.resolve_quantum(quantum_id)
        name = next(
            iter(self.rows("SELECT datastore_name FROM quanta WHERE quantum_id = ?", [qid]))
        )[0]
        first = list(
            self.rows(
                "SELECT detail FROM events WHERE quantum_id = ? AND kind = 'quantum_started' "
                "ORDER BY quantum_seq LIMIT 1",
                [qid],
            )
        )
        text = first[0][0] if first else None
        if type(text) is str and '"datastore_names"' in text:
            names = json.loads(text).get("datastore_names")
            if isinstance(names, list) and all(type(n) is str for n in names) and names:
                return list(names)
        return [name] if name is not None else []

    # --- integrity ----------------------------------------------------------------------

    def head(self, quantum_id: uuid.UUID | str | None = None) -> Head:
        """The tip of one quantum's chain: last quantum_seq, its hash, the terminal kind."""
        qid = self.resolve_quantum(quantum_id)
        rows = list(
            self.rows(
                "SELECT quantum_seq, hash, kind FROM events WHERE quantum_id = ? "
                "ORDER BY quantum_seq DESC LIMIT 1",
                [qid],
            )
        )
        if not rows:
            return Head(quantum_id=uuid.UUID(qid), quantum_seq=0, hash=None, terminal=None)
        seq, digest, kind = rows[0]
        if type(seq) is not int or type(digest) is not str:
            raise MalformedRowError(
                f"{self.where}: quantum {qid}: its last event has quantum_seq {show(seq)} and hash "
                f'{show(digest)}; the ledger was damaged or edited (run "qledger verify '
                f'{self.where}")'
            )
        terminal = kind if kind in ("quantum_succeeded", "quantum_failed") else None
        return Head(quantum_id=uuid.UUID(qid), quantum_seq=seq, hash=digest, terminal=terminal)

    def verify(self, head: Head | Mapping[str, Any] | Sequence[Head] | None = None) -> VerifyReport:
        """Recompute every hash chain; with ``head``, also catch a cut-off tail."""
        heads: list[Head] = []
        if isinstance(head, Head):
            heads = [head]
        elif isinstance(head, Mapping):
            heads = [Head.model_validate(head)]
        elif head is not None:
            heads = [h if isinstance(h, Head) else Head.model_validate(h) for h in head]
        return self._again_if_changed(lambda: verify_ledger(self, heads))

    def status(self) -> list[dict[str, Any]]:
        """One dict per quantum, with the columns of the ``quantum_status`` view, and liveness.

        Computed from the events with this library's own SQL, not read from the
        view: the view lives in the file, and a ledger could carry one that
        says what its events do not (``verify`` reports such a view). Every
        value is checked on the way (`ledger.store.validate`).

        Values are as the view's, but ``caveats``: a list (empty when the success
        has none; None when the quantum did not succeed), where the view has its
        JSON text. Besides the view's columns (whose ``status`` is ``succeeded``,
        ``failed`` or ``interrupted``: no terminal event), each dict has ``state``: the
        status, except ``running`` for a quantum without a terminal event whose
        lease is fresh; ``process``: for a quantum without a terminal event, its
        `ledger.store.lease.Liveness` (``running``, ``expired``, ``dead``,
        ``closed``; without a lease ``possibly still running`` or ``unknown``),
        else None; ``host`` and ``pid`` that recorded the latest attempt (its
        lease holder, if any); ``attempt_started_at``: when the latest attempt
        started (``started_at`` is the first's); ``lease_renewed_at`` and
        ``lease_expires_at``.

        Raises:
            MalformedRowError: a value the status is made of breaks a rule.
        """
        return self._again_if_changed(self._status)

    def _status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        with self.snapshot():
            for row in self.rows(_STATUS_SQL):
                quantum, values = row[:11], row[11:]
                check_quanta(quantum, self.where)
                result.append(self._status_row(quantum, *values))
            self._add_liveness(result)
        return result

    def _add_liveness(self, result: list[dict[str, Any]]) -> None:
        """Add whether each quantum runs (its lease), and who recorded its latest attempt."""
        leases = all_leases(self.rows, self.where)
        starts = self._latest_starts()
        for row in result:
            qid = str(row["quantum_id"])
            attempt = row["attempts"] if type(row["attempts"]) is int else 0  # verify: bad
            host, pid, row["attempt_started_at"] = starts.get(qid, (None, None, None))
            lease = leases.get(qid)
            if lease is not None and lease.attempt != attempt:
                lease = None  # a lease of an earlier attempt says nothing about this one
            if lease is not None:
                host, pid = lease.host, lease.pid
            row["host"], row["pid"] = host, pid
            row["lease_renewed_at"] = lease.renewed_at if lease is not None else None
            row["lease_expires_at"] = lease.expires_at if lease is not None else None
            process = (
                liveness(lease, attempt, (host, pid)) if row["status"] == "interrupted" else None
            )
            row["process"] = process
            row["state"] = "running" if process == "running" else row["status"]

    def _latest_starts(self) -> dict[str, tuple[str | None, int | None, str | None]]:
        """Per quantum: host, pid (else its row's) and time of its latest ``quantum_started``."""
        found: dict[str, tuple[str | None, int | None, str | None]] = {
            str(qid): (host, pid, None)
            for qid, host, pid in self.rows("SELECT quantum_id, host, pid FROM quanta")
        }
        for qid, detail, at in self.rows(
            "SELECT quantum_id, detail, recorded_at FROM events "
            "WHERE kind = 'quantum_started' ORDER BY seq"
        ):
            host, pid, _ = found.get(str(qid), (None, None, None))
            at = at if is_time(at) else None  # verify reports it
            if detail is not None and detail_problem("quantum_started", detail) is None:
                env = json.loads(detail)
                if isinstance(env, dict) and "host" in env:
                    host, pid = env.get("host"), env.get("pid")
                    pid = pid if type(pid) is int else None
            found[str(qid)] = (host, pid, at)
        return found

    def _status_row(
        self,
        quantum: Sequence[Any],
        attempts: int | None,
        n_events: int | None,
        n_get: int | None,
        n_put: int | None,
        n_stored: int | None,
        started_seq: int | None,
        ok_seq: int | None,
        failed_seq: int | None,
        started_at: str | None,
        last_seq: int | None,
        ok_at: str | None,
        ok_detail: str | None,
        failed_at: str | None,
        error_type: str | None,
        error_message: str | None,
        last_hash: str | None,
    ) -> dict[str, Any]:
        qid = quantum[0]
        started, ok, failed = started_seq or 0, ok_seq or 0, failed_seq or 0
        status = (
            "succeeded"
            if ok > started and ok > failed
            else "failed"
            if failed > started and failed > ok
            else "interrupted"
        )
        for what, value in (("started_at", started_at), ("ended_at", ok_at or failed_at)):
            if value is not None and not is_time(value):
                raise MalformedRowError(
                    f"{self.where}: quantum {qid}: its {what} {show(value)} is not a UTC time; "
                    f'the ledger was damaged or edited (run "qledger verify {self.where}")'
                )
        for what, value in (("error_type", error_type), ("error_message", error_message)):
            if value is not None and type(value) is not str:
                raise MalformedRowError(
                    f"{self.where}: quantum {qid}: its {what} is {show(value)}, not text; "
                    f'the ledger was damaged or edited (run "qledger verify {self.where}")'
                )
        caveats = None
        if status == "succeeded":
            problem = detail_problem("quantum_succeeded", ok_detail)
            if problem is not None:
                raise MalformedDetailError(
                    f"{self.where}: quantum {qid} quantum_seq {ok}: {problem}; the ledger was "
                    f'damaged or edited (run "qledger verify {self.where}")'
                )
            found = json.loads(ok_detail).get("caveats") if ok_detail else None
            caveats = list(found) if found is not None else []
        return {
            "quantum_id": qid,
            "task_label": quantum[1],
            "data_id": quantum[2],
            "status": status,
            "attempts": attempts or 0,
            "n_events": n_events or 0,
            "n_get": n_get or 0,
            "n_put": n_put or 0,
            "n_stored": n_stored or 0,
            "started_at": started_at,
            "ended_at": {"succeeded": ok_at, "failed": failed_at}.get(status),
            "error_type": error_type if status == "failed" else None,
            "error_message": error_message if status == "failed" else None,
            "last_seq": last_seq,
            "last_hash": last_hash,
            "caveats": caveats,
        }


#: ``quantum_status`` as the library computes it (the view's SQL less its JSON functions).
_STATUS_SQL = (
    "SELECT "
    + ", ".join(f'q."{c}"' for c in QUANTA_COLUMNS)
    + """,
       a.attempts, a.n_events, a.n_get, a.n_put, a.n_stored,
       a.started_seq, a.ok_seq, a.failed_seq, a.started_at, a.last_seq,
       t_ok.recorded_at, t_ok.detail, t_failed.recorded_at, t_failed.error_type,
       t_failed.error_message, t_last.hash
FROM quanta q
LEFT JOIN (
    SELECT quantum_id,
           MAX(attempt) AS attempts,
           COUNT(*) AS n_events,
           SUM(CASE WHEN kind = 'get' THEN 1 ELSE 0 END) AS n_get,
           SUM(CASE WHEN kind = 'put' THEN 1 ELSE 0 END) AS n_put,
           SUM(CASE WHEN kind = 'stored' THEN 1 ELSE 0 END) AS n_stored,
           MAX(CASE WHEN kind = 'quantum_started' THEN quantum_seq ELSE 0 END) AS started_seq,
           MAX(CASE WHEN kind = 'quantum_succeeded' THEN quantum_seq ELSE 0 END) AS ok_seq,
           MAX(CASE WHEN kind = 'quantum_failed' THEN quantum_seq ELSE 0 END) AS failed_seq,
           MIN(CASE WHEN kind = 'quantum_started' THEN recorded_at END) AS started_at,
           MAX(quantum_seq) AS last_seq
    FROM events
    GROUP BY quantum_id
) AS a ON a.quantum_id = q.quantum_id
LEFT JOIN events t_ok ON t_ok.quantum_id = q.quantum_id AND t_ok.quantum_seq = a.ok_seq
LEFT JOIN events t_failed
       ON t_failed.quantum_id = q.quantum_id AND t_failed.quantum_seq = a.failed_seq
LEFT JOIN events t_last ON t_last.quantum_id = q.quantum_id AND t_last.quantum_seq = a.last_seq
ORDER BY a.started_at
"""
)
