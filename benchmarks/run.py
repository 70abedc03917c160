"""quantum-ledger benchmarks: one table of figures, each beside a baseline measured in the same run.

Usage::

    python benchmarks/run.py            # a few minutes on 2 cores
    python benchmarks/run.py --quick    # under a minute, smaller sizes

Prints the table and writes ``benchmarks/RESULTS.md`` with the machine, date
and versions. Benchmarks are never timed tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy

import ledger
from ledger import QuantumBackedButler
from ledger.datastore import FileDatastore
from ledger.events import canonical_json, utc_now
from ledger.store.log import EventLog, PendingCall
from ledger.testing import make_quantum

HERE = Path(__file__).resolve().parent

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
ALL_COLUMNS = (
    "seq, quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, error_type, "
    "error_message, detail, recorded_at, prev_hash, hash"
)


@dataclass
class Figure:
    """One row of the results table."""

    group: str
    name: str
    ours: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


def _per_call(fn: Callable[[int], Any], n: int, repeats: int = 3) -> float:
    """Median over ``repeats`` runs of the mean µs per call of ``fn(i)``."""
    results = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(r * n + i)
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


def _interleaved(
    first: Callable[[int], Any], second: Callable[[int], Any], n: int
) -> tuple[float, float]:
    """Mean µs per call of two operations timed in alternation.

    Alternating cancels the drift of a busy disk or page cache that would
    bias two runs timed one after the other (puts are sensitive to it).
    """
    clock = time.perf_counter
    a = b = 0.0
    for i in range(n):
        t0 = clock()
        first(i)
        t1 = clock()
        second(i)
        t2 = clock()
        a += t1 - t0
        b += t2 - t1
    return a / n * 1e6, b / n * 1e6


# --- 1. recording one call ------------------------------------------------------------


def bare_insert(
    tmp: Path, synchronous: str, n: int, per_txn: int = 1, detail: str | None = None
) -> float:
    """µs per row of a bare sqlite3 INSERT + COMMIT (``per_txn`` rows per transaction).

    ``detail`` makes the row the size of ours (a put carries its datastore record).
    """
    name = f"bare-{synchronous}-{per_txn}-{n}-{len(detail or '')}.db"
    conn = sqlite3.connect(tmp / name, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(BARE_SCHEMA)
    qid = str(uuid.uuid4())
    rest = (1, 1, "put", str(uuid.uuid4()), "ok", None, None, detail, utc_now(), "a" * 64, "b" * 64)

    def one(i: int) -> None:
        conn.execute("BEGIN")
        if per_txn == 1:
            conn.execute(BARE_INSERT, (qid, i, *rest))
        else:
            conn.executemany(BARE_INSERT, [(qid, i * per_txn + k, *rest) for k in range(per_txn)])
        conn.execute("COMMIT")

    us = _per_call(one, max(1, n // per_txn)) / per_txn
    conn.close()
    return us


def eventsourcing_insert(tmp: Path, synchronous: str, n: int) -> float | None:
    """µs per event of the eventsourcing package's SQLite recorder (one event per call)."""
    if importlib.util.find_spec("eventsourcing") is None:
        return None
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import (
        SQLiteAggregateRecorder,
        SQLiteConnectionPool,
        SQLiteDatastore,
    )

    create = SQLiteConnectionPool._create_connection

    def create_with_setting(pool: Any) -> Any:
        # eventsourcing opens WAL connections at SQLite's default synchronous=FULL;
        # give them the same setting as ours and the bare baseline.
        connection = create(pool)
        connection._sqlite_conn.execute(f"PRAGMA synchronous = {synchronous}")
        return connection

    SQLiteConnectionPool._create_connection = create_with_setting  # type: ignore[method-assign]
    try:
        datastore = SQLiteDatastore(str(tmp / f"es-{synchronous}.db"))
        recorder = SQLiteAggregateRecorder(datastore, "stored_events")
        recorder.create_table()
        return _eventsourcing_loop(recorder, StoredEvent, n)
    finally:
        SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]


def _eventsourcing_loop(recorder: Any, stored_event: Any, n: int) -> float:
    originator = uuid.uuid4()
    state = b"x" * 180  # about the size of one of our rows' payload columns

    def one(i: int) -> None:
        recorder.insert_events(
            [stored_event(originator_id=originator, originator_version=i, topic="t", state=state)]
        )

    return _per_call(one, n)


