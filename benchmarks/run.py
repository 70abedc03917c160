"""quantum-ledger benchmarks: one table of figures, each beside a baseline timed in the same run.

Usage::

    python benchmarks/run.py            # a few minutes on 2 cores
    python benchmarks/run.py --quick    # under a minute: smaller sizes, fewer rounds

Prints the table and writes ``benchmarks/RESULTS.md`` with the machine, date
and versions; a ``--quick`` run writes ``benchmarks/RESULTS-quick.md`` instead
(ignored by git: the committed figures are a full run's), and ``--output``
writes elsewhere. Benchmarks are never timed tests:
nothing here fails on a number, the table says whether each target is met.

The figures (SPEC §9): recording one call against bare SQLite and
eventsourcing (`bench_recording`), a whole quantum against upstream's butler
(`bench_quantum`), replay and verify of big ledgers against a bare fetch
(`bench_replay`), ingest into a central ledger (`bench_ingest`, from the
central-ledger work), and how per-call and replay costs scale.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lsst import lsst_figures, lsst_section
from bench_quantum import quantum_figures
from bench_recording import recording_figures, scaling_figures
from bench_replay import make_ledger, replay_figures
from common import Figure, kept_sections, machine, versions

HERE = Path(__file__).resolve().parent


def default_output(quick: bool) -> Path:
    """Where the table goes without --output: a quick run never replaces the committed one."""
    return HERE / ("RESULTS-quick.md" if quick else "RESULTS.md")


_METHOD = """\
How to read it. Every figure is timed beside its baseline, in the same run and
the same rounds; per-call numbers are means over every call (the cyclic
garbage collector off while timing, as `timeit` does), whole operations the
median of a few repeats.

- *Ledger cost per call*: a butler call with its ledger minus the same
  datastore operation alone. Its *bare* baseline is that datastore operation
  followed by a bare `sqlite3` INSERT + COMMIT of a copy of the row our ledger
  wrote for the call (a table with only rowid `seq` and
  UNIQUE(quantum_id, quantum_seq), WAL, the same `synchronous`; in `batch`,
  rows buffered and inserted 1000 per transaction), minus the operation
  alone; the *eventsourcing* baseline likewise, with its SQLite recorder
  (`insert_events`, its connections at the same `synchronous`, a payload as
  long as our row; in `batch`, 1000 events per call). All of them are timed
  call by call in rotation, so that a cache or disk state left by one
  operation falls on all. The datastores of these figures live on tmpfs (`/dev/shm`)
  where there is one, so that the writeback of the puts' files, which lands
  at random on whatever runs then, stays out of differences of µs; ledgers
  and baseline databases are on the disk. The whole quantum runs on the disk.
- *Whole quantum*: 100 inputs checked with `stored_many`, 100 `get`, 10 `put`,
  `extract_provenance_data`, with our ledger file at `normal` against
  upstream's butler (which keeps no durable record), both built outside the
  timer.
- *Replay*: `Ledger.replay` of one quantum (1,000 inputs, 100 outputs, 5% of
  the calls puts); its baseline fetches the columns replay reads, every row,
  `ORDER BY seq`. *Verify*'s baseline fetches every column. Memory is the
  peak of the Python heap while a fresh process replays.
- *Ingest*: `ledger.central.ingest` of N ledger files (one quantum, ~100
  events each, arranged as a ten-step pipeline; kept in the temp folder for
  the next run) into a new central ledger, as `qledger ingest` runs by default
  (the CPUs read and verify, one process writes, 50,000 events per
  transaction). Its baseline reads the same files with `sqlite3` and
  `executemany`s the same rows into bare tables (no constraints, no checks),
  in batches of the same size. PostgreSQL is measured when
  `LEDGER_BENCH_POSTGRES_URL` (or `LEDGER_TEST_POSTGRES_URL`) names a server,
  each in a new database. *Lineage*: `ledger.central.lineage` on the result,
  the best of 5.
