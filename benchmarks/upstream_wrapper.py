"""Per call: upstream's QuantumBackedButler bare, and the same wrapped in RecordingButler.

Run by ``bench_lsst.py`` in a subprocess (it needs the ``lsst`` extra)::

    python upstream_wrapper.py WORKDIR ROUNDS PER_ROUND

Builds an upstream repository (``Butler.makeRepo``, 100 ``StructuredDataDict``
inputs) and two quanta over the same inputs with their own outputs: one
butler bare, one wrapped with a ledger file at ``normal`` durability. Each
round times ``PER_ROUND`` calls of ``get``, ``stored`` and ``put`` on each
butler, the bare and the wrapped call of one kind one after the other, the
cyclic garbage collector off (`common.interleaved`); the figures are medians
over the rounds, per call. Prints one JSON object of µs per call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import timed_rounds
from lsst.daf.butler import (
    Butler,
    DataCoordinate,
    DatasetRef,
    DatasetType,
    QuantumBackedButler,
)
from lsst.daf.butler import Quantum as UpstreamQuantum

from ledger.events import EventKind, Outcome
from ledger.lsst import RecordingButler

N_INPUTS = 100


class _Instant:
    """An upstream butler's get and stored that answer at once (for the wrapper's own cost)."""

    def get(self, ref: Any, parameters: Any = None, storageClass: Any = None) -> Any:
        return {}

    def stored(self, ref: Any) -> bool:
        return True


def main(work: Path, rounds: int, per_round: int) -> None:
    """Build the repository and both butlers, time the calls, print µs per call."""
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
    inputs = []
    for i in range(N_INPUTS):  # no dimensions: one dataset per run
        butler.registry.registerRun(f"in/{i}")
        inputs.append(butler.put({"i": i}, DatasetRef(raw, empty, run=f"in/{i}")))
    records = butler._datastore.export_records(inputs)
    types = {"bench_raw": raw, "bench_out": out}
    n_outputs = rounds * per_round + 1

    def quantum(label: str) -> tuple[Any, Iterator[Any]]:
        outputs = [DatasetRef(out, empty, run=f"{label}/{i}") for i in range(n_outputs)]
        built = UpstreamQuantum(
            taskName="bench",
            dataId=empty,
            inputs={raw: inputs},
            outputs={out: outputs},
            datastore_records=records,
        )
        return built, iter(outputs)

    bare_quantum, bare_outputs = quantum("bare")
    wrapped_quantum, wrapped_outputs = quantum("wrapped")
    bare = QuantumBackedButler.initialize(str(root), bare_quantum, universe, dataset_types=types)
    inner = QuantumBackedButler.initialize(
        str(root), wrapped_quantum, universe, dataset_types=types
    )
    wrapped = RecordingButler(
        inner, wrapped_quantum, ledger=work / "wrapped.ledger", durability="normal"
    )
    bare_out, wrapped_out = list(bare_outputs), list(wrapped_outputs)
    recorder = wrapped._ledger_recorder
    stubbed = RecordingButler(
        QuantumBackedButler.initialize(str(root), bare_quantum, universe, dataset_types=types),
        bare_quantum,
        ledger=work / "stubbed.ledger",
        durability="normal",
    )
    stubbed._ledger_butler = _Instant()
    groups = {
        "get": {
            "bare": lambda i: bare.get(inputs[i % N_INPUTS]),
            "wrapped": lambda i: wrapped.get(inputs[i % N_INPUTS]),
        },
        "stored": {
            "bare": lambda i: bare.stored(inputs[i % N_INPUTS]),
            "wrapped": lambda i: wrapped.stored(inputs[i % N_INPUTS]),
        },
        "put": {
            "bare": lambda i: bare.put({"i": i}, bare_out[i]),
            "wrapped": lambda i: wrapped.put({"i": i}, wrapped_out[i]),
        },
        # The ledger's append alone, as the wrapper makes it for a stored call: the part
        # of the difference that is the durable record itself.
        "append": {
            "alone": lambda i: recorder.one(EventKind.STORED, inputs[i % N_INPUTS], Outcome.OK),
        },
        # The wrapper's whole cost with upstream's work taken away: the same wrapper and
        # ledger over a butler that answers at once.
        "intrinsic": {
            "get": lambda i: stubbed.get(inputs[i % N_INPUTS]),
            "stored": lambda i: stubbed.stored(inputs[i % N_INPUTS]),
        },
    }
    # Warm both up (first reads, formatter imports, the ledger's tip) with the last outputs.
    for ops in groups.values():
        for op in ops.values():
            op(n_outputs - 1)
    means = timed_rounds(groups, per_round=per_round, rounds=rounds)
    wrapped.close()
    bare.close()
    print(json.dumps({k: v for k, v in means.items() if not k.endswith("-ref")}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
