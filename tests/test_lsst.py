"""`ledger.lsst` beside the real LSST stack: our replay equals upstream's own provenance.

A small upstream repository (``Butler.makeRepo``) is built once per module;
each example builds a fresh upstream ``QuantumBackedButler`` for a quantum with
a new output run, wraps it in `RecordingButler`, runs a random call sequence,
and checks that ``Ledger.open(file).replay()`` equals the wrapped butler's own
``extract_provenance_data()`` set by set, datastore records included.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

daf_butler = pytest.importorskip(
    "lsst.daf.butler",
    reason="needs the lsst extra (pip install 'quantum-ledger[lsst]'): lsst-daf-butler is absent",
)

# Imported after the skip above: without the extra these imports fail.
from docs_text import blocks, section  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lsst.daf.butler.datastore.stored_file_info import NULLSTR  # noqa: E402

from ledger import Ledger, QuantumProvenanceData  # noqa: E402
from ledger.errors import NoWorkFound  # noqa: E402
from ledger.lsst import (  # noqa: E402
    RecordingButler,
    from_upstream,
    quantum_from_upstream,
    to_upstream,
)
from ledger.recovery import recover  # noqa: E402

N_DETECTORS = 10
#: Detectors of: predicted raws on disk, predicted raws never written, an unpredicted raw on
#: disk, an unpredicted raw never written.
PRESENT, MISSING, EXTRA_PRESENT, EXTRA_MISSING = (0, 1, 2, 3), (5, 6), 4, 7
N_OUTPUTS = 3


@dataclass
class Repo:
    """An upstream repository with inputs written, and the pieces to build quanta over it."""

    root: Path
    butler: Any
    universe: Any
    raw: Any
    config: Any
    out: Any
    out_component: Any
    data_ids: list[Any]
    inputs: list[Any]  # predicted inputs on disk
    missing: list[Any]  # predicted inputs never written
    init_input: Any
    extra_present: Any  # on disk (found by the butler's trust mode) but not predicted
    extra_missing: Any
    records: dict[str, Any]
    ledger: Path  # one ledger for every example's quantum (a worker's shared ledger)
    runs: itertools.count[int]

    def quantum(self, n_outputs: int = N_OUTPUTS) -> tuple[Any, list[Any], Any]:
        """A quantum with a fresh output run: (quantum, its outputs, an unpredicted output)."""
        run = f"out/{next(self.runs)}"
        refs = [daf_butler.DatasetRef(self.out, self.data_ids[d], run=run) for d in range(8)]
        quantum = daf_butler.Quantum(
            taskName="example.IsrTask",
            dataId=self.data_ids[0],
            inputs={self.raw: [*self.inputs, *self.missing]},
            initInputs={self.config: self.init_input},
            outputs={self.out: refs[:n_outputs]},
            datastore_records=self.records,
        )
        return quantum, refs[:n_outputs], refs[n_outputs]

    def qbb(self, quantum: Any) -> Any:
        """A fresh upstream quantum-backed butler for ``quantum``."""
        return daf_butler.QuantumBackedButler.initialize(
            str(self.root),
            quantum,
            self.universe,
            dataset_types={t.name: t for t in (self.raw, self.config, self.out)},
        )

    def component_of(self, ref: Any) -> Any:
        """A component ref of ``ref`` (same id), which pruneDatasets refuses."""
        return daf_butler.DatasetRef(self.out_component, ref.dataId, run=ref.run, id=ref.id)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """One upstream repository for the module: building it takes a second, a QBB milliseconds."""
    root = tmp_path_factory.mktemp("upstream") / "repo"
    daf_butler.Butler.makeRepo(str(root))
    butler = daf_butler.Butler.from_config(str(root), writeable=True, run="raw/run")
    universe = butler.dimensions
    dims = ("instrument", "detector")
    raw = daf_butler.DatasetType("raw", dims, "StructuredDataDict", universe=universe)
    config = daf_butler.DatasetType("isr_config", (), "StructuredDataDict", universe=universe)
    out = daf_butler.DatasetType("postISR", dims, "StructuredDataDict", universe=universe)
    out_component = daf_butler.DatasetType(
        "postISR.wcs", dims, "StructuredDataDict", universe=universe,
        parentStorageClass="StructuredDataDict",
    )  # fmt: skip
    for dataset_type in (raw, config, out):
        butler.registry.registerDatasetType(dataset_type)
    butler.registry.insertDimensionData(
        "instrument",
        {
            "name": "Cam",
            "detector_max": 100,
            "visit_max": 10,
            "exposure_max": 10,
            "visit_system": 0,
        },
    )
    butler.registry.insertDimensionData(
        "detector",
        *[{"instrument": "Cam", "id": d, "full_name": f"d{d}"} for d in range(N_DETECTORS)],
    )
    # Expanded data IDs: the default file template names detector.full_name.
    data_ids = [
        butler.registry.expandDataId(instrument="Cam", detector=d) for d in range(N_DETECTORS)
    ]
    written = {d: butler.put({"detector": d}, raw, data_ids[d]) for d in (*PRESENT, EXTRA_PRESENT)}
    init_input = butler.put({"threshold": 5}, config, {})
    inputs = [written[d] for d in PRESENT]
    records = butler._datastore.export_records([*inputs, init_input])
    ledger = root.parent / "shared.ledger"
    return Repo(
        root=root,
        butler=butler,
        universe=universe,
        raw=raw,
        config=config,
        out=out,
        out_component=out_component,
        data_ids=data_ids,
        inputs=inputs,
        missing=[daf_butler.DatasetRef(raw, data_ids[d], run="raw/run") for d in MISSING],
        init_input=init_input,
        extra_present=written[EXTRA_PRESENT],
        extra_missing=daf_butler.DatasetRef(raw, data_ids[EXTRA_MISSING], run="raw/run"),
        records=records,
        ledger=ledger,
        runs=itertools.count(),
    )


# --- comparing provenance -----------------------------------------------------------------

SETS = ("predicted_inputs", "available_inputs", "actual_inputs", "predicted_outputs")


def _our_records(provenance: QuantumProvenanceData) -> dict[str, Any]:
    """Per datastore: the dataset ids listed, and every record as a tuple."""
    result = {}
    for name, data in provenance.datastore_records.items():
        rows = {
            (
                uuid.UUID(dataset_id),
                r["path"],
                r["formatter"],
                r["storage_class"],
                r["component"],
                r["checksum"],
                r["file_size"],
            )
            for table in data.records.values()
            for dataset_id, records in table.items()
            for r in records
        }
        result[name] = (set(data.dataset_ids), rows)
    return result


def _component(record: dict[str, Any]) -> str | None:
    """Upstream writes a missing component as its NULLSTR marker."""
    return None if record["component"] == NULLSTR else record["component"]


def _upstream_records(provenance: Any) -> dict[str, Any]:
    """The same, read straight from upstream's serialized shape (no conversion code of ours)."""
    result = {}
    for name, data in provenance.datastore_records.items():
        rows = {
            (
                uuid.UUID(hex_id),
                r["path"],
                r["formatter"],
                r["storage_class"],
                _component(r),
                r["checksum"],
                r["file_size"],
            )
            for by_id in data.records.values()
            for hex_id, tables in by_id.items()
            for records in tables.values()
            for r in records
        }
        result[name] = ({uuid.UUID(str(i)) for i in data.dataset_ids}, rows)
    return result


