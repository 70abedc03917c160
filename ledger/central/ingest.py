"""``qledger ingest``: merge ledger files into one central ledger, idempotently.

Each source is read whole through a read-only connection (its bytes never
change), its hash chains checked, then written with others in one transaction
per batch. Inside that transaction — the only writer of events until it
commits — the target's chains of the batch's quanta are read, and per quantum
only the events past the target's tip are copied, keeping their
``quantum_seq``, ``prev_hash`` and ``hash``: re-ingesting adds nothing, a
ledger that grew since (a retry) adds its tail, and a source that disagrees
with the target at some ``(quantum_id, quantum_seq)`` is refused whole, its
report naming both sources. A source that cannot be read is reported and
skipped; the others go on.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from .._logging import get_logger
from ..errors import (
    IngestConflictError,
    LedgerCorruptError,
    LedgerError,
    LedgerNotFoundError,
    MalformedRowError,
    NotALedgerError,
    SchemaTooNewError,
    TamperedError,
)
from ..events import EVENT_COLUMNS, definition_digest, utc_now
from ..sources import LEDGER_SUFFIXES, expand_ledgers
from ..store import migrate
from ..store.log import is_sqlite_target, lock_event_order, sqlite_path
from ..store.readonly import SQLiteReader
from ..store.schema import events, ingests, quanta
from ..store.validate import dataset_problem, event_problem, quanta_problem, show
from ..store.verify import ChainChecker, dataset_columns, quanta_columns
from .producers import several_producers
from .target import (
    begin_writing,
    check_central,
    chunks,
    close_target,
    open_target,
    placeholders,
)

__all__ = [
    "SOURCE_SUFFIXES",
    "DuplicateProducers",
    "IngestReport",
    "Producer",
    "SourceProblem",
    "expand_sources",
    "ingest",
    "read_source",
]

_log = get_logger(__name__)

#: File names a directory given to ingest is searched for (the same as every command's).
SOURCE_SUFFIXES = LEDGER_SUFFIXES

_QUANTA = quanta_columns()
_DATASETS = dataset_columns()
_EVENTS = EVENT_COLUMNS[1:]  # all but seq: the target numbers its own
_INGESTS = tuple(c.name for c in ingests.columns)


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)  # "user" is reserved on PostgreSQL


class SourceProblem(BaseModel):
    """A source that was not ingested, and why."""

    source: str
    kind: Literal["unreadable", "tampered", "conflict", "rejected"]
    message: str


class Producer(BaseModel):
    """A quantum that actually wrote a dataset, and the ledger file its events came from."""

    quantum_id: str
    task_label: str | None = None
    #: The source file of the events holding its ``put`` (None: recorded in the target itself).
    source: str | None = None

    def describe(self) -> str:
        """``quantum ID (task, from FILE)`` for a warning line."""
        where = f"from {self.source}" if self.source else "recorded in the target itself"
        return f"quantum {self.quantum_id} ({self.task_label or 'unknown task'}, {where})"


class DuplicateProducers(BaseModel):
    """A dataset that more than one quantum actually wrote: a fact ingest reports, not refuses.

    Lineage then shows both producers (and marks the dataset "2 producers").
    """

    dataset_id: str
    dataset_type: str | None = None
    data_id: dict[str, Any] = {}
    run: str | None = None
    producers: list[Producer]

    def message(self) -> str:
        """One line naming the dataset and every producer with its source."""
        data_id = " ".join(f"{k}={v}" for k, v in self.data_id.items())
        what = " ".join(x for x in (self.dataset_type, data_id) if x)
        named = [p.describe() for p in self.producers]
        listed = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
        return (
            f"dataset {what} run={self.run} ({self.dataset_id}) has {len(self.producers)} "
            f"producers: {listed}; lineage shows each"
        )


class IngestReport(BaseModel):
    """What an ingest did: counts, problems, and the target's high-water mark after it.

    ``duplicate_producers`` lists the datasets that this ingest made (or found)
    written by more than one quantum; they are ingested all the same.
    """

    target: str
    sources: int = 0
    ingested: int = 0
    unchanged: int = 0
    quanta: int = 0
    events: int = 0
    datasets: int = 0
    problems: list[SourceProblem] = []
    duplicate_producers: list[DuplicateProducers] = []
    seconds: float = 0.0
    high_water_mark: int = 0

    @property
    def ok(self) -> bool:
        """True when every source was ingested (or was there already)."""
        return not self.problems

    def summary(self) -> str:
        """One line for people."""
        rate = self.sources / self.seconds if self.seconds > 0 else 0.0
        problems = f", {len(self.problems):,} not ingested" if self.problems else ""
        n = len(self.duplicate_producers)
        twice = f"; {_count(n, 'dataset')} with several producers" if n else ""
        return (
            f"{_count(self.sources, 'ledger')} read in {self.seconds:.1f} s ({rate:,.0f}/s): "
            f"{self.ingested:,} added {_count(self.events, 'event')} of "
            f"{_count(self.quanta, 'quantum', 'quanta')} and "
            f"{_count(self.datasets, 'dataset row')}, {self.unchanged:,} "
            f"{'was' if self.unchanged == 1 else 'were'} there already{problems}; "
            f"{self.target} is at seq {self.high_water_mark:,}{twice}"
        )


def _count(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 ledger``, ``2 ledgers``: a number and its noun."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


@dataclass
class _Source:
    """A source ledger's rows, read whole (event rows in `EventRow` order, with seq)."""

    name: str
    quanta: list[tuple[Any, ...]]
    datasets: dict[str, list[tuple[Any, ...]]]
    events: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return sum(len(rows) for rows in self.events.values())


