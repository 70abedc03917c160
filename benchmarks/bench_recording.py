"""Recording one call: the ledger's cost per call against bare SQLite and eventsourcing.

*Ledger cost per call* = a butler call with its ledger minus the same
datastore operation alone. The baselines are that datastore operation
followed by another recorder, minus the operation alone:

- a bare ``sqlite3`` INSERT + COMMIT of a copy of the row our ledger wrote for
  that call, into a table with the contract's least structure (rowid ``seq``,
  UNIQUE(quantum_id, quantum_seq)), WAL, the same ``synchronous``; for
  ``batch``, rows buffered and inserted 1000 per transaction;
- the ``eventsourcing`` package's SQLite recorder (``insert_events``), its
  connections set to the same ``synchronous``, a payload as long as our row;
  for ``batch``, 1000 events per ``insert_events``.

All of them are timed call by call in rotation (`common.timed_rounds`).
Also here: the per-call cost with 10, 1,000 and 100,000 events already recorded.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Figure, timed_rounds

from ledger import QuantumBackedButler
from ledger.datastore import FileDatastore
from ledger.store.log import Durability, PendingCall
from ledger.testing import QuantumFixture, make_quantum

__all__ = ["BARE_INSERT", "BARE_SCHEMA", "recording_figures", "scaling_figures"]

BARE_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, quantum_id TEXT NOT NULL, quantum_seq INTEGER NOT NULL,
    call_id INTEGER NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL, dataset_id TEXT,
    outcome TEXT NOT NULL, error_type TEXT, error_message TEXT, detail TEXT,
    recorded_at TEXT NOT NULL, prev_hash TEXT, hash TEXT NOT NULL,
    UNIQUE (quantum_id, quantum_seq))
"""
BARE_INSERT = (
    "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
    "outcome, error_type, error_message, detail, recorded_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CALLS = ("stored", "get", "put")

# Why a missed target's remaining cost cannot be removed (shown only when missed).
_WHY_BARE = {
    "batch": "In batch the bare baseline is an amortised executemany (~3.5 µs a row); each of "
    "our events also pays a SHA-256 of the row for the chain (~1 µs), the call's record "
    "with its timestamp (~1 µs) and the butler's checks and buffering (~1 µs): Python per "
    "event that only an append path written in C would remove.",
    "put": "A put's event carries the artifact's datastore record: the butler turns it "
    "into the event's canonical-JSON detail (~4 µs) and the ledger hashes and writes a "
    "~550-character row, right after the put's file system calls, where this longer "
    "Python path runs on colder caches than a bare INSERT does. The note splits the cost "
    "between the ledger's append and the butler's bookkeeping.",
    "other": "Besides the same statements (plus BEGIN IMMEDIATE), each call runs the "
    "butler's type check, call record and the row's SHA-256 (a few µs of Python).",
}
_WHY_ES = {
    "batch": "eventsourcing stores a pre-serialised blob per event, with no hash chain and no "
    "per-call record; in batch its cost per event is its executemany, which ours pays too.",
    "other": "Both wait on the same SQLite commit; the rest is the butler's type check, "
    "call record and the row's SHA-256 (a few µs of Python).",
}
_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL", "batch": "NORMAL"}
_PER_TXN = {"normal": 1, "full": 1, "batch": 1000}


def probe_rows(tmp: Path) -> dict[str, tuple[Any, ...]]:
    """One row our ledger writes for each call (without ``seq``), to size the baselines."""
    fixture = make_quantum(tmp / "probe", n_inputs=1, n_outputs=1)
    butler = QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=tmp / "probe.ledger"
    )
    butler.stored(fixture.inputs[0])
    butler.get(fixture.inputs[0])
    butler.put({"i": 1}, fixture.outputs[0])
    rows = {
        row[4]: tuple(row)
        for row in butler._log.query(
            "SELECT quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, "
            "error_type, error_message, detail, recorded_at, prev_hash, hash FROM events"
        )
    }
    butler.finish()
    return {call: rows[call] for call in _CALLS}


