"""Recording cost per call: our butler versus a bare sqlite3 INSERT+COMMIT, same run.

Usage: ``python benchmarks/bench_record.py [--calls N]``. Prints a table of µs
per call. "Ledger cost" is the butler call minus the same datastore operation
alone, so it is what the ledger adds. The bare baseline inserts a row of the
same size into a table with the contract's least structure: rowid ``seq`` and
UNIQUE(``quantum_id``, ``quantum_seq``), in WAL at the same ``synchronous``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger import QuantumBackedButler
from ledger.events import utc_now
from ledger.testing import make_quantum

BARE_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, quantum_id TEXT NOT NULL, quantum_seq INTEGER NOT NULL,
    call_id INTEGER NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL, dataset_id TEXT,
    outcome TEXT NOT NULL, error_type TEXT, error_message TEXT, detail TEXT,
    recorded_at TEXT NOT NULL, prev_hash TEXT, hash TEXT NOT NULL,
    UNIQUE (quantum_id, quantum_seq))
"""


def _per_call(fn: Callable[[int], Any], n: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean µs per call of ``fn(i)`` for i in range(n)."""
    results = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(r * n + i)
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


def bare_insert(tmp: Path, synchronous: str, n: int, per_txn: int = 1) -> float:
    """µs per row of a bare INSERT + COMMIT (``per_txn`` rows per transaction)."""
    conn = sqlite3.connect(tmp / f"bare-{synchronous}-{per_txn}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(BARE_SCHEMA)
    qid = str(uuid.uuid4())
    row = (
        qid,
        0,
        0,
        1,
        "stored",
        str(uuid.uuid4()),
        "ok",
        None,
        None,
        None,
        utc_now(),
        "a" * 64,
        "b" * 64,
    )
    sql = (
        "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
        "outcome, error_type, error_message, detail, recorded_at, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def one(i: int) -> None:
        conn.execute("BEGIN")
        conn.executemany(sql, [(qid, i * per_txn + k, *row[2:]) for k in range(per_txn)])
        conn.execute("COMMIT")

    us = _per_call(one, max(1, n // per_txn)) / per_txn
    conn.close()
    return us


def butler_costs(tmp: Path, durability: str, n: int) -> dict[str, float]:
    """µs per butler call (stored / get / put) and per datastore-only call."""
    fixture = make_quantum(tmp / f"repo-{durability}", n_inputs=1, n_outputs=3 * n + 3)
    ref = fixture.inputs[0]
    butler = QuantumBackedButler.initialize(
        fixture.root,
        fixture.quantum,
        ledger=tmp / f"{durability}.ledger",
        durability=durability,  # type: ignore[arg-type]
    )
    ds = butler.datastore
    outputs = iter(fixture.outputs)
    ds_outputs = iter(
        make_quantum(tmp / f"ds-{durability}", n_inputs=0, n_outputs=3 * n + 3).outputs
    )
    from ledger.datastore import FileDatastore

    plain = FileDatastore(tmp / f"ds-{durability}")
    result = {
        "stored": _per_call(lambda i: butler.stored(ref), n),
        "stored (datastore)": _per_call(lambda i: ds.exists(ref), n),
        "get": _per_call(lambda i: butler.get(ref), n),
        "get (datastore)": _per_call(lambda i: ds.get(ref), n),
        "put": _per_call(lambda i: butler.put({"i": i}, next(outputs)), n // 10 or 1, 1),
        "put (datastore)": _per_call(
            lambda i: plain.put({"i": i}, next(ds_outputs)), n // 10 or 1, 1
        ),
    }
    butler.finish()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bare = {
            "normal": bare_insert(tmp, "NORMAL", args.calls),
            "full": bare_insert(tmp, "FULL", args.calls // 4),
            "batch": bare_insert(tmp, "NORMAL", args.calls * 10, per_txn=1000),
        }
        print(
            f"{'durability':<10} {'call':<8} {'butler':>9} {'datastore':>10} "
            f"{'ledger':>8} {'bare':>8} {'ratio':>6}"
        )
        for durability in ("normal", "full", "batch"):
            n = args.calls if durability != "full" else args.calls // 4
            costs = butler_costs(tmp, durability, n)
            for call in ("stored", "get", "put"):
                ours, alone = costs[call], costs[f"{call} (datastore)"]
                ledger_cost = ours - alone
                ratio = ledger_cost / bare[durability]
                print(
                    f"{durability:<10} {call:<8} {ours:9.1f} {alone:10.1f} "
                    f"{ledger_cost:8.1f} {bare[durability]:8.1f} {ratio:6.2f}"
                )


if __name__ == "__main__":
    main()