def expand_sources(items: Iterable[str], from_list: Iterable[str] = ()) -> list[str]:
    """Paths to ingest: a list's lines, then files and folders (see `ledger.sources`).

    Folders are walked recursively for names ending in `SOURCE_SUFFIXES`, in
    sorted order; blank lines and ``#`` comments of a list are skipped; a path
    given twice is read once.
    """
    listed = [line.strip() for line in from_list]
    named = [line for line in listed if line and not line.startswith("#")]
    return expand_ledgers([*named, *items]).ledgers


def read_source(path: str, *, verify: bool = True) -> _Source:
    """Read a ledger file whole, read-only, and check its chains.

    Raises:
        LedgerNotFoundError, NotALedgerError, SchemaTooNewError, LedgerCorruptError:
            the file cannot be read as a ledger.
        TamperedError: a hash chain (or a quantum's definition) does not verify.
    """
    if not os.path.isfile(path):
        raise LedgerNotFoundError(f"no ledger at {path}")
    reader = SQLiteReader(path, isolation_level=None)  # writes nothing, needs no write access
    conn = reader.conn
    try:
        # One read transaction: the quanta, datasets and events of one moment, even
        # while a worker is still appending to a shared ledger.
        conn.execute("BEGIN")
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            raise NotALedgerError(
                f"{path} is a database but not a ledger (no quantum-ledger schema in it)"
            ) from e
        # The tables read here are the same at every revision so far: older ones are welcome.
        if revision is None or revision[0] not in migrate.known_revisions():
            raise SchemaTooNewError(
                f"{path} has schema revision {revision[0] if revision else None}, unknown to "
                "this library: it was written by a newer quantum-ledger (upgrade the library)"
            )
        source = _Source(
            name=path,
            quanta=conn.execute(f"SELECT {_quoted(_QUANTA)} FROM quanta").fetchall(),
            datasets={},
        )
        for row in conn.execute(f"SELECT {_quoted(_DATASETS)} FROM datasets"):
            source.datasets.setdefault(row[0], []).append(row)
        for row in conn.execute("SELECT " + ", ".join(EVENT_COLUMNS) + " FROM events ORDER BY seq"):
            source.events.setdefault(row[1], []).append(row)
        reader.check_unchanged()  # an immutable read saw one moment, or says it did not
    except sqlite3.Error as e:
        raise reader.translate(e) from e
    finally:
        reader.close()
    _check_source(source, verify=verify)
    return source