def bare_recorder(
    path: Path, synchronous: str, row: tuple[Any, ...], per_txn: int
) -> Callable[[int], None]:
    """Record call ``i`` as a copy of ``row`` with a bare INSERT, committing every ``per_txn``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(BARE_SCHEMA)
    qid, rest = row[0], row[2:]
    pending: list[tuple[Any, ...]] = []

    def one(i: int) -> None:
        conn.execute("BEGIN")
        conn.execute(BARE_INSERT, (qid, i + 1, *rest))
        conn.execute("COMMIT")

    def buffered(i: int) -> None:
        pending.append((qid, i + 1, *rest))
        if len(pending) >= per_txn:
            conn.execute("BEGIN")
            conn.executemany(BARE_INSERT, pending)
            conn.execute("COMMIT")
            pending.clear()

    return one if per_txn == 1 else buffered


def eventsourcing_recorder(
    path: Path, synchronous: str, payload: int, per_txn: int
) -> Callable[[int], None] | None:
    """Record call ``i`` as one event through eventsourcing's SQLite recorder.

    With ``per_txn`` > 1, events are buffered and inserted ``per_txn`` per
    ``insert_events`` call (one transaction), as our ``batch`` mode does.
    """
    if importlib.util.find_spec("eventsourcing") is None:
        return None
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import (
        SQLiteAggregateRecorder,
        SQLiteConnection,
        SQLiteConnectionPool,
        SQLiteDatastore,
    )

    class Pool(SQLiteConnectionPool):
        """eventsourcing's pool, its connections set to our ``synchronous``."""

        def _create_connection(self) -> SQLiteConnection:
            connection = super()._create_connection()
            # eventsourcing leaves SQLite's default (FULL); the comparison needs ours.
            connection._sqlite_conn.execute(f"PRAGMA synchronous = {synchronous}")
            return connection

    datastore = SQLiteDatastore(str(path))
    datastore.pool = Pool(db_name=str(path))
    recorder = SQLiteAggregateRecorder(datastore, "stored_events")
    recorder.create_table()
    originator = uuid.uuid4()
    topic = "bench.Event"
    # Its row holds the originator id (32 hex), version, topic and state: the
    # state makes the row as long as ours.
    state = b"x" * max(1, payload - 32 - len(topic))
    pending: list[Any] = []

    def one(i: int) -> None:
        event = StoredEvent(
            originator_id=originator, originator_version=i + 1, topic=topic, state=state
        )
        if per_txn == 1:
            recorder.insert_events([event])
            return
        pending.append(event)
        if len(pending) >= per_txn:
            recorder.insert_events(pending)
            pending.clear()

    return one


def _row_size(row: tuple[Any, ...]) -> int:
    return sum(len(str(v)) for v in row if v is not None)


def _groups(
    tmp: Path,
    stores: Path,
    durability: Durability,
    butler: QuantumBackedButler,
    fixture: QuantumFixture,
    rows: dict[str, tuple[Any, ...]],
    puts: int,
) -> dict[str, dict[str, Callable[[int], Any]]]:
    """For each call: the datastore operation alone (the reference), the butler call,
    and the same datastore operation followed by each baseline recorder.

    Each put writes a new artifact, so every operation that puts has its own
    datastore (under ``stores``) and its own output refs.
    """
    sync, per_txn = _SYNCHRONOUS[durability], _PER_TXN[durability]
    ref = fixture.inputs[0]
    reader = butler.datastore
    groups: dict[str, dict[str, Callable[[int], Any]]] = {}
    for call in _CALLS:
        stem = tmp / f"{call}-{durability}"
        record: dict[str, Callable[[int], None]] = {
            "bare": bare_recorder(stem.with_suffix(".bare.db"), sync, rows[call], per_txn)
        }
        es = eventsourcing_recorder(
            stem.with_suffix(".es.db"), sync, _row_size(rows[call]), per_txn
        )
        if es is not None:
            record["eventsourcing"] = es
        if call == "put":
            # Our ledger's append alone, without the butler: where a put's cost goes.
            record["append"] = _append_recorder(tmp, durability, rows[call])
        ops: dict[str, Callable[[int], Any]] = {}
        if call == "put":
            for name in ("alone", *record):
                twin = make_quantum(stores / f"put-{durability}-{name}", n_inputs=0, n_outputs=puts)
                ops[name] = _put_then(FileDatastore(twin.root), twin.outputs, record.get(name))
            ops["ours"] = _put_then(butler, fixture.outputs, None)
        else:
            operation = reader.exists if call == "stored" else reader.get
            ops["alone"] = _then(operation, ref, None)
            ops["ours"] = _then(butler.stored if call == "stored" else butler.get, ref, None)
            for name, rec in record.items():
                ops[name] = _then(operation, ref, rec)
        # The reference first; then the others, in the rotation of timed_rounds.
        groups[call] = {"alone": ops.pop("alone"), **ops}
    return groups


