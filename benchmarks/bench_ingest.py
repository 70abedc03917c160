"""Ingest of many ledger files into a central ledger (SQLite, PostgreSQL), and lineage on it.

The corpus: ``N`` ledger files of one quantum and ~100 events each (start,
45 ``stored`` in one ``stored_many`` call, 45 ``get``, 8 ``put`` with their
datastore records, success), arranged as a pipeline so lineage has something
to walk: quantum (column c, step s) reads 4 outputs of (c, s-1) and 2 of
(c+1, s-1), ten steps deep. Files are made fast and honestly: a copy of an
empty ledger created by the migrations, then rows shaped exactly as the butler
writes them (``quantum_rows``' columns, the definition digest, events chained
by ``chain_rows``), so every file verifies — ingest checks that it does.

Ingest runs as ``qledger ingest`` does by default: the CPUs (up to 8) read and
verify sources while one process writes. Baseline: a bare copy of the same
rows — read each file with ``sqlite3``, ``executemany`` into tables with the
same columns and no constraints, one transaction per batch of the same size —
into SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ledger.central import ingest, lineage
from ledger.events import canonical_json, utc_now
from ledger.recording import environment
from ledger.store.ledger import Ledger
from ledger.store.log import EventLog, PendingCall, chain_rows
from ledger.store.verify import definition_rows_digest

__all__ = ["make_corpus", "run"]

_NS = uuid.UUID("6f1c1d6e-2f55-4c1b-9f5e-3c7e0c1f9a10")
_STEPS = 10
_N_INPUTS = 45
_N_OUTPUTS = 8
_DIMENSIONS = '["instrument", "visit", "detector"]'
_RUN = "bench/run"


def _id(*parts: object) -> str:
    return str(uuid.uuid5(_NS, ":".join(str(p) for p in parts)))


def _output(column: int, step: int, j: int) -> str:
    return _id("out", column, step, j)


def _record(dataset_id: str, j: int) -> str:
    return canonical_json(
        {
            "datastore": "files",
            "records": [
                {
                    "path": f"{_RUN}/calexp/visit={j}_detector=0_{dataset_id}.json",
                    "formatter": "json",
                    "storage_class": "StructuredDataDict",
                    "component": None,
                    "checksum": "0" * 64,
                    "file_size": 60,
                }
            ],
        }
    )


def _quantum(
    k: int, columns: int, env: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[PendingCall]]:
    """Rows and calls of quantum ``k`` (column, step) of the corpus."""
    column, step = k % columns, k // columns
    qid = _id("quantum", k)
    inputs: list[str] = []
    if step > 0:
        inputs += [_output(column, step - 1, j) for j in range(4)]
        inputs += [_output((column + 1) % columns, step - 1, j) for j in range(4, 6)]
    inputs += [_id("raw", k, j) for j in range(_N_INPUTS - len(inputs))]
    outputs = [_output(column, step, j) for j in range(_N_OUTPUTS)]
    data_id = canonical_json({"instrument": "BenchCam", "visit": column, "detector": step})
    quantum_row = {
        "quantum_id": qid,
        "task_label": f"step{step}",
        "data_id": data_id,
        "run": _RUN,
        "created_at": utc_now(),
        "datastore_name": "files",
        **env,
    }

    def dataset(role: str, position: int, dataset_id: str, kind: str) -> dict[str, Any]:
        return {
            "quantum_id": qid,
            "dataset_id": dataset_id,
            "role": role,
            "connection": kind,
            "position": position,
            "dataset_type": kind,
            "dimensions": _DIMENSIONS,
            "storage_class": "StructuredDataDict",
            "data_id": canonical_json({"instrument": "BenchCam", "visit": position}),
            "run": _RUN,
            "datastore_records": _record(dataset_id, position) if role == "input" else None,
        }

    datasets = [dataset("input", i, d, "in") for i, d in enumerate(inputs)]
    datasets += [dataset("output", i, d, "out") for i, d in enumerate(outputs)]
    started = {**env, "definition": definition_rows_digest(quantum_row, datasets)}
    now = utc_now()
    calls = [
        PendingCall(qid, 1, "quantum_started", [(None, "ok", None, None, canonical_json(started))]),
        PendingCall(
            qid, 1, "stored", [(d, "ok", None, None, None) for d in inputs], recorded_at=now
        ),
        *(
            PendingCall(qid, 1, "get", [(d, "ok", None, None, None)], recorded_at=now)
            for d in inputs
        ),
        *(
            PendingCall(qid, 1, "put", [(d, "ok", None, None, _record(d, j))], recorded_at=now)
            for j, d in enumerate(outputs)
        ),
        PendingCall(qid, 1, "quantum_succeeded", [(None, "ok", None, None, "{}")], recorded_at=now),
    ]
    return quantum_row, datasets, calls


def _insert(table: str, row: dict[str, Any]) -> str:
    columns = ", ".join(f'"{c}"' for c in row)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"


_EVENTS_INSERT = (
    "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, "
    "error_type, error_message, detail, recorded_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def make_corpus(where: Path, n: int) -> list[str]:
    """``n`` ledger files under ``where`` (reused when already there); their paths."""
    where.mkdir(parents=True, exist_ok=True)
    paths = [str(where / f"q{k:06d}.ledger") for k in range(n)]
    if all(os.path.exists(p) for p in paths):
        return paths
    empty = where / "empty.template"
    EventLog(empty).close()
    conn = sqlite3.connect(empty)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    env = environment()
    columns = max(1, n // _STEPS)
    for k, path in enumerate(paths):
        quantum_row, datasets, calls = _quantum(k, columns, env)
        shutil.copyfile(empty, path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.execute(_insert("quanta", quantum_row), list(quantum_row.values()))
        conn.executemany(_insert("datasets", datasets[0]), [list(d.values()) for d in datasets])
        conn.executemany(_EVENTS_INSERT, chain_rows(calls, {quantum_row["quantum_id"]: (0, None)}))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    empty.unlink()
    return paths


# --- the baseline: a bare copy of the same rows -------------------------------------------

_BARE_TABLES = {
    "quanta": "SELECT * FROM quanta",
    "datasets": "SELECT * FROM datasets",
    "events": "SELECT * FROM events ORDER BY seq",
}


def _bare_copy(paths: list[str], write: Any, batch_events: int) -> float:
    """Seconds to read every file's rows and ``executemany`` them in batches."""
    started = time.perf_counter()
    staged: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _BARE_TABLES}
    for path in paths:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for table, sql in _BARE_TABLES.items():
            staged[table].extend(conn.execute(sql).fetchall())
        conn.close()
        if len(staged["events"]) >= batch_events:
            write(staged)
            staged = {t: [] for t in _BARE_TABLES}
    write(staged)
    return time.perf_counter() - started


