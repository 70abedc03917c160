"""Helpers for tests: build a small repository of datasets and quanta.

Shipped in the package so that executors can test their own code against real
ledgers and a real `FileDatastore`, exactly as quantum-ledger's own tests do::

    from ledger.testing import make_quantum
    fixture = make_quantum(tmp_path / "repo", n_inputs=3, n_missing=1)
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum,
                                        ledger=tmp_path / "q.ledger") as butler:
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datastore import FileDatastore
from .model import DatasetRef, DatasetType
from .quantum import Quantum
from .records import DatastoreRecordData

__all__ = ["QuantumFixture", "make_dataset_type", "make_quantum", "make_ref"]

DEFAULT_RUN = "test/run"
DEFAULT_DIMENSIONS = ("instrument", "visit", "detector")


def make_dataset_type(
    name: str,
    storage_class: str = "StructuredDataDict",
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
) -> DatasetType:
    """A dataset type with the test dimensions."""
    return DatasetType(name=name, dimensions=dimensions, storage_class=storage_class)


def make_ref(
    name: str,
    visit: int,
    *,
    detector: int = 0,
    run: str = DEFAULT_RUN,
    storage_class: str = "StructuredDataDict",
    instrument: str = "DemoCam",
) -> DatasetRef:
    """A ref with a deterministic id for (name, instrument, visit, detector, run)."""
    return DatasetRef(
        dataset_type=make_dataset_type(name, storage_class),
        data_id={"instrument": instrument, "visit": visit, "detector": detector},
        run=run,
    )


def _default_payload(ref: DatasetRef) -> Any:
    return {"name": ref.dataset_type.name, **dict(ref.data_id), "id": str(ref.id)}


@dataclass
class QuantumFixture:
    """A quantum whose existing inputs are written in a datastore under ``root``."""

    root: Path
    quantum: Quantum
    datastore: FileDatastore
    inputs: list[DatasetRef]
    init_inputs: list[DatasetRef]
    outputs: list[DatasetRef]
    #: Predicted inputs that were never written (reading them fails).
    missing: list[DatasetRef] = field(default_factory=list)

    @property
    def predicted_inputs(self) -> list[DatasetRef]:
        """Inputs, init-inputs and missing inputs: everything predicted to be read."""
        return [*self.inputs, *self.missing, *self.init_inputs]


def make_quantum(
    root: str | Path,
    *,
    task_label: str = "task",
    visit: int = 1,
    detector: int = 0,
    n_inputs: int = 3,
    n_missing: int = 0,
    n_outputs: int = 2,
    n_init_inputs: int = 0,
    input_type: str = "raw",
    output_type: str = "calexp",
    input_run: str = DEFAULT_RUN,
    output_run: str = DEFAULT_RUN,
    payload: Callable[[DatasetRef], Any] = _default_payload,
    datastore_name: str = "files",
    extra_inputs: Mapping[str, list[DatasetRef]] | None = None,
    extra_records: Mapping[str, Any] | None = None,
) -> QuantumFixture:
    """Write ``n_inputs`` inputs to a datastore at ``root`` and describe a quantum over them.

    Inputs are ``input_type`` refs on detectors ``0..n_inputs+n_missing-1`` of
    ``visit``; the last ``n_missing`` are predicted but never written. Outputs
    are ``output_type`` refs on detectors ``0..n_outputs-1``. ``extra_inputs``
    adds refs written earlier (e.g. an upstream quantum's outputs), and
    ``extra_records`` their records (e.g. that quantum's
    ``QuantumProvenanceData.datastore_records``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    datastore = FileDatastore(root, name=datastore_name)
    inputs = [
        make_ref(input_type, visit, detector=d, run=input_run) for d in range(n_inputs + n_missing)
    ]
    written, missing = inputs[:n_inputs], inputs[n_inputs:]
    init_inputs = [
        make_ref(f"{task_label}_config{i}", 0, run=input_run) for i in range(n_init_inputs)
    ]
    for ref in [*written, *init_inputs]:
        if datastore.artifact_path(ref).exists():
            datastore.adopt(ref)  # written by an earlier fixture on the same root
        else:
            datastore.put(payload(ref), ref)
    outputs = [make_ref(output_type, visit, detector=d, run=output_run) for d in range(n_outputs)]
    all_inputs: dict[str, list[DatasetRef]] = {input_type: inputs} if inputs else {}
    for name, refs in (extra_inputs or {}).items():
        all_inputs.setdefault(name, []).extend(refs)
    records: dict[str, Any] = dict(datastore.export_records([*written, *init_inputs]))
    for name, data in (extra_records or {}).items():
        extra = DatastoreRecordData.from_simple(data)
        records[name] = (
            DatastoreRecordData.from_simple(records[name]).update(extra)
            if name in records
            else extra
        )
    quantum = Quantum(
        task_label=task_label,
        data_id={"instrument": "DemoCam", "visit": visit, "detector": detector},
        inputs={k: tuple(v) for k, v in all_inputs.items()},
        init_inputs={ref.dataset_type.name: ref for ref in init_inputs},
        outputs={output_type: tuple(outputs)} if outputs else {},
        datastore_records=records,
    )
    return QuantumFixture(
        root=root,
        quantum=quantum,
        datastore=datastore,
        inputs=written,
        init_inputs=init_inputs,
        outputs=outputs,
        missing=missing,
    )
