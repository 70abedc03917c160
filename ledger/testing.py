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

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .butler import QuantumBackedButler
from .datastore import FileDatastore
from .model import DatasetRef, DatasetType
from .provenance import QuantumProvenanceData
from .quantum import Quantum
from .records import DatastoreRecordData

__all__ = [
    "PipelineRun",
    "QuantumFixture",
    "make_dataset_type",
    "make_quantum",
    "make_ref",
    "run_pipeline",
]

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


# --- a small pipeline, one ledger per quantum -------------------------------------------


@dataclass
class PipelineRun:
    """What `run_pipeline` ran: each quantum, its ledger, and its provenance (None if it failed)."""

    root: Path
    quanta: list[Quantum]
    ledgers: list[Path]
    provenance: list[QuantumProvenanceData | None]
    #: Dataset type name -> refs, in the order they were predicted.
    refs: dict[str, list[DatasetRef]]


def run_pipeline(
    root: str | Path,
    ledgers: str | Path,
    *,
    visits: int = 3,
    detectors: int = 2,
    fail: Collection[tuple[str, int, int]] = (),
    durability: Any = "normal",
) -> PipelineRun:
    """Run isr -> calibrate -> coadd over real files, each quantum into its own ledger.

    ``isr`` (visit, detector) reads ``raw`` and a ``bias``, and checks and defers a
    ``flat`` it then marks unused; ``calibrate`` reads ``postISRCCD`` and writes ``src``
    and ``calexp``; ``coadd`` (per detector, as ``visit`` 0) checks every
    visit's ``calexp`` with ``stored_many`` and reads those present. A
    ``(task, visit, detector)`` in ``fail`` raises after its first output, so
    its downstream quanta find inputs missing. Ledgers are
    ``LEDGERS/{task}-v{visit}-d{detector}.ledger``.
    """
    root, ledger_dir = Path(root), Path(ledgers)
    ledger_dir.mkdir(parents=True, exist_ok=True)
    repo = FileDatastore(root, fsync=False)
    run = PipelineRun(root=root, quanta=[], ledgers=[], provenance=[], refs={})

    def ref(name: str, visit: int, detector: int) -> DatasetRef:
        made = make_ref(name, visit, detector=detector, run="pipeline/run")
        run.refs.setdefault(name, []).append(made)
        return made

    for d in range(detectors):
        repo.put({"level": 100 + d}, ref("bias", 0, d))
        repo.put({"gain": 1.0}, ref("flat", 0, d))
        for v in range(1, visits + 1):
            repo.put(
                {"pixels": [100 + (v * 7 + d * 3 + i) % 50 for i in range(16)]}, ref("raw", v, d)
            )

    def execute(task: str, visit: int, detector: int, quantum: Quantum) -> None:
        ledger = ledger_dir / f"{task}-v{visit}-d{detector}.ledger"
        provenance: QuantumProvenanceData | None = None
        try:
            with QuantumBackedButler.initialize(
                root, quantum, ledger=ledger, durability=durability
            ) as butler:
                _PIPELINE_TASKS[task](butler, quantum, (task, visit, detector) in fail)
                provenance = butler.extract_provenance_data()
        except _InjectedFailureError:
            pass
        if provenance is not None:
            repo.import_records(provenance.datastore_records)
        run.quanta.append(quantum)
        run.ledgers.append(ledger)
        run.provenance.append(provenance)

    def quantum(
        task: str,
        visit: int,
        detector: int,
        inputs: dict[str, list[DatasetRef]],
        outputs: dict[str, list[DatasetRef]],
    ) -> Quantum:
        refs = [r for group in inputs.values() for r in group]
        return Quantum(
            task_label=task,
            data_id={"instrument": "DemoCam", "visit": visit, "detector": detector},
            inputs={k: tuple(v) for k, v in inputs.items()},
            outputs={k: tuple(v) for k, v in outputs.items()},
            datastore_records=dict(repo.export_records([r for r in refs if repo.exists(r)])),
        )

    for task in ("isr", "calibrate"):
        for v in range(1, visits + 1):
            for d in range(detectors):
                if task == "isr":
                    inputs = {
                        "raw": [ref("raw", v, d)],
                        "bias": [ref("bias", 0, d)],
                        "flat": [ref("flat", 0, d)],
                    }
                    outputs = {"postISRCCD": [ref("postISRCCD", v, d)]}
                else:
                    inputs = {"postISRCCD": [ref("postISRCCD", v, d)]}
                    outputs = {"src": [ref("src", v, d)], "calexp": [ref("calexp", v, d)]}
                execute(task, v, d, quantum(task, v, d, inputs, outputs))
    for d in range(detectors):
        inputs = {"calexp": [ref("calexp", v, d) for v in range(1, visits + 1)]}
        outputs = {"deepCoadd": [ref("deepCoadd", 0, d)]}
        execute("coadd", 0, d, quantum("coadd", 0, d, inputs, outputs))
    return run


class _InjectedFailureError(RuntimeError):
    """The failure `run_pipeline` injects into a quantum."""


def _isr(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    (raw,) = quantum.inputs["raw"]
    (bias,) = quantum.inputs["bias"]
    (flat,) = quantum.inputs["flat"]
    if butler.stored(flat):
        butler.getDeferred(flat)
    level = butler.get(bias)["level"]
    pixels = [p - level for p in butler.get(raw)["pixels"]]
    butler.markInputUnused(flat)  # the flat was not needed after all
    butler.put({"pixels": pixels}, quantum.outputs["postISRCCD"][0])


def _calibrate(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    (exposure,) = quantum.inputs["postISRCCD"]
    pixels = butler.get(exposure)["pixels"]
    butler.put({"n_sources": sum(p > 20 for p in pixels)}, quantum.outputs["src"][0])
    if fail:
        raise _InjectedFailureError("calibrate failed on purpose")
    butler.put({"pixels": pixels, "zero_point": 27.0}, quantum.outputs["calexp"][0])


def _coadd(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    refs = list(quantum.inputs["calexp"])
    present = butler.stored_many(refs)
    images = [butler.get(r) for r in refs if present[r]]
    butler.put({"n_visits": len(images)}, quantum.outputs["deepCoadd"][0])


_PIPELINE_TASKS: dict[str, Callable[[QuantumBackedButler, Quantum, bool], None]] = {
    "isr": _isr,
    "calibrate": _calibrate,
    "coadd": _coadd,
}
