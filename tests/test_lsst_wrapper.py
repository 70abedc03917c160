"""`RecordingButler` as upstream's executor uses it: its end, its closing, chains, attempts.

Upstream's ``SingleQuantumExecutor`` builds the butler with a factory and calls
``close()`` in a ``finally``: the end is recorded there, once, and the wrapped
butler closed. Beside it: chained datastores, second attempts, ``from_predicted``
and artifact retrieval, each compared with the wrapped upstream butler.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import unittest
import uuid
from pathlib import Path
from typing import Any

import pytest

daf_butler = pytest.importorskip(
    "lsst.daf.butler",
    reason="needs the lsst extra (pip install 'quantum-ledger[lsst]'): lsst-daf-butler is absent",
)

# Imported after the skip above: without the extra these imports fail.
from test_lsst import Repo, assert_same_provenance, repo  # noqa: E402, F401 -- the fixture

from ledger import ButlerClosedError, Ledger  # noqa: E402
from ledger.errors import NoWorkFound  # noqa: E402
from ledger.lsst import RecordingButler, from_upstream  # noqa: E402


class _Spy:
    """Counts the calls of one method of an object, still calling it."""

    def __init__(self, owner: Any, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)


def _fail_then_close(butler: RecordingButler, error: BaseException) -> None:
    """Raise ``error`` with ``close()`` in a finally, as upstream's executor closes its butler."""
    try:
        raise error
    finally:
        butler.close()


def _events(path: Path) -> list[Any]:
    with Ledger.open(path) as led:
        return list(led.events())


# --- the end, recorded at close ---------------------------------------------------------------


def test_close_in_a_finally_records_the_exception_in_flight(repo: Repo, tmp_path: Path) -> None:
    """close() in a finally while a task's exception propagates records quantum_failed with it."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    qbb = repo.qbb(quantum)
    closed = _Spy(qbb, "close")
    butler = RecordingButler(qbb, quantum, ledger=path)
    butler.put({"a": 1}, outputs[0])
    with pytest.raises(ZeroDivisionError):
        _fail_then_close(butler, ZeroDivisionError("the task failed"))
    butler.close()  # again: nothing more
    failed = [
        e for e in _events(path) if e.kind.startswith("quantum_") and e.kind != "quantum_started"
    ]
    assert [(e.kind, e.error_type, e.error_message) for e in failed] == [
        ("quantum_failed", "ZeroDivisionError", "the task failed")
    ]
    assert closed.calls == 1
    with Ledger.open(path) as led:
        assert led.status()[0]["status"] == "failed"


def test_close_without_an_exception_records_success_once(repo: Repo, tmp_path: Path) -> None:
    """close() with nothing propagating records one quantum_succeeded and closes upstream's."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum(n_outputs=1)
    qbb = repo.qbb(quantum)
    closed = _Spy(qbb, "close")
    butler = RecordingButler(qbb, quantum, ledger=path)
    butler.put({"a": 1}, outputs[0])
    butler.close()
    butler.close()
    butler.finish()
    kinds = [e.kind for e in _events(path)]
    assert kinds == ["quantum_started", "put", "quantum_succeeded"]
    assert closed.calls == 1


def test_an_exception_handled_around_the_butler_is_not_its_end(repo: Repo, tmp_path: Path) -> None:
    """A butler made and closed inside an except block records success, not that exception."""
    path = tmp_path / "q.ledger"
    quantum, _, _ = repo.quantum()
    try:
        raise KeyError("handled by the caller")
    except KeyError:
        butler = RecordingButler(repo.qbb(quantum), quantum, ledger=path)
        butler.close()
    assert [e.kind for e in _events(path)][-1] == "quantum_succeeded"