def _bare_sqlite(path: Path, template: str) -> Any:
    """A writer of staged rows into bare tables of a new SQLite file (WAL, synchronous FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    shapes = _shapes(template)
    for table, width in shapes.items():
        conn.execute(f"CREATE TABLE {table} ({', '.join(f'c{i}' for i in range(width))})")

    def write(staged: dict[str, list[tuple[Any, ...]]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for table, rows in staged.items():
            if rows:
                conn.executemany(
                    f"INSERT INTO {table} VALUES ({', '.join('?' * shapes[table])})", rows
                )
        conn.execute("COMMIT")

    return write


def _bare_postgres(url: str, template: str) -> tuple[Any, Any]:
    """A writer of staged rows into bare tables of a PostgreSQL schema, and its cleanup."""
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    shapes = _shapes(template)
    conn.execute("DROP SCHEMA IF EXISTS bench_bare CASCADE")
    conn.execute("CREATE SCHEMA bench_bare")
    for table, width in shapes.items():
        conn.execute(
            f"CREATE TABLE bench_bare.{table} ({', '.join(f'c{i} text' for i in range(width))})"
        )

    def write(staged: dict[str, list[tuple[Any, ...]]]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            for table, rows in staged.items():
                if rows:
                    cur.executemany(
                        f"INSERT INTO bench_bare.{table} VALUES "
                        f"({', '.join(['%s'] * shapes[table])})",
                        [tuple(None if v is None else str(v) for v in r) for r in rows],
                    )

    def close() -> None:
        conn.execute("DROP SCHEMA bench_bare CASCADE")
        conn.close()

    return write, close


def _shapes(template: str) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
    shapes = {t: len(conn.execute(f"SELECT * FROM {t} LIMIT 0").description) for t in _BARE_TABLES}
    conn.close()
    return shapes


# --- the figures --------------------------------------------------------------------------


def _lineage_ms(target: str, start: str, *, downstream: bool, rounds: int = 5) -> tuple[float, str]:
    with Ledger.open(target) as led:
        best = float("inf")
        for _ in range(rounds):
            began = time.perf_counter()
            graph = lineage(led, start, downstream=downstream)
            best = min(best, time.perf_counter() - began)
    return best * 1000, f"{len(graph.quanta)} quanta, {len(graph.edges)} edges"


def _figures(
    label: str, target: str, paths: list[str], bare: Any, n_events: int, limit: float | None
) -> list[dict[str, Any]]:
    n = len(paths)
    jobs = min(os.cpu_count() or 1, 8)  # as `qledger ingest` does by default
    report = ingest(target, paths, jobs=jobs)
    if not report.ok or report.events != n_events:
        raise AssertionError(f"ingest into {label} went wrong: {report.summary()}")
    again = ingest(target, paths, jobs=jobs)
    if again.events:
        raise AssertionError("re-ingest must add nothing")
    baseline = _bare_copy(paths, bare, 50_000)
    verify_started = time.perf_counter()
    with Ledger.open(target) as led:
        if not led.verify().ok:
            raise AssertionError(f"the {label} central ledger must verify")
    verify_s = time.perf_counter() - verify_started
    columns = max(1, n // _STEPS)
    last = _output(0, _STEPS - 1, 0) if n >= _STEPS else _output(0, 0, 0)
    up_ms, up_what = _lineage_ms(target, last, downstream=False)
    down_ms, down_what = _lineage_ms(target, _output(0, 0, 0), downstream=True)
    rate = f"{n / report.seconds:,.0f} files/s, {report.events / report.seconds:,.0f} events/s"
    figures: list[dict[str, Any]] = [
        {
            "name": f"ingest of {n:,} ledgers of ~{n_events // n} events into {label}",
            "ours": report.seconds,
            "unit": "s",
            "baseline": baseline,
            "baseline_name": "bare executemany copy of the same rows",
            "target": "< 60 s for 10,000" if limit else "reported",
            "met": (report.seconds * 10_000 / n < limit) if limit else None,
            "note": f"{rate}; {jobs} reading processes, chains verified; "
            f"re-ingest {again.seconds:.1f} s (adds nothing); "
            f"verify of the result {verify_s:.1f} s",
            "why": "",
        },
        {
            "name": f"lineage upstream of a step-{_STEPS} output, {label}",
            "ours": up_ms,
            "unit": "ms",
            "target": "reported",
            "note": f"{up_what}; recursive SQL over {report.events:,} events, {columns} columns",
        },
        {
            "name": f"lineage downstream of a step-1 output, {label}",
            "ours": down_ms,
            "unit": "ms",
            "target": "reported",
            "note": down_what,
        },
    ]
    return figures


def run(quick: bool) -> list[dict[str, Any]]:
    """The ingest and lineage figures (1,000 ledgers with ``quick``, else 10,000)."""
    n = 1_000 if quick else 10_000
    corpus = Path(tempfile.gettempdir()) / f"qledger-bench-corpus-{n}"
    print(f"   making {n:,} ledger files in {corpus} (kept for the next run)", flush=True)
    paths = make_corpus(corpus, n)
    n_events = 0
    for path in paths[:1]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] * n
        conn.close()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qledger-bench-ingest-") as d:
        target = os.path.join(d, "central.sqlite")
        bare = _bare_sqlite(Path(d) / "bare.sqlite", paths[0])
        rows += _figures("SQLite", target, paths, bare, n_events, 60.0)
    url = os.environ.get("LEDGER_TEST_POSTGRES_URL") or os.environ.get("LEDGER_BENCH_POSTGRES_URL")
    if not url:
        rows.append(
            {
                "name": f"ingest of {n:,} ledgers into PostgreSQL",
                "ours": None,
                "unit": "s",
                "note": "not measured: set LEDGER_BENCH_POSTGRES_URL (or LEDGER_TEST_POSTGRES_URL)",
            }
        )
        return rows
    database = _fresh_database(url)
    try:
        write, close = _bare_postgres(database, paths[0])
        try:
            rows += _figures("PostgreSQL", database, paths, write, n_events, None)
        finally:
            close()
    finally:
        _drop_database(url, database)
    return rows


def _fresh_database(url: str) -> str:
    from sqlalchemy import create_engine, make_url, text

    name = f"qledger_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str, database: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(database).database}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row)
