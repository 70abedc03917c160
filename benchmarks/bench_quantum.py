"""A whole quantum with our durable ledger against upstream's quantum-backed butler.

The workload: 100 inputs checked with ``stored_many``, 100 ``get``, 10 ``put``
and ``extract_provenance_data``. Ours records every call durably (``normal``)
in a ledger file and fsyncs each artifact; upstream keeps no durable record.
Both butlers are built outside the timer; their construction is reported apart.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import Figure

from ledger import QuantumBackedButler
from ledger.testing import make_quantum

__all__ = ["quantum_figures"]

HERE = Path(__file__).resolve().parent
_PHASES = ("stored_many", "get", "put", "extract")


def ours(tmp: Path, repeats: int, *, fsync: bool = True) -> dict[str, float]:
    """Median ms of each phase of the workload through our butler.

    ``fsync=False`` writes artifacts as upstream's datastore does, without
    fsync; the ledger stays durable either way.
    """
    repo = tmp / ("quantum-repo" if fsync else "quantum-repo-nofsync")
    fixture = make_quantum(repo, n_inputs=100, n_outputs=10)
    config: Any = fixture.root if fsync else {"root": str(fixture.root), "fsync": False}
    phases: dict[str, list[float]] = {}

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        phases.setdefault(name, []).append((now - start) * 1e3)
        return now

    for attempt in range(repeats):
        # Fresh outputs and ledger for each repeat, as upstream gets fresh output runs.
        outputs = make_quantum(repo, n_inputs=0, n_outputs=10, output_run=f"out/{attempt}").outputs
        quantum = fixture.quantum.model_copy(update={"outputs": {"calexp": tuple(outputs)}})
        start = time.perf_counter()
        butler = QuantumBackedButler.initialize(
            config, quantum, ledger=repo.parent / f"{repo.name}-{attempt}.ledger"
        )
        begin = lap("construct", start)
        t = begin
        butler.stored_many(fixture.inputs)
        t = lap("stored_many", t)
        for ref in fixture.inputs:
            butler.get(ref)
        t = lap("get", t)
        for i, ref in enumerate(outputs):
            butler.put({"i": i}, ref)
        t = lap("put", t)
        butler.extract_provenance_data()
        lap("extract", t)
        lap("total", begin)
        butler.finish()
    return {name: statistics.median(v) for name, v in phases.items()}


def upstream(tmp: Path, repeats: int) -> tuple[dict[str, float] | None, str]:
    """The same workload through lsst.daf.butler, in a subprocess (or why not)."""
    if importlib.util.find_spec("lsst.daf.butler") is None:
        return None, (
            "lsst-daf-butler is not installed (pip install -e '.[compare]'), so there is "
            "no upstream number"
        )
    out = subprocess.run(
        [sys.executable, str(HERE / "upstream_quantum.py"), str(tmp / "upstream"), str(repeats)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"the upstream run failed: {last}"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def _phases(times: dict[str, float]) -> str:
    return ", ".join(f"{p} {times[p]:.1f}" for p in _PHASES)


def quantum_figures(tmp: Path, quick: bool) -> list[Figure]:
    """Ours vs upstream on the whole-quantum workload."""
    repeats = 3 if quick else 7
    mine = ours(tmp, repeats)
    lazy = ours(tmp, repeats, fsync=False)
    theirs, why = upstream(tmp, repeats)
    name = "whole quantum (100 stored_many, 100 get, 10 put, extract), normal"
    if theirs is None:
        return [Figure("quantum", name, mine["total"], "ms", note=why)]
    return [
        Figure(
            "quantum",
            name,
            mine["total"],
            "ms",
            theirs["total"],
            "upstream QuantumBackedButler (lsst-daf-butler), no durable record",
            "≤ 0.2x",
            limit=0.2,
            note=f"ms per phase, ours: {_phases(mine)}; upstream: {_phases(theirs)}; "
            f"building the butler (not timed): ours {mine['construct']:.1f} ms "
            f"(creates the ledger file), upstream {theirs['construct']:.1f} ms",
            why=f"{mine['put']:.1f} ms of our {mine['total']:.1f} ms are the 10 puts, each "
            "fsyncing its artifact and the artifact's directory before it returns (upstream's "
            "datastore does not fsync); the rest is reading and recording each call durably. "
            "The next row takes the fsync of the artifacts away, as upstream does.",
        ),
        Figure(
            "quantum",
            "whole quantum, artifacts not fsynced (as upstream's datastore), ledger durable",
            lazy["total"],
            "ms",
            theirs["total"],
            "upstream QuantumBackedButler (lsst-daf-butler), no durable record",
            "reported",
            note=f"ms per phase: {_phases(lazy)}; FileDatastore(fsync=False), the ledger "
            "still commits every call at normal",
        ),
    ]
