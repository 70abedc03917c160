"""`FileDatastore` on real files: round trips, atomic writes, records, paths, trash."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.datastore import FileDatastore
from ledger.errors import (
    ArtifactCorruptError,
    ConversionError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidParameterError,
    PathEscapeError,
    StorageClassError,
)
from ledger.model import DatasetRef, DatasetType
from ledger.pathguard import PathGuard
from ledger.records import DatastoreRecordData, SerializedDatastoreRecordData, StoredFileInfo
from ledger.storage import StorageClass, default_registry

FIXTURE_OK = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def make_ref(
    name: str = "calexp",
    storage_class: str = "StructuredDataDict",
    *,
    visit: int = 1,
    detector: int = 2,
    run: str = "u/someone/run1",
) -> DatasetRef:
    """A ref with a deterministic id."""
    return DatasetRef(
        dataset_type=DatasetType(
            name=name,
            dimensions=("instrument", "visit", "detector"),
            storage_class=storage_class,
        ),
        data_id={"instrument": "HSC", "visit": visit, "detector": detector},
        run=run,
    )


@pytest.fixture
def ds(tmp_path: Path) -> FileDatastore:
    """A datastore under a fresh root."""
    return FileDatastore(tmp_path / "repo")


def files_under(root: Path) -> list[Path]:
    """Every file (temporary ones included) below ``root``."""
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


# --- round trips ---------------------------------------------------------------


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)

payloads = st.one_of(
    st.tuples(st.just("StructuredDataDict"), st.dictionaries(st.text(max_size=6), json_values)),
    st.tuples(st.just("StructuredDataList"), st.lists(json_values, max_size=5)),
    st.tuples(st.just("Text"), st.text()),
    st.tuples(st.just("Bytes"), st.binary()),
)


@FIXTURE_OK
@given(payload=payloads)
def test_round_trip_every_json_class(ds: FileDatastore, payload: tuple[str, Any]) -> None:
    """put then get gives back an equal object for dicts, lists, text and bytes."""
    storage_class, obj = payload
    ref = make_ref(storage_class=storage_class, run=f"run/{uuid.uuid4()}")
    record = ds.put(obj, ref)
    assert record.storage_class == storage_class
    assert ds.get(ref) == obj
    assert ds.exists(ref)


def test_numpy_round_trip_with_slice(ds: FileDatastore) -> None:
    """An array is written as .npy and read back whole or sliced."""
    array = np.arange(24, dtype=np.float64).reshape(6, 4)
    ref = make_ref("image", "NumpyArray")
    record = ds.put(array, ref)
    assert record.path.endswith(".npy")
    np.testing.assert_array_equal(ds.get(ref), array)
    np.testing.assert_array_equal(ds.get(ref, parameters={"slice": [2, 4]}), array[2:4])


def test_record_contents(ds: FileDatastore) -> None:
    """The record holds the sha256 and size of the bytes on disk, formatter and class."""
    ref = make_ref()
    record = ds.put({"b": [1, 2], "a": "x"}, ref)
    data = ds.artifact_path(ref).read_bytes()
    assert data == b'{"a":"x","b":[1,2]}'
    assert record.checksum == hashlib.sha256(data).hexdigest()
    assert record.file_size == len(data)
    assert record.formatter == "ledger.json"
    assert record.storage_class == "StructuredDataDict"
    assert record.component is None
    assert record.dataset_id == ref.id
    assert ds.records_for(ref) == (record,)


def test_custom_storage_class(tmp_path: Path) -> None:
    """A class registered in the datastore's registry is written and read like the built-ins."""
    registry = default_registry()
    registry.register(
        StorageClass(
            name="Lines",
            pytype=list,
            extension=".lines",
            formatter="test.lines",
            writer=lambda obj: "\n".join(obj).encode(),
            reader=lambda data: data.decode().split("\n"),
        )
    )
    ds = FileDatastore(tmp_path, storage_classes=registry)
    ref = make_ref("notes", "Lines")
    record = ds.put(["a", "b"], ref)
    assert record.formatter == "test.lines"
    assert ds.artifact_path(ref).read_text() == "a\nb"
    assert ds.get(ref) == ["a", "b"]


def test_fsync_off(tmp_path: Path) -> None:
    """fsync=False still writes complete artifacts."""
    ds = FileDatastore(tmp_path, fsync=False)
    ds.put("hello", make_ref("note", "Text"))
    assert ds.get(make_ref("note", "Text")) == "hello"


# --- parameters, components and conversion -------------------------------------