def _append_recorder(
    tmp: Path, durability: Durability, row: tuple[Any, ...]
) -> Callable[[int], None]:
    """Record call ``i`` by appending ``row``'s event to a ledger of our own, no butler."""
    fixture = make_quantum(tmp / f"append-{durability}-repo", n_inputs=0, n_outputs=1)
    butler = QuantumBackedButler.initialize(
        fixture.root,
        fixture.quantum,
        ledger=tmp / f"append-{durability}.ledger",
        durability=durability,
    )
    log, qid = butler._log, butler._qid
    entry = (row[5], row[6], row[7], row[8], row[9])

    def append(i: int) -> None:
        log.append(PendingCall(qid, 1, row[4], [entry]))

    return append


def _then(
    operation: Callable[[Any], Any], ref: Any, rec: Callable[[int], None] | None
) -> Callable[[int], None]:
    """``operation(ref)``, then record call ``i`` with ``rec`` (if any)."""

    def both(i: int) -> None:
        operation(ref)
        if rec is not None:
            rec(i)

    return both


def _put_then(
    target: FileDatastore | QuantumBackedButler,
    outputs: list[Any],
    rec: Callable[[int], None] | None,
) -> Callable[[int], None]:
    """Put a tiny dataset as ``outputs[i]``, then record call ``i`` with ``rec`` (if any)."""

    def both(i: int) -> None:
        target.put({"i": i}, outputs[i])
        if rec is not None:
            rec(i)

    return both