def test_no_work_found_in_flight_is_a_success_with_the_no_work_caveat(
    repo: Repo, tmp_path: Path
) -> None:
    """close() while NoWorkFound propagates records success with the no_work caveat."""
    path = tmp_path / "q.ledger"
    quantum, _, _ = repo.quantum()
    butler = RecordingButler(repo.qbb(quantum), quantum, ledger=path)
    with pytest.raises(NoWorkFound):
        _fail_then_close(butler, NoWorkFound("nothing to do"))
    end = _events(path)[-1]
    assert end.kind == "quantum_succeeded"
    assert "no_work" in (end.detail or {})["caveats"]


def test_calls_after_close_never_reach_upstream(repo: Repo, tmp_path: Path) -> None:
    """After close every call raises ButlerClosedError: no artifact written, nothing recorded."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    qbb = repo.qbb(quantum)
    butler = RecordingButler(qbb, quantum, ledger=path)
    artifact = Path(butler.getURI(outputs[0], predict=True).ospath)
    butler.close()
    put = _Spy(qbb, "put")
    with pytest.raises(ButlerClosedError, match="after close"):
        butler.put({"a": 1}, outputs[0])
    assert put.calls == 0
    assert not artifact.exists()
    for call in (butler.get, butler.stored, butler.markInputUnused, butler.getDeferred):
        with pytest.raises(ButlerClosedError):
            call(repo.inputs[0])
    with pytest.raises(ButlerClosedError):
        butler.stored_many(repo.inputs)
    with pytest.raises(ButlerClosedError):
        butler.pruneDatasets(outputs, disassociate=True, unstore=True, purge=True)
    with pytest.raises(ButlerClosedError):
        butler.getURI(outputs[0])  # forwarded methods too
    with pytest.raises(ButlerClosedError):
        butler.retrieve_artifacts(repo.inputs, f"{tmp_path}/out/")
    kinds = [e.kind for e in _events(path)]
    assert kinds == ["quantum_started", "quantum_succeeded"]


def test_no_private_name_shadows_upstreams(repo: Repo, tmp_path: Path) -> None:
    """The wrapper's private names are its own (_ledger_*): upstream's read the wrapped butler's."""
    quantum, _, _ = repo.quantum()
    qbb = repo.qbb(quantum)
    with RecordingButler(qbb, quantum, ledger=tmp_path / "q.ledger") as butler:
        assert butler._predicted_inputs is qbb._predicted_inputs
        assert butler._predicted_outputs is qbb._predicted_outputs
        assert butler._datastore is qbb._datastore
        upstream = set(dir(qbb))
        own = [n for n in vars(butler) if n.startswith("_")]
        assert own
        assert all(n.startswith("_ledger_") and n not in upstream for n in own)
        methods = [n for n in vars(RecordingButler) if n.startswith("_") and not n.startswith("__")]
        assert all(n.startswith("_ledger_") for n in methods), methods


# --- the records of a put, from the datastore's in-memory path ------------------------------------


def test_put_records_come_from_the_put_not_a_read_back(repo: Repo, tmp_path: Path) -> None:
    """A put does not read its datastore record back: export_records is not called by it."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    qbb = repo.qbb(quantum)
    with RecordingButler(qbb, quantum, ledger=path) as butler:
        exported = _Spy(qbb._datastore, "export_records")
        for n, ref in enumerate(outputs):
            butler.put({"n": n}, ref)
        assert exported.calls == 0
        theirs = qbb.extract_provenance_data()
    with Ledger.open(path) as led:
        assert_same_provenance(led.replay(), theirs)


# --- chained datastores ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A repository whose datastore is a chain of two file datastores (one with its own table)."""
    root = tmp_path_factory.mktemp("chained") / "repo"
    file_datastore = "lsst.daf.butler.datastores.fileDatastore.FileDatastore"
    config = daf_butler.Config(
        {
            "datastore": {
                "cls": "lsst.daf.butler.datastores.chainedDatastore.ChainedDatastore",
                "datastores": [
                    {
                        "datastore": {
                            "name": "First",
                            "cls": file_datastore,
                            "root": "<butlerRoot>/a",
                        }
                    },
                    {
                        "datastore": {
                            "name": "Second",
                            "cls": file_datastore,
                            "root": "<butlerRoot>/b",
                            "records": {"table": "second_records"},
                        }
                    },
                ],
            }
        }
    )
    daf_butler.Butler.makeRepo(str(root), config=config)
    butler = daf_butler.Butler.from_config(str(root), writeable=True, run="in")
    universe = butler.dimensions
    empty = daf_butler.DataCoordinate.make_empty(universe)
    raw = daf_butler.DatasetType("raw", (), "StructuredDataDict", universe=universe)
    out = daf_butler.DatasetType("out", (), "StructuredDataDict", universe=universe)
    for dataset_type in (raw, out):
        butler.registry.registerDatasetType(dataset_type)
    inputs = []
    for i in range(3):
        butler.registry.registerRun(f"in/{i}")
        inputs.append(butler.put({"i": i}, daf_butler.DatasetRef(raw, empty, run=f"in/{i}")))
    return {
        "root": root,
        "universe": universe,
        "types": {"raw": raw, "out": out},
        "empty": empty,
        "inputs": inputs,
        "records": butler._datastore.export_records(inputs),
        "runs": iter(range(1000)),
    }