def test_parameters_on_get(ds: FileDatastore) -> None:
    """Read parameters go to the stored class; unknown ones are refused."""
    ref = make_ref()
    ds.put({"a": 1, "b": 2, "c": 3}, ref)
    assert ds.get(ref, parameters={"keys": ["a", "c"]}) == {"a": 1, "c": 3}
    with pytest.raises(InvalidParameterError, match="bogus"):
        ds.get(ref, parameters={"bogus": True})


def test_component_get(ds: FileDatastore) -> None:
    """A component ref reads its parent's record and returns that key."""
    ref = make_ref()
    ds.put({"wcs": [1, 2, 3], "psf": "gauss"}, ref)
    wcs = ref.makeComponentRef("wcs")
    assert ds.exists(wcs)
    assert ds.get(wcs) == [1, 2, 3]
    assert ds.get(wcs, parameters={"slice": [1, None]}) == [2, 3]
    assert ds.get(ref.makeComponentRef("psf")) == "gauss"


def test_component_get_converts(ds: FileDatastore) -> None:
    """A component read can be converted to a requested storage class."""
    ref = make_ref()
    ds.put({"wcs": [1, 2, 3]}, ref)
    result = ds.get(ref.makeComponentRef("wcs"), storageClass="NumpyArray")
    np.testing.assert_array_equal(result, [1, 2, 3])
    typed = ref.makeComponentRef("wcs", storage_class="NumpyArray")
    np.testing.assert_array_equal(ds.get(typed), [1, 2, 3])


def test_missing_component(ds: FileDatastore) -> None:
    """A component that is not in the artifact is a StorageClassError, not a missing dataset."""
    ref = make_ref()
    ds.put({"wcs": 1}, ref)
    with pytest.raises(StorageClassError, match="'psf'") as info:
        ds.get(ref.makeComponentRef("psf"))
    assert not isinstance(info.value, LookupError)  # a caller error, not a missing dataset


def test_parameters_on_untyped_component(ds: FileDatastore) -> None:
    """Parameters on a component no storage class handles are refused clearly."""
    ref = make_ref()
    ds.put({"n": 5}, ref)
    with pytest.raises(InvalidParameterError, match="no storage class"):
        ds.get(ref.makeComponentRef("n"), parameters={"slice": [0, 1]})


def test_storage_class_conversion_on_get(ds: FileDatastore) -> None:
    """storageClass= converts via the registry, by name or by StorageClass."""
    ref = make_ref("table", "StructuredDataList")
    ds.put([[1, 2], [3, 4]], ref)
    array = ds.get(ref, storageClass="NumpyArray")
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, [[1, 2], [3, 4]])
    by_object = ds.get(ref, storageClass=ds.storage_classes.get("NumpyArray"))
    np.testing.assert_array_equal(by_object, array)
    sliced = ds.get(ref, parameters={"slice": [1, 2]}, storageClass="NumpyArray")
    np.testing.assert_array_equal(sliced, [[3, 4]])


def test_ref_storage_class_converts(ds: FileDatastore) -> None:
    """A ref whose storage class differs from the stored one gets its own type back."""
    ds.put([1, 2], make_ref("table", "StructuredDataList"))
    as_array = make_ref("table", "NumpyArray")
    assert isinstance(ds.get(as_array), np.ndarray)


def test_missing_converter_on_get(ds: FileDatastore) -> None:
    """No converter: ConversionError naming both storage classes."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    with pytest.raises(ConversionError, match="'StructuredDataDict' to 'Bytes'"):
        ds.get(ref, storageClass="Bytes")


def test_unknown_storage_class_on_put(ds: FileDatastore) -> None:
    """A ref with an unregistered storage class is refused, naming the registered ones."""
    with pytest.raises(StorageClassError, match=r"'Exposure'.*StructuredDataDict"):
        ds.put({"a": 1}, make_ref("calexp", "Exposure"))
    assert not ds.root.exists()


def test_numpy_missing_on_get(ds: FileDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a NumpyArray without numpy says which extra to install."""
    ref = make_ref("image", "NumpyArray")
    ds.put(np.arange(3), ref)
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(StorageClassError, match=r"quantum-ledger\[numpy\]"):
        ds.get(ref)


# --- atomic writes -------------------------------------------------------------


def test_wrong_type_writes_nothing(ds: FileDatastore) -> None:
    """A str put as StructuredDataDict fails before anything touches the disk."""
    ref = make_ref()
    with pytest.raises(StorageClassError, match="str"):
        ds.put("not a dict", ref)
    assert not ds.root.exists()
    assert not ds.records_for(ref)