def _check_source(source: _Source, *, verify: bool) -> None:
    """Refuse a source that breaks a rule (nothing of it is copied).

    Every value is checked (`ledger.store.validate`), so nothing that readers
    cannot read back enters the target; with ``verify`` the hash chains,
    attempts and definitions are checked too (`ChainChecker`).

    Raises:
        MalformedRowError: a row holds a value no recorder writes.
        TamperedError: a chain or a definition does not verify.
        LedgerCorruptError: a quantum has events but no quanta row.
    """
    refuse = f'not ingested (run "qledger verify {source.name}")'
    for row in source.quanta:
        problem = quanta_problem(row)
        if problem is not None:
            raise MalformedRowError(
                f"{source.name}: the quanta row of quantum {show(row[0])}: {problem}; {refuse}"
            )
    for rows in source.datasets.values():
        for row in rows:
            problem = dataset_problem(row)
            if problem is not None:
                raise MalformedRowError(
                    f"{source.name}: the datasets row of {show(row[1])} of quantum "
                    f"{show(row[0])}: {problem}; {refuse}"
                )
    known = {row[0]: row for row in source.quanta}
    for qid in source.events:
        if qid not in known:
            raise LedgerCorruptError(
                f"{source.name}: quantum {show(qid)} has events but no quanta row; {refuse}"
            )
    if not verify:
        for rows in source.events.values():
            for raw in rows:
                problem = event_problem(raw)
                if problem is not None:
                    raise MalformedRowError(
                        f"{source.name}: quantum {show(raw[1])} quantum_seq {show(raw[2])}: "
                        f"{problem}; {refuse}"
                    )
        return
    checker = ChainChecker()
    for rows in source.events.values():
        checker.feed(rows)
    if checker.problems:
        qid, _, message = checker.problems[0]
        raise TamperedError(f"{source.name}: quantum {qid}: {message}; {refuse}")
    for qid in source.events:
        expected = checker.started.get(qid)
        if expected is not None and expected != definition_digest(
            known[qid], source.datasets.get(qid, [])
        ):
            raise TamperedError(
                f"{source.name}: quantum {qid}: its quanta/datasets rows differ from those "
                f"recorded at its start; {refuse}"
            )


def _without_target(sources: Iterable[str], target: str, log: Any) -> Iterator[str]:
    """The sources, less the target itself (``qledger ingest dir/central.sqlite dir/``)."""
    mine = os.path.realpath(sqlite_path(target)) if is_sqlite_target(target) else None
    for path in sources:
        if mine is not None and os.path.realpath(path) == mine:
            log.info("the target is among the sources: not read", source=path)
            continue
        yield path


def _read_ahead(
    pool: ProcessPoolExecutor, paths: Iterable[str], verify: bool, jobs: int
) -> Iterator[_Source | SourceProblem]:
    """`_read_or_problem` of each path in the pool, in order, a bounded way ahead.

    Paths go to the workers 8 at a time (one round trip per 8 files, not per
    file), at most 4 such chunks per worker ahead of the writer: memory stays
    flat when the writer is slower than the readers.
    """
    pending: collections.deque[Future[list[_Source | SourceProblem]]] = collections.deque()
    chunk: list[str] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == _CHUNK:
            pending.append(pool.submit(_read_many, chunk, verify))
            chunk = []
            if len(pending) >= 4 * jobs:
                yield from pending.popleft().result()
    if chunk:
        pending.append(pool.submit(_read_many, chunk, verify))
    while pending:
        yield from pending.popleft().result()


_CHUNK = 8