def _chained_quantum(chained: dict[str, Any]) -> tuple[Any, list[Any], Any]:
    run = f"out/{next(chained['runs'])}"
    out = chained["types"]["out"]
    outputs = [daf_butler.DatasetRef(out, chained["empty"], run=f"{run}/{i}") for i in range(2)]
    quantum = daf_butler.Quantum(
        taskName="example.Task",
        dataId=chained["empty"],
        inputs={chained["types"]["raw"]: chained["inputs"]},
        outputs={out: outputs},
        datastore_records=chained["records"],
    )
    qbb = daf_butler.QuantumBackedButler.initialize(
        str(chained["root"]), quantum, chained["universe"], dataset_types=chained["types"]
    )
    return quantum, outputs, qbb


def _unordered(value: Any) -> Any:
    """A JSON dump with every list sorted: upstream's sets of ids dump in no fixed order."""
    if isinstance(value, dict):
        return {k: _unordered(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_unordered(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def test_chained_datastore_records_every_child(chained: dict[str, Any], tmp_path: Path) -> None:
    """A chain: every child's records, under upstream's names, with no call and after puts."""
    path = tmp_path / "q.ledger"
    quantum, outputs, qbb = _chained_quantum(chained)
    with RecordingButler(qbb, quantum, ledger=path) as butler:
        assert butler.datastore_names == ("First", "Second")
        assert_same_provenance(butler.provenance(), qbb.extract_provenance_data())  # no call
        butler.stored_many(chained["inputs"])
        butler.get(chained["inputs"][0])
        butler.put({"a": 1}, outputs[0])
        theirs = qbb.extract_provenance_data()
        live = butler.extract_provenance_data()
    assert set(theirs.datastore_records) == {"First", "Second"}
    assert _unordered(live.model_dump(mode="json")) == _unordered(theirs.model_dump(mode="json"))
    with Ledger.open(path) as led:
        assert_same_provenance(led.replay(), theirs)
        assert led.verify().ok


# --- attempts, from_predicted, retrieval ------------------------------------------------------


def test_extract_is_the_current_attempts_as_upstreams(repo: Repo, tmp_path: Path) -> None:
    """A second attempt's extract_provenance_data is its upstream butler's, not both attempts'."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    first = RecordingButler(repo.qbb(quantum), quantum, ledger=path)
    first.stored_many(repo.inputs)
    first.get(repo.inputs[0])
    first.put({"a": 1}, outputs[0])
    first.close()
    qbb = repo.qbb(quantum)
    with RecordingButler(qbb, quantum, ledger=path, quantum_id=first.quantum_id) as second:
        second.stored(repo.inputs[1])
        second.put({"b": 2}, outputs[1])
        ours, theirs = second.extract_provenance_data(), qbb.extract_provenance_data()
        both = second.provenance(all_attempts=True)
    assert _unordered(ours.model_dump(mode="json")) == _unordered(theirs.model_dump(mode="json"))
    assert outputs[0].id in both.actual_outputs
    with Ledger.open(path) as led:
        assert_same_provenance(led.replay(attempt=2), theirs)


def test_from_predicted_records_the_predicted_refs(repo: Repo, tmp_path: Path) -> None:
    """from_predicted: refs or ids (resolved or not) are predicted; replay equals upstream's."""
    path = tmp_path / "q.ledger"
    _, outputs, _ = repo.quantum()
    inputs = [*repo.inputs, repo.init_input]
    records = repo.butler._datastore.export_records(inputs)
    qbb = daf_butler.QuantumBackedButler.from_predicted(
        str(repo.root),
        [r.id for r in inputs],
        [r.id for r in outputs],
        repo.universe,
        records,
        dataset_types={t.name: t for t in (repo.raw, repo.config, repo.out)},
    )
    known = {r.id: r for r in inputs}  # the inputs resolve; the outputs stay bare ids
    with RecordingButler.from_predicted(
        qbb, [r.id for r in inputs], [r.id for r in outputs], refs=known, ledger=path
    ) as butler:
        butler.stored_many(inputs)
        butler.get(repo.inputs[0])
        butler.put({"a": 1}, outputs[0])
        theirs = qbb.extract_provenance_data()
        assert_same_provenance(butler.provenance(), theirs)
    with Ledger.open(path) as led:
        assert_same_provenance(led.replay(), theirs)
        rebuilt = led.quantum()
    described = {r.id: r for r in rebuilt.iter_predicted_inputs()}
    assert described[repo.inputs[0].id].dataset_type.name == "raw"
    assert described[repo.inputs[0].id].run == "raw/run"
    bare = {r.id: r for r in rebuilt.iter_predicted_outputs()}
    assert set(bare) == {r.id for r in outputs}
    assert bare[outputs[0].id].dataset_type.name == ""  # only its id is known


def test_artifact_retrieval_is_recorded_as_reads(repo: Repo, tmp_path: Path) -> None:
    """Artifact retrieval and predicted records are recorded as retrieve rows (reads)."""
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    with RecordingButler(repo.qbb(quantum), quantum, ledger=path) as butler:
        copied = butler.retrieve_artifacts(repo.inputs[:2], f"{tmp_path}/copy/")
        zipped = butler.retrieve_artifacts_zip(repo.inputs[:1], f"{tmp_path}/zip/")
        predicted = butler.export_predicted_datastore_records(outputs[:1])
        before = butler.provenance()
    assert len(copied) >= 2
    assert Path(zipped.ospath).is_file()
    assert predicted
    retrieved = [e for e in _events(path) if e.kind == "retrieve"]
    calls = [(e.dataset_id, (e.detail or {})["call"], e.outcome) for e in retrieved]
    assert calls == [
        (repo.inputs[0].id, "retrieve_artifacts", "ok"),
        (repo.inputs[1].id, "retrieve_artifacts", "ok"),
        (repo.inputs[0].id, "retrieve_artifacts_zip", "ok"),
        (outputs[0].id, "export_predicted_datastore_records", "ok"),
    ]
    assert before.actual_inputs == set()  # reads of artifacts change no provenance set
    with Ledger.open(path) as led:
        assert led.verify().ok


# --- upstream's storage-class views ------------------------------------------------------------


def test_a_view_put_then_a_plain_purge_drops_the_output(repo: Repo, tmp_path: Path) -> None:
    """Put through a storage-class override, purge through the plain ref: the ledger drops it.

    Upstream tracks refs, so its provenance keeps the output (with its record,
    though the artifact is gone); the ledger tracks ids and records the purge.
    """
    pipe_base = pytest.importorskip("lsst.pipe.base", reason="TaskMetadata is lsst-pipe-base's")
    path = tmp_path / "q.ledger"
    quantum, outputs, _ = repo.quantum()
    view = outputs[0].overrideStorageClass("TaskMetadata")  # a compatible storage class
    metadata = pipe_base.TaskMetadata()
    metadata["answer"] = 42
    qbb = repo.qbb(quantum)
    with RecordingButler(qbb, quantum, ledger=path) as butler:
        butler.put(metadata, view)
        butler.pruneDatasets([outputs[0]], disassociate=True, unstore=True, purge=True)
        theirs = qbb.extract_provenance_data()
    assert outputs[0].id in theirs.actual_outputs  # upstream's quirk
    with Ledger.open(path) as led:
        ours = led.replay()
        prune = next(led.events(kind="prune"))
    assert outputs[0].id not in ours.actual_outputs
    assert (prune.dataset_id, prune.outcome) == (outputs[0].id, "ok")
    assert from_upstream(theirs).actual_outputs - ours.actual_outputs == {outputs[0].id}


# --- upstream's own tests of its quantum-backed butler, through the wrapper ----------------------

#: A daf_butler source checkout (its ``tests/test_quantumBackedButler.py`` is read from it).
_CHECKOUT_ENV = "LEDGER_UPSTREAM_DAF_BUTLER"


def _upstream_test_source() -> str | None:
    """Upstream's test file, from a checkout whose butler source matches the installed one."""
    checkout = Path(os.environ.get(_CHECKOUT_ENV, "/work/.mirror/lsst+daf_butler/repo"))
    installed = Path(daf_butler.__file__).parent / "_quantum_backed.py"

    def read(relative: str) -> str | None:
        if (checkout / relative).is_file():
            return (checkout / relative).read_text()
        shown = subprocess.run(
            ["git", "--git-dir", str(checkout), "show", f"HEAD:{relative}"],
            capture_output=True,
            text=True,
        )
        return shown.stdout if shown.returncode == 0 else None

    if not checkout.exists():
        return None
    source = read("python/lsst/daf/butler/_quantum_backed.py")
    if source != installed.read_text():
        return None  # another version: its tests need not hold for the installed butler
    return read("tests/test_quantumBackedButler.py")


def test_upstreams_own_qbb_tests_pass_through_the_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream's test_quantumBackedButler.py, unedited, passes with every butler wrapped."""
    source = _upstream_test_source()
    if source is None:
        pytest.skip(
            f"no daf_butler checkout matching the installed version (set {_CHECKOUT_ENV} to one): "
            "pip installs upstream's package without its tests, and we vendor none"
        )
    real = daf_butler.QuantumBackedButler
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()

    class Recorded:
        """The harness: upstream's constructors, each butler wrapped and recorded."""

        @staticmethod
        def initialize(*args: Any, **kwargs: Any) -> RecordingButler:
            qbb = real.initialize(*args, **kwargs)
            quantum = kwargs.get("quantum", args[1] if len(args) > 1 else None)
            return RecordingButler(qbb, quantum, ledger=ledgers / f"{uuid.uuid4()}.ledger")

        @staticmethod
        def from_predicted(*args: Any, **kwargs: Any) -> RecordingButler:
            qbb = real.from_predicted(*args, **kwargs)
            return RecordingButler.from_predicted(
                qbb,
                kwargs["predicted_inputs"],
                kwargs["predicted_outputs"],
                ledger=ledgers / f"{uuid.uuid4()}.ledger",
            )

    monkeypatch.setattr(daf_butler, "QuantumBackedButler", Recorded)
    test_file = tmp_path / "upstream" / "test_quantumBackedButler.py"
    test_file.parent.mkdir()
    test_file.write_text(source)  # a copy for this run only, in the test's temporary folder
    spec = importlib.util.spec_from_file_location("upstream_qbb_tests", test_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=open(os.devnull, "w"), verbosity=0).run(suite)  # noqa: SIM115
    problems = [
        f"{test.id()}: {text.splitlines()[-1]}" for test, text in result.failures + result.errors
    ]
    assert not problems, "\n".join(problems)
    assert result.testsRun == 12
    recorded = sorted(ledgers.glob("*.ledger"))
    assert recorded
    for path in recorded:
        with Ledger.open(path) as led:
            assert led.verify().ok