def test_unserializable_writes_nothing(ds: FileDatastore) -> None:
    """An object that fails to serialize leaves no file, no directory and no record."""
    ref = make_ref()
    with pytest.raises(StorageClassError, match="cannot serialize"):
        ds.put({"a": {1, 2}}, ref)
    assert not ds.root.exists()
    assert not ds.exists(ref)


def test_no_temp_files_after_puts(ds: FileDatastore) -> None:
    """Successful puts leave exactly the artifacts, no temporary files."""
    refs = [make_ref(visit=v) for v in range(5)]
    for ref in refs:
        ds.put({"v": ref.data_id["visit"]}, ref)
    assert files_under(ds.root) == sorted(ds.artifact_path(r) for r in refs)


def test_failure_mid_write_leaves_nothing(
    ds: FileDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the disk fails during the write, neither a temp nor a final file is left."""
    ref = make_ref()

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated disk failure")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated disk failure"):
        ds.put({"a": 1}, ref)
    monkeypatch.undo()
    assert files_under(ds.root) == []
    assert not ds.exists(ref)
    ds.put({"a": 2}, ref)
    assert ds.get(ref) == {"a": 2}


def test_reput_keeps_first_artifact(ds: FileDatastore) -> None:
    """A second put of the same ref is refused and the first file stays byte-for-byte."""
    ref = make_ref()
    ds.put({"first": True}, ref)
    before = ds.artifact_path(ref).read_bytes()
    with pytest.raises(DatasetExistsError, match="never overwritten") as info:
        ds.put({"second": True}, ref)
    assert isinstance(info.value, RuntimeError)
    assert ds.artifact_path(ref).read_bytes() == before
    assert ds.get(ref) == {"first": True}
    assert len(files_under(ds.root)) == 1


def test_orphan_artifact_is_not_overwritten(tmp_path: Path) -> None:
    """A file written by another instance (no record here) is never replaced."""
    ref = make_ref()
    FileDatastore(tmp_path).put({"first": 1}, ref)
    other = FileDatastore(tmp_path)
    before = other.artifact_path(ref).read_bytes()
    with pytest.raises(DatasetExistsError):
        other.put({"second": 2}, ref)
    assert other.artifact_path(ref).read_bytes() == before


def test_lost_race_keeps_winner(ds: FileDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the existence check is passed but the name appears, the link refuses to replace it."""
    ref = make_ref()
    ds.put({"winner": 1}, ref)
    before = ds.artifact_path(ref).read_bytes()
    ds.forget([ref])
    monkeypatch.setattr(PathGuard, "_entry", lambda self, dir_fd, name: None)
    with pytest.raises(DatasetExistsError):
        ds.put({"loser": 2}, ref)
    monkeypatch.undo()
    assert ds.artifact_path(ref).read_bytes() == before
    assert len(files_under(ds.root)) == 1


def test_without_hard_links(ds: FileDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
    """On file systems without hard links, put falls back to rename and still refuses clobbers."""

    def no_link(src: Any, dst: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    ref = make_ref()
    ds.put({"a": 1}, ref)
    assert ds.get(ref) == {"a": 1}
    with pytest.raises(DatasetExistsError):
        ds.put({"a": 2}, ref)
    assert files_under(ds.root) == [ds.artifact_path(ref)]


def test_concurrent_puts_one_winner(tmp_path: Path) -> None:
    """Many instances racing to put one ref: exactly one wins and its bytes stay."""
    ref = make_ref()
    results: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        store = FileDatastore(tmp_path)
        barrier.wait()
        try:
            store.put({"writer": i}, ref)
            results[i] = "ok"
        except DatasetExistsError:
            results[i] = "exists"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(winners) == 1
    path = FileDatastore(tmp_path).artifact_path(ref)
    assert json.loads(path.read_bytes()) == {"writer": winners[0]}
    assert files_under(tmp_path) == [path]


def test_put_component_refused(ds: FileDatastore) -> None:
    """Components are read from their parent; putting one is refused."""
    with pytest.raises(InvalidParameterError, match="component"):
        ds.put([1], make_ref().makeComponentRef("wcs"))


def test_put_allowed_when_file_gone(ds: FileDatastore) -> None:
    """A record whose file was deleted does not block a new put; the record is replaced."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    ds.artifact_path(ref).unlink()
    record = ds.put({"a": 22}, ref)
    assert ds.get(ref) == {"a": 22}
    assert ds.records_for(ref) == (record,)


# --- paths ---------------------------------------------------------------------


def test_artifact_layout(ds: FileDatastore) -> None:
    """Artifacts live at run/type/dataid_id.ext, runs with '/' nested, all absolute."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    path = ds.artifact_path(ref)
    assert path.is_absolute()
    assert path.relative_to(ds.root).as_posix() == (
        f"u/someone/run1/calexp/detector=2_instrument=HSC_visit=1_{ref.id}.json"
    )


def test_artifact_path_without_record(ds: FileDatastore) -> None:
    """artifact_path also says where a ref not yet written would go."""
    ref = make_ref()
    expected = ds.artifact_path(ref)
    assert not expected.exists()
    ds.put({"a": 1}, ref)
    assert ds.artifact_path(ref) == expected
    assert ds.artifact_path(ref.makeComponentRef("a")) == expected


hostile = st.lists(
    st.sampled_from(["/", ".", "..", "\\", "a", " ", "~", "$", "\x00", "é", ":"]), max_size=12
).map("".join)


@FIXTURE_OK
@given(run=hostile, value=hostile, name=st.sampled_from(["calexp", "a/b", "~x", "a b\\c"]))
def test_paths_are_sanitised(tmp_path: Path, run: str, value: str, name: str) -> None:
    """Hostile runs, names and data ID values stay under the root, no '..' or empty parts."""
    ds = FileDatastore(tmp_path / uuid.uuid4().hex, fsync=False)
    ref = DatasetRef(
        dataset_type=DatasetType(name=name, dimensions=("x",), storage_class="Text"),
        data_id={"x": value},
        run=run,
    )
    relative = ds.artifact_path(ref).relative_to(ds.root).as_posix()
    parts = relative.split("/")
    assert all(p and not p.startswith(".") for p in parts)
    assert "\x00" not in relative
    record = ds.put("x", ref)
    assert record.path == relative
    assert os.path.realpath(ds.artifact_path(ref)).startswith(os.path.realpath(ds.root))


def test_long_data_id_fits(ds: FileDatastore) -> None:
    """Very long data ID values are shortened to fit file-name limits, id kept."""
    ref = DatasetRef(
        dataset_type=DatasetType(name="t", dimensions=("x",), storage_class="Text"),
        data_id={"x": "v" * 1000},
        run="r" * 400,
    )
    ds.put("x", ref)
    path = ds.artifact_path(ref)
    assert all(len(part) < 255 for part in path.parts)
    assert str(ref.id) in path.name


def _record(ref: DatasetRef, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "formatter": "ledger.json",
        "storage_class": "StructuredDataDict",
        "component": None,
        "checksum": None,
        "file_size": -1,
    }


def _serialized(*pairs: tuple[DatasetRef, str]) -> dict[str, Any]:
    return {
        "dataset_ids": [str(ref.id) for ref, _ in pairs],
        "records": {
            "file_datastore_records": {str(ref.id): [_record(ref, path)] for ref, path in pairs}
        },
    }


@pytest.mark.parametrize("bad", ["../outside.json", "a/../../outside.json", "/etc/passwd"])
def test_import_refuses_escaping_path(ds: FileDatastore, bad: str) -> None:
    """A record path that is absolute or climbs with '..' refuses the whole batch."""
    good, evil = make_ref(visit=1), make_ref(visit=2)
    with pytest.raises(PathEscapeError, match="datastore record path"):
        ds.import_records({"files": _serialized((good, "ok/good.json"), (evil, bad))})
    assert ds.records_for(good) == ()
    assert ds.records_for(evil) == ()


def test_import_refuses_symlink_escape(ds: FileDatastore, tmp_path: Path) -> None:
    """A record path that resolves outside the root through a symlink is refused, naming both."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"secret": 1}')
    ds.root.mkdir()
    (ds.root / "link").symlink_to(outside)
    good, evil = make_ref(visit=1), make_ref(visit=2)
    with pytest.raises(PathEscapeError) as info:
        ds.import_records(
            {"files": _serialized((good, "ok/good.json"), (evil, "link/secret.json"))}
        )
    assert "link/secret.json" in str(info.value)
    assert str(ds.root) in str(info.value)
    assert ds.records_for(good) == ()


def test_get_refuses_symlink_planted_later(ds: FileDatastore, tmp_path: Path) -> None:
    """A run directory swapped for a symlink out of the root after import is refused on read."""
    ref = make_ref(run="run")
    ds.put({"a": 1}, ref)
    outside = tmp_path / "outside"
    (ds.root / "run").rename(outside)
    (ds.root / "run").symlink_to(outside)
    with pytest.raises(PathEscapeError):
        ds.get(ref)
    with pytest.raises(PathEscapeError):
        ds.exists(ref)


def test_put_refuses_symlinked_run_dir(ds: FileDatastore, tmp_path: Path) -> None:
    """A run directory that is a symlink out of the root is never written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ds.root.mkdir()
    (ds.root / "run").symlink_to(outside)
    with pytest.raises(PathEscapeError):
        ds.put({"a": 1}, make_ref(run="run"))
    assert list(outside.rglob("*")) == []


# --- records: export, import, forget -------------------------------------------


def test_export_import_round_trip(tmp_path: Path) -> None:
    """Records exported by one instance let another read the same artifacts."""
    writer = FileDatastore(tmp_path)
    refs = [make_ref(visit=v) for v in range(3)]
    for ref in refs:
        writer.put({"visit": ref.data_id["visit"]}, ref)
    exported = writer.export_records([*refs, make_ref(visit=99)])
    assert set(exported) == {"files"}
    assert set(exported["files"].dataset_ids) == {r.id for r in refs}
    reader = FileDatastore(tmp_path)
    assert not reader.exists(refs[0])
    reader.import_records(exported)
    assert [reader.get(r) for r in refs] == [{"visit": v} for v in range(3)]


@pytest.mark.parametrize("form", ["simple", "json", "model"])
def test_import_serialized_forms(tmp_path: Path, form: str) -> None:
    """import_records accepts to_simple() dicts, their JSON, and the serialized model."""
    writer = FileDatastore(tmp_path)
    ref = make_ref()
    record = writer.put({"a": 1}, ref)
    data = writer.export_records([ref])["files"]
    simple = data.to_simple()
    assert simple["records"]["file_datastore_records"][str(ref.id)][0]["checksum"] == (
        record.checksum
    )
    given_form: Any = {
        "simple": simple,
        "json": json.loads(json.dumps(simple)),
        "model": data.serialize(),
    }[form]
    assert DatastoreRecordData.from_simple(given_form) == data
    reader = FileDatastore(tmp_path)
    reader.import_records({"files": given_form})
    assert reader.records_for(ref) == (record,)
    assert reader.get(ref) == {"a": 1}


def test_import_ignores_other_datastores(tmp_path: Path) -> None:
    """Only records filed under the datastore's own name are imported."""
    writer = FileDatastore(tmp_path, name="other")
    ref = make_ref()
    writer.put({"a": 1}, ref)
    reader = FileDatastore(tmp_path, name="files")
    reader.import_records(writer.export_records([ref]))
    assert not reader.exists(ref)
    assert isinstance(
        writer.export_records([ref])["other"].serialize(), SerializedDatastoreRecordData
    )


def test_forget_drops_records_only(ds: FileDatastore) -> None:
    """forget removes records without touching files."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    path = ds.artifact_path(ref)
    ds.forget([ref])
    assert path.exists()
    assert not ds.exists(ref)
    assert ds.records_for(ref) == ()


def test_mexists(ds: FileDatastore) -> None:
    """mexists answers per ref: record and file both needed."""
    written, deleted, unknown = make_ref(visit=1), make_ref(visit=2), make_ref(visit=3)
    ds.put({"a": 1}, written)
    ds.put({"a": 2}, deleted)
    ds.artifact_path(deleted).unlink()
    assert ds.mexists([written, deleted, unknown]) == {
        written: True,
        deleted: False,
        unknown: False,
    }


# --- reading failures and verification -----------------------------------------


def test_no_record_is_lookup_error(ds: FileDatastore) -> None:
    """get without a record raises DatasetNotFoundError, a LookupError."""
    with pytest.raises(DatasetNotFoundError, match="no record") as info:
        ds.get(make_ref())
    assert isinstance(info.value, LookupError)


def test_missing_file_is_file_not_found(ds: FileDatastore) -> None:
    """A record whose file is gone raises FileNotFoundError."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    ds.artifact_path(ref).unlink()
    with pytest.raises(FileNotFoundError):
        ds.get(ref)


def test_size_mismatch_is_os_error(ds: FileDatastore) -> None:
    """A truncated or grown artifact raises ArtifactCorruptError, an OSError naming the file."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    path = ds.artifact_path(ref)
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(ArtifactCorruptError, match="its record says") as info:
        ds.get(ref)
    assert isinstance(info.value, OSError)
    assert info.value.filename == str(path)


def test_undecodable_artifact_is_os_error(ds: FileDatastore) -> None:
    """Same-size garbage is caught when decoding, as an ArtifactCorruptError."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    path = ds.artifact_path(ref)
    path.write_bytes(b"\xff" * len(path.read_bytes()))
    with pytest.raises(ArtifactCorruptError, match="cannot be decoded"):
        ds.get(ref)


def test_checksum_checked_on_read_when_asked(tmp_path: Path) -> None:
    """With verify_checksums, a same-size edit that still parses is caught on read."""
    ref = make_ref()
    writer = FileDatastore(tmp_path)
    writer.put({"a": 1}, ref)
    exported = writer.export_records([ref])
    path = writer.artifact_path(ref)
    path.write_bytes(path.read_bytes().replace(b"1", b"2"))
    lax = FileDatastore(tmp_path)
    strict = FileDatastore(tmp_path, verify_checksums=True)
    lax.import_records(exported)
    strict.import_records(exported)
    assert lax.get(ref) == {"a": 2}
    with pytest.raises(ArtifactCorruptError, match="sha256"):
        strict.get(ref)


def test_verify_record(ds: FileDatastore) -> None:
    """verify_record passes a good artifact and names size, checksum and missing problems."""
    ref = make_ref()
    record = ds.put({"a": 1}, ref)
    assert ds.verify_record(record) is None
    path = ds.artifact_path(ref)
    path.write_bytes(path.read_bytes().replace(b"1", b"7"))
    problem = ds.verify_record(record)
    assert problem is not None
    assert "sha256" in problem
    assert record.path in problem
    path.write_bytes(b"{}")
    assert "bytes" in (ds.verify_record(record) or "")
    path.unlink()
    assert "missing" in (ds.verify_record(record) or "")


def test_verify_record_escaping(ds: FileDatastore, tmp_path: Path) -> None:
    """verify_record reports (not raises) a record that resolves outside the root."""
    ds.root.mkdir()
    (ds.root / "link").symlink_to(tmp_path)
    record = StoredFileInfo(
        dataset_id=uuid.uuid4(),
        path="link/x.json",
        formatter="ledger.json",
        storage_class="StructuredDataDict",
    )
    assert "outside the datastore root" in (ds.verify_record(record) or "")


# --- trash ---------------------------------------------------------------------


def test_trash_then_empty(ds: FileDatastore) -> None:
    """Trashed datasets vanish at once; their files go on emptyTrash."""
    keep, drop = make_ref(visit=1), make_ref(visit=2)
    ds.put({"k": 1}, keep)
    ds.put({"d": 1}, drop)
    path = ds.artifact_path(drop)
    ds.trash(drop)
    assert not ds.exists(drop)
    assert ds.exists(keep)
    assert set(ds.export_records([keep, drop])["files"].dataset_ids) == {keep.id}
    with pytest.raises(DatasetNotFoundError):
        ds.get(drop)
    assert path.exists()
    ds.emptyTrash()
    assert not path.exists()
    assert ds.get(keep) == {"k": 1}


def test_put_after_trash(ds: FileDatastore) -> None:
    """After trash and emptyTrash, the same ref can be written again."""
    ref = make_ref()
    ds.put({"v": 1}, ref)
    ds.trash([ref])
    ds.emptyTrash()
    ds.put({"v": 2}, ref)
    assert ds.get(ref) == {"v": 2}


def test_put_between_trash_and_empty(ds: FileDatastore) -> None:
    """A new artifact written after trash (file already gone) survives emptyTrash."""
    ref = make_ref()
    ds.put({"v": 1}, ref)
    ds.trash(ref)
    ds.artifact_path(ref).unlink()
    ds.put({"v": 2}, ref)
    ds.emptyTrash()
    assert ds.get(ref) == {"v": 2}


def test_empty_trash_ignores_missing_files(ds: FileDatastore) -> None:
    """Files already gone are not an error for emptyTrash."""
    ref = make_ref()
    ds.put({"v": 1}, ref)
    ds.trash(ref)
    ds.artifact_path(ref).unlink()
    ds.emptyTrash()
    ds.emptyTrash()


def test_trash_unknown(ds: FileDatastore) -> None:
    """Unknown refs are skipped, or refused as a batch with ignore_errors=False."""
    known, unknown = make_ref(visit=1), make_ref(visit=2)
    ds.put({"v": 1}, known)
    ds.trash([unknown])
    with pytest.raises(DatasetNotFoundError):
        ds.trash([known, unknown], ignore_errors=False)
    assert ds.exists(known)


def test_trash_component_refused(ds: FileDatastore) -> None:
    """Trashing a component ref is refused: trash its dataset."""
    ref = make_ref()
    ds.put({"a": 1}, ref)
    with pytest.raises(InvalidParameterError):
        ds.trash(ref.makeComponentRef("a"))
    assert ds.exists(ref)


# --- orphans -------------------------------------------------------------------


def test_adopt_orphan(tmp_path: Path) -> None:
    """adopt records a file another instance wrote but never recorded here."""
    ref = make_ref()
    written = FileDatastore(tmp_path).put({"a": 1}, ref)
    other = FileDatastore(tmp_path)
    assert not other.exists(ref)
    assert other.adopt(ref) == written
    assert other.get(ref) == {"a": 1}
    assert other.adopt(ref) == written


def test_adopt_refuses_missing_and_damaged(ds: FileDatastore) -> None:
    """adopt needs a file that decodes as the ref's storage class."""
    ref = make_ref()
    with pytest.raises(FileNotFoundError):
        ds.adopt(ref)
    path = ds.artifact_path(ref)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"[1, 2]")
    with pytest.raises(ArtifactCorruptError, match="StructuredDataDict"):
        ds.adopt(ref)
    assert not ds.exists(ref)


def test_untyped_component_conversion(ds: FileDatastore) -> None:
    """A component no storage class handles is returned as is, and cannot be converted."""
    ref = make_ref()
    ds.put({"n": 5}, ref)
    assert ds.get(ref.makeComponentRef("n")) == 5
    with pytest.raises(ConversionError, match="'n'"):
        ds.get(ref.makeComponentRef("n"), storageClass="Text")


def test_concurrent_puts_into_one_new_run(tmp_path: Path) -> None:
    """Instances creating the same new run directories at once all succeed."""
    refs = [make_ref(visit=v, run="fresh/nested/run") for v in range(8)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(refs))

    def worker(ref: DatasetRef) -> None:
        store = FileDatastore(tmp_path)
        barrier.wait()
        try:
            store.put({"visit": ref.data_id["visit"]}, ref)
        except BaseException as e:  # collected: a thread's exception would be lost
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(ref,)) for ref in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(files_under(tmp_path)) == len(refs)


# --- failed puts leave nothing; the path guard; only regular files are read ----------

_LIMITED_PUT = """
import resource, signal, sys
from pathlib import Path
from ledger import DatasetRef, DatasetType, FileDatastore
def ref(visit, run):
    dt = DatasetType(name="calexp", dimensions=("visit",), storage_class="StructuredDataDict")
    return DatasetRef(dataset_type=dt, data_id={"visit": visit}, run=run)
ds = FileDatastore(Path(sys.argv[1]))
ds.put({"small": 1}, ref(1, "old"))
# Python ignores SIGXFSZ, so a write past the limit fails (EFBIG); by default it kills.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[2] == "fail" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # a full disk
try:
    ds.put({"big": "x" * 100_000}, ref(2, "new/run"))
except OSError as e:
    print("put failed:", e.strerror)
"""


def _limited_put(root: Path, mode: str) -> subprocess.CompletedProcess[str]:
    """Run a put that outgrows a file size limit in a child (killed, or its write failing)."""
    return subprocess.run(
        [sys.executable, "-c", _LIMITED_PUT, str(root), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_a_put_whose_write_fails_leaves_nothing(tmp_path: Path) -> None:
    """A write failing mid-way (file size limit) leaves no temp file and no new directory."""
    root = tmp_path / "repo"
    done = _limited_put(root, "fail")
    assert "put failed: File too large" in done.stdout, done.stderr
    assert [p.relative_to(root).parts[0] for p in root.iterdir()] == ["old"]
    assert [p.name for p in files_under(root)] == ["visit=1_" + _id(1, "old") + ".json"]


def test_a_put_killed_mid_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A process killed inside the write (SIGXFSZ at the size limit) leaves no temp file."""
    root = tmp_path / "repo"
    done = _limited_put(root, "die")
    assert done.returncode == -signal.SIGXFSZ, done.stderr
    assert [p.name for p in files_under(root)] == ["visit=1_" + _id(1, "old") + ".json"]
    FileDatastore(root).put({"small": 2}, _ref_in(2, "new/run"))  # nothing in the way


def _ref_in(visit: int, run: str) -> DatasetRef:
    dt = DatasetType(name="calexp", dimensions=("visit",), storage_class="StructuredDataDict")
    return DatasetRef(dataset_type=dt, data_id={"visit": visit}, run=run)


def _id(visit: int, run: str) -> str:
    return str(_ref_in(visit, run).id)


def test_a_failed_put_removes_only_the_directories_it_made(
    ds: FileDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from the disk: the run directories this put created go, earlier ones stay."""
    ds.put({"a": 1}, make_ref(visit=1, run="u/someone/run1"))

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        ds.put({"a": 2}, make_ref(visit=2, run="u/someone/run2"))
    monkeypatch.undo()
    assert sorted(p.name for p in (ds.root / "u" / "someone").iterdir()) == ["run1"]
    assert len(files_under(ds.root)) == 1


def test_no_temporary_file_is_ever_visible(
    ds: FileDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an artifact is being written, its directory holds no temporary name at all."""
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        folder = ds.artifact_path(ref).parent
        seen.append(sorted(os.listdir(folder)) if folder.is_dir() else [])
        real_fsync(fd)

    ref = make_ref()
    monkeypatch.setattr(os, "fsync", watching_fsync)
    ds.put({"a": 1}, ref)
    monkeypatch.undo()
    assert seen
    assert all(listing in ([], [ds.artifact_path(ref).name]) for listing in seen)


def _swap_for_symlink(directory: Path, moved: Path, target: Path) -> None:
    """Replace ``directory`` by a symlink to ``target`` (the real one goes to ``moved``)."""
    directory.rename(moved)
    directory.symlink_to(target)


def test_a_directory_swapped_after_the_check_is_never_written_through(
    ds: FileDatastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run directory swapped for a symlink out of the root mid-put: nothing lands outside."""
    ds.put({"a": 1}, make_ref(visit=1, run="run"))
    outside = tmp_path / "outside"
    (outside / "calexp").mkdir(parents=True)  # what the put would write into
    real_open = os.open
    swapped: list[bool] = []

    def swapping_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if not swapped:  # the first open of the put: after its checks, before its write
            swapped.append(True)
            _swap_for_symlink(ds.root / "run", tmp_path / "moved", outside)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swapping_open)
    with pytest.raises(PathEscapeError, match="outside the datastore root"):
        ds.put({"a": 2}, make_ref(visit=2, run="run"))
    monkeypatch.undo()
    assert swapped
    assert files_under(outside) == []


def test_a_directory_swapped_before_a_delete_never_deletes_outside(
    ds: FileDatastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """emptyTrash deletes through the directory it opened, never through a new symlink."""
    ref = make_ref(run="run")
    ds.put({"a": 1}, ref)
    relative = ds.artifact_path(ref).relative_to(ds.root / "run")
    outside = tmp_path / "outside"
    (outside / relative).parent.mkdir(parents=True)
    (outside / relative).write_text("precious")
    ds.trash(ref)
    real_unlink = os.unlink

    def swapping_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if not (ds.root / "run").is_symlink():
            _swap_for_symlink(ds.root / "run", tmp_path / "moved", outside)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", swapping_unlink)
    ds.emptyTrash()
    monkeypatch.undo()
    assert (outside / relative).read_text() == "precious"


def test_symlinks_inside_the_root_are_still_followed(ds: FileDatastore) -> None:
    """A run directory linked to another directory inside the root is written and read."""
    (ds.root / "real").mkdir(parents=True)
    (ds.root / "run").symlink_to(ds.root / "real")
    ref = make_ref(run="run")
    ds.put({"a": 1}, ref)
    assert ds.get(ref) == {"a": 1}
    assert ds.verify_record(ds.records_for(ref)[0]) is None
    assert len(files_under(ds.root / "real")) == 1
    ds.trash(ref)
    ds.emptyTrash()
    assert files_under(ds.root / "real") == []


_READ_FIFO = """
import os, sys
from pathlib import Path
from ledger import DatasetRef, DatasetType, FileDatastore
dt = DatasetType(name="calexp", dimensions=("visit",), storage_class="StructuredDataDict")
ref = DatasetRef(dataset_type=dt, data_id={"visit": 1}, run="run")
ds = FileDatastore(Path(sys.argv[1]))
record = ds.put({"a": 1}, ref)
path = ds.artifact_path(ref)
path.unlink()
getattr(os, sys.argv[2])(path)
print("verify:", ds.verify_record(record))
print("exists:", ds.exists(ref))
try:
    ds.get(ref)
except Exception as e:
    print("get:", type(e).__name__, isinstance(e, OSError), e)
"""


@pytest.mark.parametrize(("make", "kind"), [("mkfifo", "a FIFO"), ("mkdir", "a directory")])
def test_a_fifo_or_directory_artifact_is_refused_without_blocking(
    tmp_path: Path, make: str, kind: str
) -> None:
    """get and verify_record refuse a non-regular file where an artifact was, never opening it."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_FIFO, str(tmp_path / "repo"), make],
        capture_output=True,
        text=True,
        timeout=60,  # a FIFO opened for reading would wait here for a writer forever
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("verify: artifact")
    assert f"is {kind}, not a regular file" in lines[0]
    assert lines[1] == "exists: False"
    assert lines[2].startswith("get: NotARegularFileError True ")
    assert f"{kind} is where an artifact should be" in lines[2]