def _end_with_parent(parent: int) -> None:
    """In each reading process: end when the ingest that forked it ends, even by SIGKILL.

    Linux ends it with the parent (``PR_SET_PDEATHSIG``); elsewhere, and for a
    parent already gone, a thread notices the parent's pid change.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # orphaned: nobody reads what this process would produce


def _read_many(paths: list[str], verify: bool) -> list[_Source | SourceProblem]:
    return [_read_or_problem(path, verify=verify) for path in paths]


def _read_or_problem(path: str, *, verify: bool) -> _Source | SourceProblem:
    """`read_source`, with a source that cannot be used turned into its `SourceProblem`."""
    try:
        return read_source(path, verify=verify)
    except LedgerError as e:
        kind: Literal["unreadable", "tampered"] = (
            "tampered" if isinstance(e, TamperedError) else "unreadable"
        )
        return SourceProblem(source=path, kind=kind, message=str(e))


class _Batch:
    """Sources staged for one transaction, and the rows they add."""

    def __init__(self) -> None:
        self.sources: list[_Source] = []
        self.n_events = 0

    def add(self, source: _Source) -> None:
        self.sources.append(source)
        self.n_events += source.n_events


def ingest(
    target: str | os.PathLike[str],
    sources: Iterable[str],
    *,
    verify: bool = True,
    batch_events: int = 50_000,
    batch_sources: int = 500,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    into_existing: bool = False,
) -> IngestReport:
    """Copy the quanta, datasets and events of ledger files into ``target``.

    Args:
        target: a SQLite path or a database URL; created when new.
        sources: paths of ledger files (see `expand_sources` for directories).
        verify: check each source's hash chains and definitions first (a
            source that fails is refused whole). On by default.
        batch_events, batch_sources: a transaction is committed when the staged
            sources reach either bound.
        jobs: processes that read and verify sources while this one writes
            (1: read them here, in turn).
        progress: called with each source's path once it is read.
        into_existing: write into ``target`` even if it is a ledger a butler
            wrote rather than a central one (see `check_central`).

    Returns:
        An `IngestReport`; sources that could not be ingested are in its
        ``problems`` (the others are ingested all the same).

    Raises:
        NotACentralLedgerError: ``target`` is a butler's ledger file (the target
            forgotten: ``qledger ingest a.ledger b.ledger``) and not ``into_existing``.
        LedgerDiskFullError: the disk under the target is full (batches committed
            before stay; run the same ingest again once there is room).
        LedgerError: the target cannot be opened or written.
    """
    started = time.perf_counter()
    where = migrate.display_target(os.fspath(target))
    log = _log.bind(target=where)
    report = IngestReport(target=where)
    paths = _without_target(sources, os.fspath(target), log)
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            # Forked (a caller's script needs no __main__ guard), and all at once now,
            # before the target is opened: the workers inherit none of its connections.
            # They only read files; a caller should not hold other threads meanwhile
            # (the CLI's progress bar refreshes without one).
            context = multiprocessing.get_context("fork")
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=jobs,
                    mp_context=context,
                    initializer=_end_with_parent,
                    initargs=(os.getpid(),),
                )
            )
            pool.submit(int).result()  # with fork, the first submit starts every worker
            read: Iterator[_Source | SourceProblem] = _read_ahead(pool, paths, verify, jobs)
        else:
            read = (_read_or_problem(path, verify=verify) for path in paths)
        engine = open_target(target)
        stack.callback(engine.dispose)
        check_central(engine, where, into_existing=into_existing)
        begin_writing(engine)
        stack.callback(close_target, engine)  # first: it disposes, then finishes the file
        batch = _Batch()
        seen: set[str] = set()  # quanta that got events in this run
        for item in read:
            report.sources += 1
            if isinstance(item, SourceProblem):
                report.problems.append(item)
                log.info("source skipped", source=item.source, reason=item.message)
            else:
                batch.add(item)
            if progress is not None:
                progress(item.source if isinstance(item, SourceProblem) else item.name)
            if batch.n_events >= batch_events or len(batch.sources) >= batch_sources:
                _write(engine, batch, report, where, seen)
                batch = _Batch()
        if batch.sources:
            _write(engine, batch, report, where, seen)
        with engine.connect() as conn:
            report.high_water_mark = int(
                conn.exec_driver_sql("SELECT COALESCE(MAX(seq), 0) FROM events").scalar_one()
            )
            added = report.events
            if conn.dialect.name == "postgresql" and added and added * 10 >= report.high_water_mark:
                # A tenth of the rows or more are new: refresh the planner's statistics now
                # (autovacuum would, later), or lineage's plans scan whole tables (measured:
                # 2.5 s instead of 80 ms on 10,000 quanta). About a second.
                conn.exec_driver_sql("ANALYZE quanta, datasets, events, ingests")
                conn.commit()
    report.seconds = time.perf_counter() - started
    log.info("ingest done", **report.model_dump(exclude={"problems", "target"}))
    return report


@dataclass
class _Tally:
    """What one transaction adds to the report, applied only once it has committed."""

    ingested: int = 0
    unchanged: int = 0
    quanta: set[str] = field(default_factory=set)
    events: int = 0
    datasets: int = 0
    problems: list[SourceProblem] = field(default_factory=list)
    duplicates: list[DuplicateProducers] = field(default_factory=list)

    def apply(self, report: IngestReport, seen: set[str]) -> None:
        seen |= self.quanta
        report.ingested += self.ingested
        report.unchanged += self.unchanged
        report.quanta = len(seen)
        report.events += self.events
        report.datasets += self.datasets
        report.problems.extend(self.problems)
        known = {d.dataset_id: n for n, d in enumerate(report.duplicate_producers)}
        for found in self.duplicates:  # a later batch may add a third producer: keep the latest
            if found.dataset_id in known:
                report.duplicate_producers[known[found.dataset_id]] = found
            else:
                report.duplicate_producers.append(found)


def _write(engine: Engine, batch: _Batch, report: IngestReport, where: str, seen: set[str]) -> None:
    """Write one batch in one transaction; if the target refuses it, each source alone.

    A row the database will not store (PostgreSQL refuses a NUL character in
    text, which SQLite keeps) fails its whole transaction: the batch is then
    retried one source per transaction, so only the source at fault is
    reported (``rejected``) and the others go in.
    """
    try:
        _write_sources(engine, batch.sources, where).apply(report, seen)
        return
    except (DataError, IntegrityError) as e:
        if len(batch.sources) == 1:
            _rejected(batch.sources[0], e, where).apply(report, seen)
            return
        _log.info("batch refused, writing its sources one by one", reason=str(e.orig))
    except DBAPIError as e:  # e.g. the disk is full: this batch rolled back, earlier ones stay
        raise migrate.translate_db_error(e, where) from e
    for source in batch.sources:
        try:
            _write_sources(engine, [source], where).apply(report, seen)
        except (DataError, IntegrityError) as e:
            _rejected(source, e, where).apply(report, seen)
        except DBAPIError as e:
            raise migrate.translate_db_error(e, where) from e


def _rejected(source: _Source, error: DataError | IntegrityError, where: str) -> _Tally:
    reason = migrate.one_line(str(error.orig))
    message = f"{source.name}: {where} refused its rows ({reason}); not ingested"
    _log.info("source rejected", source=source.name, reason=message)
    return _Tally(problems=[SourceProblem(source=source.name, kind="rejected", message=message)])


def _write_sources(engine: Engine, sources: Sequence[_Source], where: str) -> _Tally:
    """Write sources in one transaction, refusing those that conflict; what it added."""
    by = f"{socket.gethostname()}:{os.getpid()}"
    tally = _Tally()
    with engine.begin() as conn:
        lock_event_order(conn)  # the only writer of events until commit
        qids = sorted(
            {qid for s in sources for qid in s.events}
            | {row[0] for s in sources for row in s.quanta}
        )
        chains, known = _existing(conn, qids)
        new_events: list[tuple[Any, ...]] = []
        new_quanta: list[tuple[Any, ...]] = []
        new_datasets: list[tuple[Any, ...]] = []
        new_ingests: list[tuple[Any, ...]] = []
        now = utc_now()
        for source in sources:
            try:
                tails = _tails(conn, source, chains, where)
            except IngestConflictError as e:
                tally.problems.append(
                    SourceProblem(source=source.name, kind="conflict", message=str(e))
                )
                _log.info("source conflicts", source=source.name, reason=str(e))
                continue
            added = 0
            for qid, tail in tails.items():
                if not tail:
                    continue
                chain = chains.setdefault(qid, {})
                for raw in tail:
                    chain[raw[2]] = (raw[13], source.name)
                new_events.extend(raw[1:] for raw in tail)
                new_ingests.append(
                    (qid, tail[0][2], tail[-1][2], tail[-1][13], len(tail), source.name, now, by)
                )
                added += len(tail)
                tally.quanta.add(qid)
            for row in source.quanta:
                if row[0] not in known:
                    known.add(row[0])
                    new_quanta.append(row)
                    new_datasets.extend(source.datasets.get(row[0], []))
            tally.events += added
            if added:
                tally.ingested += 1
            else:
                tally.unchanged += 1
        tally.datasets = len(new_datasets)
        for table, columns, rows in (
            ("quanta", _QUANTA, new_quanta),
            ("datasets", _DATASETS, new_datasets),
            ("events", _EVENTS, new_events),
            ("ingests", _INGESTS, new_ingests),
        ):
            if rows:
                conn.exec_driver_sql(
                    f"INSERT INTO {table} ({_quoted(columns)}) "
                    f"VALUES ({placeholders(conn, len(columns))})",
                    rows,
                )
        # new_events rows are EVENT_COLUMNS less seq: kind, dataset_id, outcome at 4, 5, 6
        written = {r[5] for r in new_events if r[4] == "put" and r[6] == "ok" and r[5] is not None}
        if written:
            tally.duplicates = _duplicate_producers(conn, written)
            for found in tally.duplicates:
                _log.info("dataset with several producers", message=found.message())
    return tally


def _json_object(value: Any) -> dict[str, Any]:
    """A data ID's JSON text as a dict ({} for what is not one: a message never fails)."""
    try:
        loaded = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _duplicate_producers(conn: Connection, dataset_ids: set[str]) -> list[DuplicateProducers]:
    """Of the datasets this transaction wrote, those more than one quantum actually wrote."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"

    def query(sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(conn.exec_driver_sql(sql.replace("?", mark), tuple(params)))

    several = several_producers(query, conn.dialect.name, dataset_ids)
    found = []
    for did, qids in sorted(several.items()):
        rows = query(
            "SELECT dataset_type, data_id, run FROM datasets WHERE dataset_id = ? AND "
            "role = 'output' LIMIT 1",
            [did],
        )
        dataset_type, data_id, run = rows[0] if rows else (None, None, None)
        producers = []
        for qid in qids:
            task = query("SELECT task_label FROM quanta WHERE quantum_id = ?", [qid])
            source = query(
                "SELECT i.source FROM ingests i WHERE i.quantum_id = ? AND i.first_quantum_seq <= "
                "(SELECT MAX(e.quantum_seq) FROM events e WHERE e.quantum_id = ? AND "
                "e.dataset_id = ? AND e.kind = 'put' AND e.outcome = 'ok') "
                "ORDER BY i.first_quantum_seq DESC LIMIT 1",
                [qid, qid, did],
            )
            producers.append(
                Producer(
                    quantum_id=qid,
                    task_label=task[0][0] if task else None,
                    source=source[0][0] if source else None,
                )
            )
        found.append(
            DuplicateProducers(
                dataset_id=did,
                dataset_type=dataset_type,
                data_id=_json_object(data_id),
                run=run,
                producers=producers,
            )
        )
    return found


def _existing(
    conn: Connection, qids: Sequence[str]
) -> tuple[dict[str, dict[int, tuple[str, str | None]]], set[str]]:
    """The target's chains of these quanta (quantum_seq -> (hash, source)) and known quanta."""
    chains: dict[str, dict[int, tuple[str, str | None]]] = {}
    known: set[str] = set()
    for chunk in chunks(qids):
        for qid, qseq, digest in conn.execute(
            select(events.c.quantum_id, events.c.quantum_seq, events.c.hash).where(
                events.c.quantum_id.in_(chunk)
            )
        ):
            chains.setdefault(qid, {})[qseq] = (digest, None)
        known.update(
            conn.execute(
                select(quanta.c.quantum_id).where(quanta.c.quantum_id.in_(chunk))
            ).scalars()
        )
    return chains, known


