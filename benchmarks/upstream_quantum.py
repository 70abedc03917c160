"""The whole-quantum workload through upstream's QuantumBackedButler (lsst-daf-butler).

Run by benchmarks/run.py in a subprocess: ``python upstream_quantum.py WORKDIR``;
prints the median milliseconds of 100 stored_many + 100 get + 10 put +
extract_provenance_data, the butler built outside the timer (as for ours).
"""

from __future__ import annotations

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


def main(work: Path) -> None:
    """Build a repository with 100 inputs, then time the workload three times."""
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
    # No dimensions: one dataset per run gives 100 distinct inputs without dimension records.
    inputs = []
    for i in range(100):
        run = f"in/{i}"
        butler.registry.registerRun(run)
        inputs.append(butler.put({"i": i}, DatasetRef(raw, empty, run=run)))
    records = butler._datastore.export_records(inputs)
    times = []
    for attempt in range(3):
        outputs = [DatasetRef(out, empty, run=f"out/{attempt}/{i}") for i in range(10)]
        quantum = UpstreamQuantum(
            taskName="bench",
            dataId=empty,
            inputs={raw: inputs},
            outputs={out: outputs},
            datastore_records=records,
        )
        qbb = QuantumBackedButler.initialize(
            config=str(root),
            quantum=quantum,
            dimensions=universe,
            dataset_types={"bench_raw": raw, "bench_out": out},
        )
        start = time.perf_counter()
        qbb.stored_many(inputs)
        for ref in inputs:
            qbb.get(ref)
        for i, ref in enumerate(outputs):
            qbb.put({"i": i}, ref)
        qbb.extract_provenance_data()
        times.append((time.perf_counter() - start) * 1e3)
    print(statistics.median(times))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