def _call_pairs(
    tmp: Path, durability: str, butler: QuantumBackedButler, fixture: Any, calls: int
) -> dict[str, tuple[Callable[[int], Any], Callable[[int], Any], int]]:
    """(butler call, the same datastore operation alone, how many) for each call."""
    ref = fixture.inputs[0]
    ds = butler.datastore
    # Puts are compared without fsync on both sides: fsync's jitter (hundreds of µs)
    # would drown the ledger's tens. The butler's own default keeps fsync on.
    ds.fsync = False
    plain = FileDatastore(tmp / f"plain-{durability}", fsync=False)
    plain_outputs = make_quantum(tmp / f"plain-{durability}", n_inputs=0, n_outputs=3 * calls + 10)
    outputs = iter(fixture.outputs)
    other = iter(plain_outputs.outputs)
    return {
        "stored": (lambda i: butler.stored(ref), lambda i: ds.exists(ref), calls),
        "get": (lambda i: butler.get(ref), lambda i: ds.get(ref), calls),
        "put": (
            lambda i: butler.put({"i": i}, next(outputs)),
            lambda i: plain.put({"i": i}, next(other)),
            max(100, calls // 4),
        ),
    }


def recording(tmp: Path, quick: bool) -> list[Figure]:
    """Ledger cost per call (butler minus datastore alone) vs bare INSERT+COMMIT."""
    n = 500 if quick else 2000
    figures = []
    bare = {
        "normal": bare_insert(tmp, "NORMAL", n),
        "full": bare_insert(tmp, "FULL", n // 4),
        "batch": bare_insert(tmp, "NORMAL", n * 10, per_txn=1000),
    }
    put_detail = _put_detail_like_ours(tmp)
    bare_put = {
        "normal": bare_insert(tmp, "NORMAL", n, detail=put_detail),
        "full": bare_insert(tmp, "FULL", n // 4, detail=put_detail),
        "batch": bare_insert(tmp, "NORMAL", n * 10, per_txn=1000, detail=put_detail),
    }
    es = {
        "normal": eventsourcing_insert(tmp, "NORMAL", n),
        "full": eventsourcing_insert(tmp, "FULL", n // 4),
    }
    for durability in ("normal", "full", "batch"):
        calls = n if durability != "full" else n // 4
        fixture = make_quantum(tmp / f"rec-{durability}", n_inputs=1, n_outputs=3 * calls + 10)
        butler = QuantumBackedButler.initialize(
            fixture.root,
            fixture.quantum,
            ledger=tmp / f"rec-{durability}.ledger",
            durability=durability,  # type: ignore[arg-type]
        )
        pairs = _call_pairs(tmp, durability, butler, fixture, calls)
        for call, (with_ledger, alone, count) in pairs.items():
            ours, base = _interleaved(with_ledger, alone, count)
            cost = ours - base
            baseline = bare_put[durability] if call == "put" else bare[durability]
            target = 1.5 * baseline
            figures.append(
                Figure(
                    "record",
                    f"{call} ({durability}): ledger cost per call",
                    cost,
                    "µs",
                    baseline,
                    "bare INSERT+COMMIT of a row of the same size"
                    + (", 1000/txn" if durability == "batch" else ""),
                    "≤ 1.5x",
                    cost <= target,
                    f"butler {ours:.1f} µs, datastore alone {base:.1f} µs",
                )
            )
        butler.finish()
        if es.get(durability) is not None:
            stored = next(
                f for f in figures if f.name == f"stored ({durability}): ledger cost per call"
            )
            assert stored.ours is not None
            figures.append(
                Figure(
                    "record",
                    f"stored ({durability}) vs eventsourcing SQLite recorder",
                    stored.ours,
                    "µs",
                    es[durability],
                    "eventsourcing insert_events",
                    "< 1x",
                    stored.ours < (es[durability] or 0),
                )
            )
    return figures


def _put_detail_like_ours(tmp: Path) -> str:
    """The detail text our put event carries, to size the bare baseline's row."""
    fixture = make_quantum(tmp / "detail-probe", n_inputs=0, n_outputs=1)
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum) as butler:
        butler.put({"i": 1}, fixture.outputs[0])
        rows = list(butler._log.query("SELECT detail FROM events WHERE kind = 'put'"))
    return str(rows[0][0])


# --- 2. a whole quantum versus upstream ----------------------------------------------------


def whole_quantum_ours(tmp: Path) -> tuple[float, float]:
    """ms for 100 stored_many + 100 get + 10 put + extract with a durable ledger (normal).

    The butler is built outside the timer, as upstream's is; the second number
    is what building it costs (creating the ledger file with its schema).
    """
    times, setup = [], []
    for r in range(3):
        fixture = make_quantum(tmp / f"q{r}", n_inputs=100, n_outputs=10)
        start = time.perf_counter()
        butler = QuantumBackedButler.initialize(
            fixture.root, fixture.quantum, ledger=tmp / f"q{r}.ledger"
        )
        begin = time.perf_counter()
        butler.stored_many(fixture.inputs)
        for ref in fixture.inputs:
            butler.get(ref)
        for i, ref in enumerate(fixture.outputs):
            butler.put({"i": i}, ref)
        butler.extract_provenance_data()
        end = time.perf_counter()
        butler.finish()
        times.append((end - begin) * 1e3)
        setup.append((begin - start) * 1e3)
    return statistics.median(times), statistics.median(setup)


def whole_quantum_upstream(tmp: Path) -> tuple[float | None, str]:
    """ms for the same workload through lsst.daf.butler's QuantumBackedButler."""
    if importlib.util.find_spec("lsst.daf.butler") is None:
        return None, "lsst-daf-butler is not installed (pip install 'quantum-ledger[compare]')"
    code = HERE / "upstream_quantum.py"
    out = subprocess.run(
        [sys.executable, str(code), str(tmp / "upstream")], capture_output=True, text=True
    )
    if out.returncode != 0:
        return None, "upstream run failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return float(out.stdout.strip().splitlines()[-1]), ""


# --- 3. replay and verify of a big ledger --------------------------------------------------


def make_big_ledger(path: Path, n_events: int, n_datasets: int = 1000) -> str:
    """A ledger with one quantum of ``n_events`` properly chained events; returns its id."""
    fixture = make_quantum(
        path.parent / f"repo-{path.stem}", n_inputs=0, n_missing=n_datasets, n_outputs=100
    )
    log = EventLog(path, durability="batch", batch_size=50_000)
    butler = QuantumBackedButler._start(fixture.quantum, fixture.datastore, log, dataset_types=None)
    qid = str(butler.quantum_id)
    inputs = [str(r.id) for r in fixture.missing]
    outputs = [str(r.id) for r in fixture.outputs]
    record = canonical_json(
        {
            "datastore": "files",
            "records": [
                {
                    "path": "x.json",
                    "formatter": "ledger.json",
                    "storage_class": "StructuredDataDict",
                    "component": None,
                    "checksum": "0" * 64,
                    "file_size": 10,
                }
            ],
        }
    )
    prune = canonical_json({"disassociate": True, "purge": True, "unstore": True})
    kinds = [
        ("stored", "ok", None),
        ("get", "ok", None),
        ("get_deferred", "ok", None),
        ("mark_input_unused", "ok", None),
        ("get", "missing", None),
        ("put", "ok", record),
        ("prune", "ok", prune),
    ]
    written = 1
    i = 0
    while written < n_events:
        kind, outcome, detail = kinds[i % len(kinds)]
        pool = outputs if kind in ("put", "prune") else inputs
        log.append(PendingCall(qid, 1, kind, [(pool[i % len(pool)], outcome, None, None, detail)]))
        written += 1
        i += 1
    log.close()
    return qid


def _timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def replay_figures(tmp: Path, quick: bool) -> list[Figure]:
    """Replay and verify vs a bare fetch; memory of replay; linear scaling."""
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    figures: list[Figure] = []
    per_size: dict[int, float] = {}
    memory: dict[int, float] = {}
    for size in sizes:
        path = tmp / f"big-{size}.ledger"
        qid = make_big_ledger(path, size)

        def bare_fetch(p: Path = path) -> None:
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            for _ in conn.execute(f"SELECT {ALL_COLUMNS} FROM events ORDER BY seq"):
                pass
            conn.close()

        def replay(p: Path = path, q: str = qid) -> None:
            with ledger.Ledger.open(p) as led:
                led.replay(q)

        def verify(p: Path = path) -> None:
            with ledger.Ledger.open(p) as led:
                assert led.verify().ok

        fetch = _timed(bare_fetch)
        ours = _timed(replay)
        per_size[size] = ours
        memory[size] = _replay_peak_mib(path, qid)
        if size == sizes[-1]:
            checked = _timed(verify, 1)
            figures.append(
                Figure(
                    "replay",
                    f"replay of {size:,} events",
                    ours / size * 1e6,
                    "µs/event",
                    fetch / size * 1e6,
                    "bare SELECT all columns ORDER BY seq",
                    "≤ 1.5x",
                    ours <= 1.5 * fetch,
                    f"{size / ours:,.0f} events/s",
                )
            )
            figures.append(
                Figure(
                    "replay",
                    f"verify of {size:,} events",
                    checked / size * 1e6,
                    "µs/event",
                    fetch / size * 1e6,
                    "bare SELECT all columns ORDER BY seq",
                    "≤ 3x",
                    checked <= 3 * fetch,
                )
            )
    smallest, largest = sizes[0], sizes[-1]
    growth = (per_size[largest] / largest) / (per_size[smallest] / smallest)
    figures.append(
        Figure(
            "scaling",
            f"replay per event, {largest:,} vs {smallest:,} events",
            growth,
            "x",
            None,
            "",
            "linear (≈ 1x)",
            growth <= 1.5,
            ", ".join(f"{s:,}: {per_size[s]:.2f} s" for s in sizes),
        )
    )
    mem_small, mem_large = memory[sizes[-2]], memory[sizes[-1]]
    figures.append(
        Figure(
            "replay",
            f"peak memory of replay, {sizes[-1]:,} events",
            mem_large,
            "MiB",
            mem_small,
            f"{sizes[-2]:,} events",
            "flat",
            mem_large <= mem_small * 1.25 + 5,
        )
    )
    return figures


def _replay_peak_mib(path: Path, qid: str) -> float:
    """Peak RSS of a fresh process that imports the library and replays the ledger (MiB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent.
    code = (
        "import sys; from pathlib import Path; from ledger import Ledger\n"
        "led = Ledger.open(sys.argv[1]); led.replay(sys.argv[2]); led.close()\n"
        "hwm = [l for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), qid], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def _stored_call(butler: QuantumBackedButler, ref: Any) -> Callable[[int], Any]:
    return lambda i: butler.stored(ref)


def scaling_figures(tmp: Path, quick: bool) -> list[Figure]:
    """Per-call cost with 10, 1,000 and 100,000 events already in the ledger."""
    prefill = [10, 1_000] if quick else [10, 1_000, 100_000]
    costs = {}
    for existing in prefill:
        path = tmp / f"scale-{existing}.ledger"
        make_big_ledger(path, existing, n_datasets=100)
        fixture = make_quantum(tmp / f"scale-repo-{existing}", n_inputs=1, n_outputs=1)
        butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
        costs[existing] = _per_call(_stored_call(butler, fixture.inputs[0]), 1000)
        butler.finish()
    growth = costs[prefill[-1]] / costs[prefill[0]]
    return [
        Figure(
            "scaling",
            f"stored per call with {prefill[-1]:,} vs {prefill[0]} events already recorded",
            growth,
            "x",
            None,
            "",
            "flat (≈ 1x)",
            growth <= 1.25,
            ", ".join(f"{k:,}: {v:.1f} µs" for k, v in costs.items()),
        )
    ]


# --- 4. ingest (from bench_ingest, when present) ----------------------------------------------


def ingest_figures(quick: bool) -> list[Figure]:
    """Rows from benchmarks/bench_ingest.py, if the central ledger is there."""
    spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "bench_ingest.py")
    if spec is None or spec.loader is None or not (HERE / "bench_ingest.py").exists():
        return [
            Figure(
                "ingest",
                "ingest of 10,000 ledgers",
                None,
                "",
                note="not measured: "
                "benchmarks/bench_ingest.py is not there yet (central ledger issue)",
            )
        ]
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [Figure(**row) for row in module.run(quick)]


# --- the table ------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def render(figures: list[Figure]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| figure | ours | baseline | ratio | target | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        base = f"{_fmt(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline else "—"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        lines.append(
            f"| {f.name} | {_fmt(f.ours)} {f.unit} | {base} | {ratio} | {f.target} | {met} "
            f"| {f.note} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """CPU, cores, memory, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, "
        f"quantum-ledger {ledger.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="qledger-bench-") as d:
        tmp = Path(d)
        figures += recording(tmp, args.quick)
        ours, setup = whole_quantum_ours(tmp)
        upstream, why = whole_quantum_upstream(tmp)
        why = why or f"both butlers built outside the timer; creating our ledger: {setup:.1f} ms"
        figures.append(
            Figure(
                "quantum",
                "whole quantum (100 stored_many, 100 get, 10 put, extract), durable ledger",
                ours,
                "ms",
                upstream,
                "upstream QuantumBackedButler, no durable record",
                "≤ 0.2x",
                None if upstream is None else ours <= 0.2 * upstream,
                why,
            )
        )
        figures += replay_figures(tmp, args.quick)
        figures += scaling_figures(tmp, args.quick)
    figures += ingest_figures(args.quick)
    table = render(figures)
    print(table)
    took = time.perf_counter() - started
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.output.write_text(
        f"# Benchmark results\n\n{when}; {'--quick' if args.quick else 'full'} run in "
        f"{took:.0f} s.\n\nMachine: {machine()}\n\n{table}\n\n"
        "Ratios compare our figure with the baseline measured in the same run. "
        "Ledger cost per call = the butler call minus the same datastore operation alone.\n"
    )
    print(f"\nwrote {args.output} ({took:.0f} s)")


if __name__ == "__main__":
    main()