def recording_figures(tmp: Path, quick: bool, stores: Path | None = None) -> list[Figure]:
    """Ledger cost per call at each durability, against bare SQLite and eventsourcing.

    Ledgers and baseline databases go to ``tmp``; datastores to ``stores`` (by
    default ``tmp`` too). On tmpfs, the file writes of puts leave no dirty
    pages behind whose writeback (milliseconds, at random) would land on
    whichever operation runs then, drowning differences of µs.
    """
    stores = stores or tmp
    rows = probe_rows(tmp)
    figures: list[Figure] = []
    es_figures: list[Figure] = []
    rounds = 5 if quick else 15
    durabilities: tuple[Durability, ...] = ("normal", "full", "batch")
    for durability in durabilities:
        per_txn = _PER_TXN[durability]
        # Calls per round; in batch a multiple of 1000, so every round flushes alike.
        per_round = {"normal": 1000, "full": 100, "batch": 2000}[durability]
        # Puts are ~100x slower and noisier than the rows they record: more of them.
        put_round = {"normal": 500, "full": 100, "batch": 2000}[durability]
        if quick:
            per_round, put_round = per_round // 2, put_round // 2
        fixture = make_quantum(
            stores / f"rec-{durability}", n_inputs=1, n_outputs=put_round * rounds
        )
        butler = QuantumBackedButler.initialize(
            fixture.root,
            fixture.quantum,
            ledger=tmp / f"rec-{durability}.ledger",
            durability=durability,
        )
        groups = _groups(tmp, stores, durability, butler, fixture, rows, put_round * rounds)
        results: dict[str, float] = {}
        for call, ops in groups.items():
            n = put_round if call == "put" else per_round
            results.update(timed_rounds({call: ops}, per_round=n, rounds=rounds))
        butler.finish()
        txn = ", 1000 rows per transaction" if per_txn > 1 else ""
        for call in _CALLS:
            cost, bare = results[f"{call}/ours-ref"], results[f"{call}/bare-ref"]
            note = (
                f"butler {results[f'{call}/ours']:.1f} µs, datastore alone "
                f"{results[f'{call}/alone']:.1f} µs; row of {_row_size(rows[call])} characters"
            )
            if call == "put":
                append = results[f"{call}/append-ref"]
                note += (
                    f"; of the cost, the ledger's append {append:.1f} µs (timed alone after "
                    f"a put), the butler's bookkeeping the other {cost - append:.1f} µs"
                )
            figures.append(
                Figure(
                    "record",
                    f"{call}, {durability}: ledger cost per call",
                    cost,
                    "µs",
                    bare,
                    f"bare INSERT+COMMIT{txn}",
                    "≤ 1.5x",
                    limit=1.5,
                    note=note,
                    why=_WHY_BARE[
                        "put" if call == "put" else "batch" if durability == "batch" else "other"
                    ],
                )
            )
            es = results.get(f"{call}/eventsourcing-ref")
            if es is not None:
                es_figures.append(
                    Figure(
                        "record",
                        f"{call}, {durability}: ledger cost vs eventsourcing",
                        cost,
                        "µs",
                        es,
                        "eventsourcing SQLite recorder per event"
                        + (", 1000 per insert_events" if per_txn > 1 else ""),
                        "< 1x",
                        met=cost < es,
                        why=_WHY_BARE["put"]
                        if call == "put"
                        else _WHY_ES["batch" if durability == "batch" else "other"],
                    )
                )
    if not es_figures:
        es_figures.append(
            Figure(
                "record",
                "ledger cost vs eventsourcing",
                None,
                "",
                note="eventsourcing is not installed (pip install -e '.[bench]')",
            )
        )
    return figures + es_figures


def scaling_figures(tmp: Path, quick: bool, make_ledger: Callable[..., str]) -> list[Figure]:
    """Ledger cost of ``stored`` (normal) with 10, 1,000 and 100,000 events already recorded.

    Each size is its own ledger (one quantum, resumed for a new attempt), and
    the three are timed in the same rounds against one datastore reference.
    """
    sizes = [10, 1_000, 100_000]
    fixture = make_quantum(tmp / "scale-repo", n_inputs=1, n_outputs=1)
    ref = fixture.inputs[0]
    ops: dict[str, Callable[[int], Any]] = {"alone": _then(fixture.datastore.exists, ref, None)}
    butlers = []
    for size in sizes:
        path = tmp / f"scale-{size}.ledger"
        make_ledger(path, size, fixture=fixture)
        butler = QuantumBackedButler.resume(fixture.root, path)
        butlers.append(butler)
        ops[f"{size}"] = _then(butler.stored, ref, None)
    result = timed_rounds(
        {"stored": ops}, per_round=500 if quick else 1000, rounds=5 if quick else 9
    )
    for butler in butlers:
        butler.finish()
    costs = {size: result[f"stored/{size}-ref"] for size in sizes}
    return [
        Figure(
            "scaling",
            f"stored, normal: ledger cost with {sizes[-1]:,} events already recorded",
            costs[sizes[-1]],
            "µs",
            costs[sizes[0]],
            f"the same with {sizes[0]} events",
            "flat (≤ 1.25x)",
            limit=1.25,
            note=", ".join(f"{k:,} events: {v:.1f} µs" for k, v in costs.items()),
        )
    ]
