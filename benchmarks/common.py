"""What every benchmark shares: the `Figure` row, timing helpers, the machine description.

Timing rules used throughout: a figure and its baseline are timed in the
same run and in the same rounds (so that drift of the disk and the page cache
hits both alike). Per-call figures are means over every call, so that rare
costs (a WAL checkpoint, a batch flush) count at their true weight; whole
operations (a replay) are the median of a few repeats.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Figure",
    "interleaved",
    "kept_sections",
    "machine",
    "timed_rounds",
    "versions",
    "write_section",
]


@dataclass
class Figure:
    """One row of the results table: our number beside its baseline, and the target."""

    group: str
    name: str
    ours: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    #: ours / baseline must stay at or below this ratio (None: ``met`` is given directly).
    limit: float | None = None
    met: bool | None = None
    note: str = ""
    #: Why the remaining cost cannot be removed, shown when the target is missed.
    why: str = ""

    def __post_init__(self) -> None:
        if self.baseline is not None and self.baseline <= 0:
            # A difference of two timings that came out at or below zero: the
            # baseline is lost in the noise, so there is no ratio to judge.
            self.note = "; ".join(filter(None, [self.note, "baseline below the noise: no ratio"]))
            self.met = None
            return
        if self.met is None and self.limit is not None and self.ratio is not None:
            self.met = self.ratio <= self.limit

    @property
    def ratio(self) -> float | None:
        """ours / baseline, when both are known (and the baseline is above zero)."""
        if self.ours is None or not self.baseline or self.baseline <= 0:
            return None
        return self.ours / self.baseline


def interleaved(ops: dict[str, Callable[[], Any]], *, rounds: int) -> dict[str, float]:
    """Median seconds of each operation over ``rounds``, all of them run in each round."""
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in ops.items():
            with _no_gc():
                start = time.perf_counter()
                fn()
                times.setdefault(name, []).append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def timed_rounds(
    groups: dict[str, dict[str, Callable[[int], Any]]], *, per_round: int, rounds: int
) -> dict[str, float]:
    """Mean µs per call of each operation, and of its cost over the reference.

    Each group maps names to operations ``fn(i)``; the first is the group's
    reference (e.g. the datastore operation alone). The operations of a group
    are timed call by call in rotation, so that drift of the disk or the page
    cache and the order they run in hit them all alike. Keys of the result:
    ``group/name`` (mean µs per call) and ``group/name-ref`` (mean µs over the
    reference). Rounds only bound how long the garbage collector stays off.
    """
    clock = time.perf_counter
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        with _no_gc():
            _one_round(groups, r, per_round, clock, samples)
    return {name: statistics.mean(values) for name, values in samples.items()}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off while timing, as `timeit` does.

    A collection takes milliseconds once the benchmark holds thousands of refs
    and records, and lands on whichever operation allocates then.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _one_round(
    groups: dict[str, dict[str, Callable[[int], Any]]],
    r: int,
    per_round: int,
    clock: Callable[[], float],
    samples: dict[str, list[float]],
) -> None:
    """Round ``r`` of `timed_rounds`: each group's operations in rotation, call by call."""
    for group, ops in groups.items():
        names = list(ops)
        fns = list(ops.values())
        totals = [0.0] * len(fns)
        k = len(fns)
        for i in range(r * per_round, (r + 1) * per_round):
            for j in range(k):
                at = (i + j) % k  # a different operation goes first each call
                fn = fns[at]
                start = clock()
                fn(i)
                totals[at] += clock() - start
        means = [t / per_round * 1e6 for t in totals]
        for name, mean in zip(names, means, strict=True):
            samples.setdefault(f"{group}/{name}", []).append(mean)
            samples.setdefault(f"{group}/{name}-ref", []).append(mean - means[0])


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> str:
    """Python, SQLite and the libraries that the figures depend on."""
    parts = [
        f"Python {platform.python_version()}",
        f"SQLite {sqlite3.sqlite_version}",
        *(
            f"{name} {_version(name)}"
            for name in (
                "quantum-ledger",
                "SQLAlchemy",
                "pydantic",
                "eventsourcing",
                "lsst-daf-butler",
                "psycopg",
            )
        ),
    ]
    return ", ".join(parts)


def _first(lines: Iterable[str], prefix: str) -> str | None:
    for line in lines:
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return None


def _disk(path: Path) -> str:
    """Device, file system and kind of the disk that holds ``path`` (Linux)."""
    try:
        target = os.stat(path).st_dev
        best = ("?", "?")
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            try:
                if os.stat(mount).st_dev == target:
                    best = (device, fstype)
            except OSError:
                continue
        device, fstype = best
        name = Path(device).name
        rotational = Path(f"/sys/block/{name}/queue/rotational")
        kind = ""
        if rotational.exists():
            kind = ", reported rotational" if rotational.read_text().strip() == "1" else ", SSD"
        return f"{device} ({fstype}{kind})"
    except OSError:
        return "unknown"


def machine(tmp: Path) -> str:
    """CPU model, cores, RAM and the disk under the benchmark's temporary folder."""
    cpu = platform.processor() or platform.machine()
    ram = "?"
    try:
        cpu = _first(Path("/proc/cpuinfo").read_text().splitlines(), "model name") or cpu
        kib = _first(Path("/proc/meminfo").read_text().splitlines(), "MemTotal")
        if kib:
            ram = f"{int(kib.split()[0]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram} RAM, disk {_disk(tmp)}; "
        f"{platform.system()} {platform.release()}"
    )


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name} -->", f"<!-- /section:{name} -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of section ``name`` in ``path``; keep the rest.

    A benchmark with its own heading (the command line's, ``bench_cli.py``)
    writes there, so that it never destroys the figures of another.
    """
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    path.write_text(text)


def kept_sections(path: Path, skip: Iterable[str] = ()) -> str:
    """Every marked section of ``path`` but ``skip`` (see `write_section`), to keep on a rewrite."""
    if not path.exists():
        return ""
    text, found = path.read_text(), []
    while "<!-- section:" in text:
        text = text[text.index("<!-- section:") :]
        name = text[len("<!-- section:") : text.index(" -->")]
        end = _markers(name)[1]
        if end not in text:
            break
        if name not in skip:
            found.append(text[: text.index(end) + len(end)])
        text = text[text.index(end) + len(end) :]
    return "\n\n".join(found)
