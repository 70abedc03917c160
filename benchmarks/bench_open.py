"""Opening ledgers to read them: the reader's rule against the previous ``mode=ro`` open.

Usage::

    python benchmarks/bench_open.py            # about a minute
    python benchmarks/bench_open.py --quick    # 100 ledgers instead of 1,000

Times ``Ledger.open`` + ``status()`` (what ``qledger show`` reads) + close, of
one ledger and of every ledger of a folder of 1,000, beside the previous
reader timed in the same rounds: ``mode=ro`` on ledgers in WAL mode, as the
previous writers left them (it creates ``-wal`` and ``-shm`` beside each at the
first read, and reuses them after). Ours reads ledgers as writers now leave
them (one file, not in WAL mode: a locking read) and ledgers an earlier
version closed in WAL mode (read ``immutable``). Each figure is the median of
the rounds. The table replaces only its own section of ``benchmarks/RESULTS.md`` (``open``)
(``--output`` writes elsewhere; ``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from common import Figure, interleaved, machine, versions, write_section

from ledger import QuantumBackedButler
from ledger.store import ledger as ledger_module
from ledger.store.ledger import Ledger
from ledger.store.readonly import SQLiteReader
from ledger.testing import make_quantum

HERE = Path(__file__).resolve().parent
SECTION = "open"
HEADING = "## Opening ledgers to read (no write access, nothing left behind)"


class _PreviousReader(SQLiteReader):
    """The reader before the rule: ``mode=ro`` whatever the file, never re-opened."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{quote(os.path.abspath(self.path))}?mode=ro", uri=True, check_same_thread=False
        )
        conn.execute("PRAGMA query_only = ON")
        return conn

    def stale(self) -> bool:
        return False

    def check_unchanged(self) -> None:
        return None


def _show(ledgers: list[Path], *, previous: bool = False) -> None:
    """Open (``Ledger.open``: the schema checked), read the status ``show`` prints, close."""
    ledger_module.SQLiteReader = _PreviousReader if previous else SQLiteReader  # type: ignore[misc]
    try:
        for path in ledgers:
            with Ledger.open(path) as led:
                led.status()
    finally:
        ledger_module.SQLiteReader = SQLiteReader  # type: ignore[misc]


def _in_wal_mode(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()  # the last connection: -wal and -shm go, the header says WAL


def build(root: Path, n: int) -> dict[str, list[Path]]:
    """A finished ledger copied ``n`` times, in the three forms the figures read."""
    fixture = make_quantum(root / "repo", n_inputs=20, n_outputs=10)
    source = root / "source.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=source) as butler:
        for ref in fixture.inputs:
            butler.stored(ref)
            butler.get(ref)
        for i, ref in enumerate(fixture.outputs):
            butler.put({"i": i}, ref)
    forms: dict[str, list[Path]] = {}
    for form in ("ours", "earlier", "previous"):
        folder = root / form
        folder.mkdir()
        forms[form] = []
        for i in range(n):
            path = folder / f"q{i:05d}.ledger"
            shutil.copy(source, path)
            if form != "ours":
                _in_wal_mode(path)
            forms[form].append(path)
    return forms


def figures(n: int, rounds: int, tmp: Path) -> list[Figure]:
    """Time the three forms, one ledger and the folder, in the same rounds."""
    forms = build(tmp, n)
    one = {name: paths[:1] for name, paths in forms.items()}
    ops = {
        "one ours": lambda: _show(one["ours"]),
        "one previous": lambda: _show(one["previous"], previous=True),
        "one earlier": lambda: _show(one["earlier"]),
    }
    single = interleaved(ops, rounds=rounds * 20)
    ops = {
        "all ours": lambda: _show(forms["ours"]),
        "all previous": lambda: _show(forms["previous"], previous=True),
        "all earlier": lambda: _show(forms["earlier"]),
    }
    folder = interleaved(ops, rounds=rounds)
    files = {name: len(os.listdir(paths[0].parent)) for name, paths in forms.items()}
    left = files["previous"] - n
    previous = f"mode=ro on ledgers in WAL mode (the previous reader; it left {left:,} files)"
    note = f"{files['ours'] - n} files added to the folder"
    return [
        Figure(
            "open",
            "open + show of one finished ledger",
            single["one ours"] * 1e3,
            "ms",
            single["one previous"] * 1e3,
            previous,
            target="≤ 1.1x (no slower, within a run's noise)",
            limit=1.1,
            note=f"{files['ours'] - n} files added; a locking read of a file not in WAL mode",
        ),
        Figure(
            "open",
            f"open + show of each of {n:,} finished ledgers in a folder",
            folder["all ours"],
            "s",
            folder["all previous"],
            previous,
            target="≤ 1.1x (no slower, within a run's noise)",
            limit=1.1,
            note=f"{note}; {n / folder['all ours']:,.0f} ledgers/s",
        ),
        Figure(
            "open",
            f"open + show of each of {n:,} ledgers an earlier version closed in WAL mode",
            folder["all earlier"],
            "s",
            folder["all previous"],
            previous,
            target="≤ 1.1x (no slower, within a run's noise)",
            limit=1.1,
            note=f"{files['earlier'] - n} files added; read immutable; one: "
            f"{single['one earlier'] * 1e3:.3f} ms",
        ),
    ]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"


def render(rows: list[Figure], seconds: float, quick: bool, where: str) -> str:
    """The section of RESULTS.md: heading, how it was run, the table."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"`python benchmarks/bench_open.py{' --quick' if quick else ''}` on {when}, "
        f"{seconds:.0f} s; {where}.",
        "",
        "| figure | ours | baseline | ratio | target | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        assert f.ours is not None
        assert f.baseline is not None
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "—"
        lines.append(
            f"| {f.name} | {_number(f.ours)} {f.unit} | {_number(f.baseline)} {f.unit} "
            f"({f.baseline_name}) | {ratio} | {f.target} | {met} | {f.note} |"
        )
    lines += [
        "",
        "Ours opens by the reader's rule (docs/explanation/durability.md); the baseline "
        "is the open it replaces, timed in the same rounds (median).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Build the ledgers, time them, print the table and write its section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 ledgers, fewer rounds")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the ledgers")
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    try:
        where = machine(tmp)
        rows = figures(100 if args.quick else 1000, 3 if args.quick else 5, tmp)
    finally:
        shutil.rmtree(tmp)
    section = render(rows, time.perf_counter() - started, args.quick, where)
    print(section)
    print(versions(), file=sys.stderr)
    if not args.no_write:
        write_section(args.output, SECTION, section)


if __name__ == "__main__":
    main()