def assert_same_provenance(ours: QuantumProvenanceData, theirs: Any) -> None:
    """Set by set, then the datastore records with their dataset ids."""
    for name in SETS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.actual_outputs == theirs.actual_outputs, "actual_outputs"
    assert _our_records(ours) == _upstream_records(theirs)


# --- the differential test ------------------------------------------------------------------

#: Indices into the pool of refs built per example (see `_pool`).
_POOL = 14
_OUTPUTS = range(_POOL - 2 - N_OUTPUTS, _POOL - 1)  # the predicted outputs and the unpredicted one
_FLAGS = st.tuples(st.booleans(), st.booleans(), st.booleans())


@st.composite
def _sequences(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Calls on a few refs of the pool (outputs often), so that calls on one ref meet often."""
    any_ref = st.one_of(st.integers(0, _POOL - 1), st.sampled_from(_OUTPUTS))
    focus = draw(st.lists(any_ref, min_size=1, max_size=5, unique=True))
    ref = st.sampled_from(focus)
    op = st.one_of(
        st.tuples(st.just("get"), ref),
        st.tuples(st.just("get_bad_parameter"), ref),
        st.tuples(st.just("get_bad_storage_class"), ref),
        st.tuples(st.just("get_deferred"), ref, st.booleans()),
        st.tuples(st.just("stored"), ref),
        st.tuples(st.just("stored_many"), st.lists(ref, max_size=4)),
        st.tuples(st.just("mark_unused"), ref),
        st.tuples(st.just("put"), ref, st.booleans()),
        st.tuples(st.just("prune"), st.lists(ref, max_size=3, unique=True), _FLAGS),
    )
    return draw(st.lists(op, max_size=30))


def _pool(repo: Repo, outputs: list[Any], unpredicted: Any) -> list[Any]:
    """Every kind of ref a task may touch: predicted or not, present or not, inputs and outputs."""
    pool = [
        *repo.inputs,
        repo.init_input,
        *repo.missing,
        repo.extra_present,
        repo.extra_missing,
        *outputs,
        unpredicted,
    ]
    assert len(pool) == _POOL - 1
    return [*pool, repo.component_of(outputs[0])]


def _run(
    butler: RecordingButler, qbb: Any, repo: Repo, ops: list[tuple[Any, ...]], pool: list[Any]
) -> None:
    """Apply ``ops``, comparing both provenances after each (errors raised are upstream's)."""
    for n, op in enumerate(ops):
        kind = op[0]
        try:
            if kind == "get":
                butler.get(pool[op[1]])
            elif kind == "get_bad_parameter":  # upstream raises KeyError: a LookupError
                butler.get(pool[op[1]], parameters={"no_such_parameter": 1})
            elif kind == "get_bad_storage_class":  # ValueError: an error, not missing
                butler.get(pool[op[1]], storageClass="StructuredDataList")
            elif kind == "get_deferred":
                handle = butler.getDeferred(pool[op[1]])
                if op[2]:
                    handle.get()
            elif kind == "stored":
                butler.stored(pool[op[1]])
            elif kind == "stored_many":
                butler.stored_many([pool[i] for i in op[1]])
            elif kind == "mark_unused":
                butler.markInputUnused(pool[op[1]])
            elif kind == "put":
                provenance = None
                if op[2]:
                    provenance = daf_butler.DatasetProvenance(quantum_id=butler.quantum_id)
                    provenance.add_input(repo.inputs[0])
                butler.put({"n": n}, pool[op[1]], provenance=provenance)
            elif kind == "prune":
                disassociate, unstore, purge = op[2]
                refs = [pool[i] for i in op[1]]
                if unstore:  # unstoring an input would delete the shared repository's files
                    refs = [r for r in refs if r.datasetType.name != "raw" and r != repo.init_input]
                butler.pruneDatasets(refs, disassociate=disassociate, unstore=unstore, purge=purge)
        except Exception:  # expected: the differential check compares what both recorded
            pass
        # Upstream's extract only drops unavailable ids from its actual inputs, which
        # the final result drops anyway: checking after every call changes nothing.
        assert_same_provenance(butler.provenance(), qbb.extract_provenance_data())


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_sequences())
def test_replay_equals_upstream_provenance(repo: Repo, ops: list[tuple[Any, ...]]) -> None:
    """For random call sequences, the ledger's replay equals upstream's extract_provenance_data."""
    quantum, outputs, unpredicted = repo.quantum()
    pool = _pool(repo, outputs, unpredicted)
    qbb = repo.qbb(quantum)
    try:
        with RecordingButler(qbb, quantum, ledger=repo.ledger) as butler:
            _run(butler, qbb, repo, ops, pool)
            live = butler.extract_provenance_data()  # upstream type, replayed through the writer
            theirs = qbb.extract_provenance_data()  # before the block's end closes both
    finally:
        qbb.close()
    with Ledger.open(repo.ledger) as led:
        ours = led.replay(butler.quantum_id)
    assert_same_provenance(ours, theirs)
    assert_same_provenance(from_upstream(live), theirs)


# --- what is recorded ---------------------------------------------------------------------------


def test_quantum_is_recorded_in_datasets(repo: Repo, tmp_path: Path) -> None:
    """The upstream quantum's refs, types, data IDs, runs and input records land in datasets."""
    quantum, outputs, _ = repo.quantum()
    path = tmp_path / "q.ledger"
    with repo.qbb(quantum) as qbb, RecordingButler(qbb, quantum, ledger=path, task_label="isr"):
        pass
    with Ledger.open(path) as led:
        rebuilt = led.quantum()
        rows = {
            r[0]: r[1:]
            for r in led.rows(
                "SELECT dataset_id, role, dataset_type, storage_class, dimensions, data_id, run, "
                "datastore_records FROM datasets"
            )
        }
    first = repo.inputs[0]
    role, dataset_type, storage_class, dims, data_id, run, records = rows[str(first.id)]
    assert (role, dataset_type, storage_class, run) == (
        "input",
        "raw",
        "StructuredDataDict",
        "raw/run",
    )
    assert json.loads(dims) == ["instrument", "detector"]
    assert json.loads(data_id) == {"instrument": "Cam", "detector": 0}
    (name,) = repo.records
    (record,) = json.loads(records)[name]
    assert record["path"] == repo.records[name].records[first.id]["file_datastore_records"][0].path
    assert rows[str(repo.init_input.id)][0] == "init_input"
    assert rows[str(repo.missing[0].id)][-1] is None  # never written: no record
    assert {r.id for r in rebuilt.iter_predicted_outputs()} == {r.id for r in outputs}
    assert rebuilt.task_label == "isr"


def _within(butler: RecordingButler, task: Any) -> None:
    """Run ``task(butler)`` inside the butler's context, as an executor does."""
    with butler:
        task(butler)


def test_lifecycle_events_match_our_butler(repo: Repo, tmp_path: Path) -> None:
    """quantum_started carries environment and definition; failures and NoWorkFound are recorded."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()

    def fails(butler: RecordingButler) -> None:
        butler.put({"a": 1}, outputs[0])
        raise ZeroDivisionError("the task failed")

    def finds_no_work(butler: RecordingButler) -> None:
        raise NoWorkFound("nothing to do")

    first = RecordingButler(repo.qbb(quantum), quantum, ledger=path)
    with pytest.raises(ZeroDivisionError):
        _within(first, fails)
    second = RecordingButler(repo.qbb(quantum), quantum, ledger=path, quantum_id=first.quantum_id)
    with pytest.raises(NoWorkFound):
        _within(second, finds_no_work)
    with Ledger.open(path) as led:
        events = list(led.events())
        assert led.verify().ok
    started = [e for e in events if e.kind == "quantum_started"]
    assert [e.attempt for e in started] == [1, 2]
    detail = started[0].detail or {}
    assert {"host", "pid", "user", "python_version", "definition"} <= set(detail)
    assert detail["wrapped_butler"].endswith("QuantumBackedButler")
    assert "definition" not in (started[1].detail or {})  # the second attempt adds no rows
    failed = next(e for e in events if e.kind == "quantum_failed")
    assert failed.error_type == "ZeroDivisionError"
    assert "ZeroDivisionError" in (failed.detail or {})["traceback"]
    succeeded = next(e for e in events if e.kind == "quantum_succeeded")
    assert succeeded.attempt == 2
    assert (succeeded.detail or {})["caveats"] == ["no_work", "some_outputs_missing"]


def test_outcomes_and_details(repo: Repo, tmp_path: Path) -> None:
    """Each call's outcome and detail: rejected put and prune, missing, put record, provenance."""
    path = tmp_path / "q.ledger"
    quantum, outputs, unpredicted = repo.quantum()
    with repo.qbb(quantum) as qbb, RecordingButler(qbb, quantum, ledger=path) as b:
        assert isinstance(b, daf_butler.LimitedButler)
        with pytest.raises(RuntimeError, match="not predicted"):
            b.put({"a": 1}, unpredicted)
        with pytest.raises(FileNotFoundError):
            b.get(repo.missing[0])
        assert b.stored_many([repo.inputs[0], repo.missing[0]]) == {
            repo.inputs[0]: True,
            repo.missing[0]: False,
        }
        provenance = daf_butler.DatasetProvenance(quantum_id=b.quantum_id)
        provenance.add_input(repo.inputs[0])
        b.put({"a": 1}, outputs[0], provenance=provenance)
        with pytest.raises(TypeError):
            b.pruneDatasets([outputs[0]], unstore=True)  # disassociate without purge
        with pytest.raises(ValueError, match="component"):
            b.pruneDatasets([repo.component_of(outputs[0])], disassociate=False)
        assert b.getDeferred(repo.inputs[1]).get() == {"detector": 1}
        written = b._datastore.export_records([outputs[0]])
    with Ledger.open(path) as led:
        events = [e for e in led.events() if e.dataset_id is not None]
    summary = [(e.kind, e.outcome) for e in events]
    assert summary == [
        ("put", "rejected"),
        ("get", "missing"),
        ("stored", "ok"),
        ("stored", "missing"),
        ("put", "ok"),
        ("prune", "rejected"),
        ("prune", "rejected"),
        ("get_deferred", "ok"),
        ("get", "ok"),
    ]
    put = events[4].detail or {}
    (name,) = written
    (info,) = written[name].records[outputs[0].id]["file_datastore_records"]
    assert put["datastore"] == name
    assert put["records"] == [
        {
            "path": info.path,
            "formatter": info.formatter,
            "storage_class": "StructuredDataDict",
            "component": None,
            "checksum": info.checksum,
            "file_size": info.file_size,
        }
    ]
    assert put["provenance"] == {
        "quantum_id": str(b.quantum_id),
        "inputs": [str(repo.inputs[0].id)],
    }
    assert (events[5].detail or {}) == {"disassociate": True, "unstore": True, "purge": False}
    assert events[5].error_type == "TypeError"


def test_conversions_round_trip(repo: Repo) -> None:
    """to_upstream and from_upstream invert each other, datastore records and JSON included."""
    quantum, outputs, _ = repo.quantum()
    with repo.qbb(quantum) as qbb:
        qbb.stored_many([*repo.inputs, *repo.missing])
        qbb.get(repo.inputs[0])
        for n, ref in enumerate(outputs[:2]):
            qbb.put({"n": n}, ref)
        theirs = qbb.extract_provenance_data()
    ours = from_upstream(theirs)
    assert_same_provenance(ours, theirs)
    back = to_upstream(ours)
    assert_same_provenance(ours, back)
    assert (
        back.model_dump(mode="json")["datastore_records"]
        == json.loads(theirs.model_dump_json())["datastore_records"]
    )
    assert from_upstream(json.loads(theirs.model_dump_json())) == ours
    # Upstream reads back what we convert, and its collect_and_transfer accepts it.
    assert daf_butler.QuantumProvenanceData.direct(**json.loads(back.model_dump_json())) == back


def test_quantum_conversion_keeps_absolute_records_apart(repo: Repo) -> None:
    """Input records with absolute paths (files ingested in place) are returned apart, not lost."""
    from lsst.daf.butler.datastore.record_data import DatastoreRecordData

    quantum, _, _ = repo.quantum()
    (name,) = repo.records
    records = {k: dict(v) for k, v in repo.records[name].records.items()}
    first = repo.inputs[0].id
    (info,) = records[first]["file_datastore_records"]
    records[first] = {"file_datastore_records": [info.update(path="/data/raw/file.yaml")]}
    quantum = daf_butler.Quantum(
        taskName=quantum.taskName,
        dataId=quantum.dataId,
        inputs=quantum.inputs,
        initInputs=quantum.initInputs,
        outputs=quantum.outputs,
        datastore_records={name: DatastoreRecordData(records=records)},
    )
    ours, external = quantum_from_upstream(quantum)
    assert external[name][str(first)][0]["path"] == "/data/raw/file.yaml"
    assert ours.datastore_records[name].records[first] == ()
    assert ours.datastore_records[name].records[repo.inputs[1].id][0].path.startswith("raw/")


def test_core_does_not_import_lsst() -> None:
    """Importing the library (and its CLI) never imports lsst: only ledger.lsst does."""
    code = (
        "import sys, ledger, ledger.cli, ledger.recovery; "
        "assert not [m for m in sys.modules if m.startswith('lsst')], 'lsst imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- upstream misbehaviours, and what the ledger records ----------------------------------------


def _datastore_config(repo: Repo, butler: RecordingButler, tmp_path: Path) -> Path:
    """Our datastore config for the upstream root, under upstream's datastore name."""
    config = tmp_path / "upstream-datastore.yaml"
    config.write_text(f"root: {repo.root}\nname: '{butler.datastore_name}'\n")
    return config


def test_repeated_put_loses_the_first_artifact_and_the_ledger_says_so(
    repo: Repo, tmp_path: Path
) -> None:
    """Upstream (a): a second put of one ref deletes its file; the ledger and verify show it."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    with repo.qbb(quantum) as qbb, RecordingButler(qbb, quantum, ledger=path) as b:
        b.put({"first": 1}, outputs[0])
        artifact = Path(b.getURI(outputs[0]).ospath)
        assert artifact.is_file()
        with pytest.raises(Exception, match="UNIQUE constraint failed"):
            b.put({"second": 2}, outputs[0])
        assert not artifact.exists()  # upstream deleted the first artifact...
        theirs = qbb.extract_provenance_data()  # ...and still lists it, with its record
        assert outputs[0].id in theirs.actual_outputs
        config = _datastore_config(repo, b, tmp_path)
    with Ledger.open(path) as led:
        failed = next(led.events(kind="put", outcome="error"))
        report = led.verify()
    assert failed.error_type == "IntegrityError"
    assert (failed.detail or {})["after"]["artifact_exists"] is False
    assert (failed.detail or {})["after"]["records"][0]["path"] == artifact.relative_to(
        repo.root
    ).as_posix()
    assert report.ok  # the chain is intact; the artifact check below finds the loss
    cli = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(path), "--datastore", str(config)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1
    assert f"of dataset {outputs[0].id} is missing" in cli.stdout + cli.stderr


def test_unstoring_a_lost_artifact_alone_keeps_its_record(repo: Repo, tmp_path: Path) -> None:
    """Upstream keeps a lost artifact's record when unstored alone, not with others; so do we."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    with repo.qbb(quantum) as qbb, RecordingButler(qbb, quantum, ledger=path) as b:
        for n, ref in enumerate(outputs):
            b.put({"n": n}, ref)
        for ref in outputs[:2]:
            with pytest.raises(Exception, match="UNIQUE constraint failed"):
                b.put({"again": 1}, ref)  # loses the artifact, keeps the record
        b.pruneDatasets([outputs[0]], disassociate=False, unstore=True)  # alone
        b.pruneDatasets(outputs[1:], disassociate=False, unstore=True)  # with another
        theirs = qbb.extract_provenance_data()
    with Ledger.open(path) as led:
        prunes = list(led.events(kind="prune"))
        ours = led.replay()
    assert [(e.dataset_id, e.outcome) for e in prunes] == [
        (outputs[0].id, "missing"),
        (outputs[1].id, "ok"),
        (outputs[2].id, "ok"),
    ]
    assert (prunes[0].detail or {})["kept"]["artifact_exists"] is False
    (data,) = theirs.datastore_records.values()
    assert data.dataset_ids == [outputs[0].id]
    assert_same_provenance(ours, theirs)


def test_unstore_without_purge_keeps_an_output_without_record(repo: Repo, tmp_path: Path) -> None:
    """Upstream (b): an actual output with no record stays; upstream then registers it fileless."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()

    def prunes_then_fails(butler: RecordingButler) -> None:
        butler.put({"a": 1}, outputs[0])
        butler.put({"b": 2}, outputs[1])
        butler.pruneDatasets([outputs[0]], disassociate=False, unstore=True, purge=False)
        seen.append(qbb.extract_provenance_data())  # before the end closes upstream's butler
        raise RuntimeError("the task failed after pruning")

    seen: list[Any] = []
    with repo.qbb(quantum) as qbb:
        butler = RecordingButler(qbb, quantum, ledger=path)
        config = _datastore_config(repo, butler, tmp_path)
        with pytest.raises(RuntimeError):
            _within(butler, prunes_then_fails)
    (theirs,) = seen
    assert outputs[0].id in theirs.actual_outputs
    assert [outputs[1].id] == next(iter(theirs.datastore_records.values())).dataset_ids
    # Upstream's collect_and_transfer registers both; the pruned one has no file.
    repo.butler.registry.registerRun(outputs[0].run)
    daf_butler.QuantumProvenanceData.collect_and_transfer(repo.butler, [quantum], [theirs])
    assert repo.butler.stored(outputs[1])
    assert not repo.butler.stored(outputs[0])
    # The ledger replays the same sets, says why (the prune's flags), and recovery lists it.
    with Ledger.open(path) as led:
        assert_same_provenance(led.replay(), theirs)
        prune = next(led.events(kind="prune"))
    assert prune.detail == {"disassociate": False, "unstore": True, "purge": False}
    (quantum_report,) = recover(path, config).quanta
    assert [o.dataset_id for o in quantum_report.outputs_unstored] == [outputs[0].id]


def test_failed_unpredicted_get_gives_an_empty_unchecked_warning(
    repo: Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream (c): its warning names an empty set; the ledger has the get and warns nothing."""
    path = tmp_path / "q.ledger"
    quantum, _, _ = repo.quantum()
    with repo.qbb(quantum) as qbb, RecordingButler(qbb, quantum, ledger=path) as b:
        b.stored_many([*repo.inputs, *repo.missing, repo.init_input])
        with pytest.raises(FileNotFoundError):
            b.get(repo.extra_missing)
        ours = b.replay()
        with caplog.at_level(logging.WARNING, logger="lsst.daf.butler"):
            qbb.extract_provenance_data()
    assert re.search(r"did not check predicted inputs set\(\)", caplog.text)
    assert ours.warnings() == []
    with Ledger.open(path) as led:
        (get,) = led.events(kind="get")
    assert (get.dataset_id, get.outcome, get.error_type) == (
        repo.extra_missing.id,
        "missing",
        "FileNotFoundError",
    )


# --- the README example -------------------------------------------------------------------

EXECUTOR_EXAMPLE = textwrap.dedent(
    """\
    from pathlib import Path

    from lsst.daf.butler import QuantumBackedButler

    from ledger import Ledger
    from ledger.lsst import RecordingButler, to_upstream


    def execute(repo, universe, quanta, run_task, ledgers: Path):
        \"\"\"Run each (quantum_id, quantum); return upstream provenance, replayed.\"\"\"
        provenance = []
        for quantum_id, quantum in quanta:
            path = ledgers / f"{quantum_id}.ledger"
            with (
                QuantumBackedButler.initialize(repo, quantum, universe) as qbb,
                RecordingButler(qbb, quantum, ledger=path, quantum_id=quantum_id) as butler,
            ):
                inputs = [ref for refs in quantum.inputs.values() for ref in refs]
                butler.stored_many(inputs)  # the executor's existence check, recorded
                run_task(butler, quantum)  # e.g. task.runQuantum(QuantumContext(butler, ...), ...)
            # A failing task is recorded (quantum_failed) and re-raised by the with block.
            with Ledger.open(path) as led:  # the ledger, not memory, is the record
                provenance.append(to_upstream(led.replay()))
        return provenance
    """
)


def _run_task(butler: Any, quantum: Any) -> None:
    """A stand-in task: read what exists, write every output."""
    for ref in quantum.inputs[next(iter(quantum.inputs))]:
        if butler.stored(ref):
            butler.get(ref)
    for n, ref in enumerate(quantum.outputs[next(iter(quantum.outputs))]):
        butler.put({"n": n}, ref)


def test_executor_example_runs(repo: Repo, tmp_path: Path) -> None:
    """The README's per-quantum loop runs on a real upstream repository and ledgers verify."""
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(EXECUTOR_EXAMPLE, "README.md[lsst]", "exec"), namespace)
    quanta = [(uuid.uuid4(), repo.quantum(n_outputs=2)[0]) for _ in range(2)]
    provenance = namespace["execute"](str(repo.root), repo.universe, quanta, _run_task, tmp_path)
    assert len(provenance) == 2
    for (quantum_id, quantum), prov in zip(quanta, provenance, strict=True):
        assert isinstance(prov, daf_butler.QuantumProvenanceData)
        assert prov.actual_outputs == {r.id for refs in quantum.outputs.values() for r in refs}
        assert prov.actual_inputs == {r.id for r in repo.inputs}
        with Ledger.open(tmp_path / f"{quantum_id}.ledger") as led:
            assert led.verify().ok
            assert led.status()[0]["status"] == "succeeded"


def test_readme_shows_the_tested_executor_example() -> None:
    """The README's LSST section holds exactly the example the test above runs."""
    assert EXECUTOR_EXAMPLE in blocks("python", section("lsst"))