"""


def ingest_figures(quick: bool) -> list[Figure]:
    """Rows from ``bench_ingest.run(quick)`` (the central-ledger benchmark), if it is there."""
    try:
        module = importlib.import_module("bench_ingest")
    except ModuleNotFoundError as e:
        if e.name != "bench_ingest":
            raise
        return [
            Figure(
                "ingest",
                "ingest of 10,000 ledgers of ~100 events",
                None,
                "",
                note="not measured: benchmarks/bench_ingest.py (central ledger) is not there yet",
            )
        ]
    return [_figure(row) for row in module.run(quick)]


def _figure(row: dict[str, Any]) -> Figure:
    """A `Figure` from one of bench_ingest's dicts; keys it does not know go to the note."""
    known = set(Figure.__dataclass_fields__)
    values = {k: v for k, v in row.items() if k in known}
    values.setdefault("group", "ingest")
    values.setdefault("name", "ingest")
    values.setdefault("ours", None)
    values.setdefault("unit", "")
    rest = {k: v for k, v in row.items() if k not in known}
    if rest:
        extra = ", ".join(f"{k} {v}" for k, v in rest.items())
        values["note"] = "; ".join(filter(None, [values.get("note", ""), extra]))
    return Figure(**values)


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value >= 1 else f"{value:.3f}"


def render(figures: list[Figure]) -> str:
    """The figures as one Markdown table."""
    lines = [
        "| figure | ours | baseline | ratio | target | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ours = f"{_number(f.ours)} {f.unit}".strip() if f.ours is not None else "—"
        base = (
            f"{_number(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline is not None else "—"
        )
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        lines.append(f"| {f.name} | {ours} | {base} | {ratio} | {f.target} | {met} | {f.note} |")
    return "\n".join(lines)


def misses(figures: list[Figure]) -> str:
    """One line per missed target: by how much, and why the rest cannot be removed."""
    lines = []
    for f in figures:
        if f.met is False:
            by = f"{f.ratio:.2f}x against {f.target}" if f.ratio is not None else f.target
            lines.append(f"- **{f.name}**: {by}. {f.why}".rstrip())
    if not lines:
        return "Every target is met."
    return "Targets missed, and why:\n\n" + "\n".join(lines)


def main() -> None:
    """Run every benchmark, print the table, write RESULTS.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument(
        "--output", type=Path, default=None, help="default: RESULTS.md (RESULTS-quick.md)"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the ledgers")
    args = parser.parse_args()
    if args.output is None:
        args.output = default_output(args.quick)
    started = time.perf_counter()
    figures: list[Figure] = []
    shm = Path("/dev/shm")
    in_memory = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with (
        tempfile.TemporaryDirectory(prefix="qledger-bench-", dir=args.tmp) as d,
        tempfile.TemporaryDirectory(prefix="qledger-bench-", dir=in_memory) as stores,
    ):
        tmp = Path(d)
        where = machine(tmp)
        print("… recording_figures", flush=True)
        figures += recording_figures(tmp, args.quick, Path(stores))
        for step in (quantum_figures, replay_figures):
            print(f"… {step.__name__}", flush=True)
            figures += step(tmp, args.quick)
        print("… scaling_figures", flush=True)
        figures += scaling_figures(tmp, args.quick, make_ledger)
        print("… lsst_figures", flush=True)
        wrapper, _, why_none = lsst_figures(tmp, args.quick)
    print("… ingest_figures", flush=True)
    figures += ingest_figures(args.quick)
    order = ["record", "quantum", "replay", "ingest", "scaling"]
    figures.sort(key=lambda f: order.index(f.group) if f.group in order else len(order))
    table = render(figures)
    took = time.perf_counter() - started
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    met = [f.met for f in figures if f.met is not None]
    summary = f"{sum(met)} of {len(met)} targets met."
    print()
    print(table)
    print(f"\n{summary}\n\n{misses(figures)}")
    kept = kept_sections(args.output, skip={"lsst-wrapper"})  # bench_cli.py's, ...
    args.output.write_text(
        "# Benchmark results\n\n"
        f"{'`--quick`' if args.quick else 'Full'} run of `python benchmarks/run.py` on "
        f"{when}, {took:.0f} s.\n\n"
        f"- Machine: {where}\n"
        f"- Versions: {versions()}\n\n"
        f"{table}\n\n{summary}\n\n{misses(figures)}\n\n{_METHOD}\n\n"
        # Its own section (bench_lsst.py alone replaces just that one).
        + lsst_section(wrapper, why_none, f"in this run ({when})", "the machine above")
        # And those of the benchmarks with a heading of their own (bench_cli.py).
        + (f"\n{kept}\n" if kept else "")
    )
    print(f"wrote {args.output} ({took:.0f} s)")


if __name__ == "__main__":
    main()
