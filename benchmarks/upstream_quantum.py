"""The whole-quantum workload through upstream's QuantumBackedButler (lsst-daf-butler).

Run by ``bench_quantum.py`` in a subprocess: ``python upstream_quantum.py WORKDIR REPEATS``.
Builds an upstream repository (``Butler.makeRepo``, a ``StructuredDataDict``
dataset type, 100 inputs written through its file datastore), then times, for
each repeat with fresh outputs, 100 inputs checked with ``stored_many``,
100 ``get``, 10 ``put`` and ``extract_provenance_data``, the butler built
outside the timer (as ours is). Prints one JSON object of medians in ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from lsst.daf.butler import (
    Butler,
    DataCoordinate,
    DatasetRef,
    DatasetType,
    QuantumBackedButler,
)
from lsst.daf.butler import Quantum as UpstreamQuantum


def main(work: Path, repeats: int) -> None:
    """Build a repository with 100 inputs, then time the workload ``repeats`` times."""
    work.mkdir(parents=True, exist_ok=True)
    root = work / "repo"
    Butler.makeRepo(str(root))
    butler = Butler.from_config(str(root), writeable=True)
    universe = butler.dimensions
    empty = DataCoordinate.make_empty(universe)
    raw = DatasetType("bench_raw", (), "StructuredDataDict", universe=universe)
    out = DatasetType("bench_out", (), "StructuredDataDict", universe=universe)
    butler.registry.registerDatasetType(raw)
    butler.registry.registerDatasetType(out)
    # No dimensions: one dataset per run gives 100 distinct inputs without
    # having to insert dimension records.
    inputs = []
    for i in range(100):
        run = f"in/{i}"
        butler.registry.registerRun(run)
        inputs.append(butler.put({"i": i}, DatasetRef(raw, empty, run=run)))
    records = butler._datastore.export_records(inputs)
    phases: dict[str, list[float]] = {}

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        phases.setdefault(name, []).append((now - start) * 1e3)
        return now

    for attempt in range(repeats):
        outputs = [DatasetRef(out, empty, run=f"out/{attempt}/{i}") for i in range(10)]
        quantum = UpstreamQuantum(
            taskName="bench",
            dataId=empty,
            inputs={raw: inputs},
            outputs={out: outputs},
            datastore_records=records,
        )
        start = time.perf_counter()
        qbb = QuantumBackedButler.initialize(
            config=str(root),
            quantum=quantum,
            dimensions=universe,
            dataset_types={"bench_raw": raw, "bench_out": out},
        )
        begin = lap("construct", start)
        t = begin
        qbb.stored_many(inputs)
        t = lap("stored_many", t)
        for ref in inputs:
            qbb.get(ref)
        t = lap("get", t)
        for i, ref in enumerate(outputs):
            qbb.put({"i": i}, ref)
        t = lap("put", t)
        qbb.extract_provenance_data()
        lap("extract", t)
        lap("total", begin)
    print(json.dumps({name: statistics.median(v) for name, v in phases.items()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)