def _tails(
    conn: Connection,
    source: _Source,
    chains: dict[str, dict[int, tuple[str, str | None]]],
    where: str,
) -> dict[str, list[tuple[Any, ...]]]:
    """Per quantum, the source's events past the target's tip (checked to agree before it).

    Raises:
        IngestConflictError: the source and the target differ at some quantum_seq.
    """
    tails: dict[str, list[tuple[Any, ...]]] = {}
    for qid, rows in source.events.items():
        chain = chains.get(qid, {})
        tip = max(chain, default=0)
        for raw in rows:
            qseq = raw[2]
            if qseq > tip:
                break
            held = chain.get(qseq)
            if held is None or held[0] != raw[13]:
                raise IngestConflictError(
                    f"{source.name}: quantum {qid} quantum_seq {qseq} differs from the event "
                    f"{where} holds there ({_origin(conn, qid, qseq, held, where)}); the two "
                    "ledgers recorded different histories of one quantum, so this one was not "
                    "ingested (verify both, and keep the genuine one)"
                )
        tail = [raw for raw in rows if raw[2] > tip]
        if tail and (tail[0][2] != tip + 1 or tail[0][12] != chain.get(tip, (None,))[0]):
            raise IngestConflictError(
                f"{source.name}: quantum {qid} continues at quantum_seq {tail[0][2]}, which does "
                f"not chain onto the event {where} holds at {tip} "
                f"({_origin(conn, qid, tip, chain.get(tip), where)}); not ingested"
            )
        tails[qid] = tail
    return tails


def _origin(
    conn: Connection,
    qid: str,
    qseq: int,
    held: tuple[str, str | None] | None,
    where: str,
) -> str:
    """Where the target's event at (qid, qseq) came from, for a conflict message."""
    if held is not None and held[1] is not None:
        return f"ingested from {held[1]} in this run"
    row = conn.execute(
        select(ingests.c.source, ingests.c.ingested_at).where(
            ingests.c.quantum_id == qid,
            ingests.c.first_quantum_seq <= qseq,
            ingests.c.last_quantum_seq >= qseq,
        )
    ).first()
    if row is None:
        return f"recorded directly in {where}" if held is not None else "it has none"
    return f"ingested from {row[0]} at {row[1]}"
