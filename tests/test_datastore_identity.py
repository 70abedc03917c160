"""The datastore a quantum ran with: recorded when it starts, checked before recovery, retries."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import ledger.butler
from ledger import DatastoreMismatchError, FileDatastore, Ledger, QuantumBackedButler
from ledger.identity import IDENTITY_FILE
from ledger.recovery import adopt_orphans, recover, remove_orphans
from ledger.testing import QuantumFixture, make_quantum


def _failed(tmp_path: Path) -> tuple[QuantumFixture, Path]:
    """A quantum that read its inputs, wrote output 0, left output 1 as an orphan, and failed."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=3)
    path = tmp_path / "q.ledger"
    with (
        contextlib.suppress(ZeroDivisionError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler,
    ):
        for ref in fixture.inputs:
            butler.get(ref)
        butler.put({"n": 0}, fixture.outputs[0])
        FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])  # an orphan
        raise ZeroDivisionError("boom")
    return fixture, path


def _rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT quantum_seq, hash FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def _qledger(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_butler_records_the_identity_of_its_datastore(tmp_path: Path) -> None:
    """The root gets an identity file; each quantum_started records its id, name and root."""
    fixture, path = _failed(tmp_path)
    identity = json.loads((fixture.root / IDENTITY_FILE).read_text())
    with QuantumBackedButler.resume(fixture.root, path, skip_existing=True):
        pass
    with Ledger.open(path) as led:
        starts = [e.detail for e in led.events(kind="quantum_started")]
    expected = {"id": identity["id"], "name": "files", "root": str(fixture.root)}
    assert [d["datastore_identity"] for d in starts if d] == [expected, expected]


def test_a_mistyped_root_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """A root that does not exist: resume, recover, adopt, remove and the CLI all refuse it."""
    _, path = _failed(tmp_path)
    typo = tmp_path / "rpeo"
    before = _rows(path)
    with pytest.raises(DatastoreMismatchError, match=f"datastore root {typo} does not exist"):
        QuantumBackedButler.resume(typo, path, skip_existing=True)
    for call in (recover, adopt_orphans, remove_orphans):
        with pytest.raises(DatastoreMismatchError, match="does not exist"):
            call(path, typo)
    assert not typo.exists()
    assert _rows(path) == before
    for command in ("verify", "recover"):
        done = _qledger(command, path, "--datastore", typo)
        assert done.returncode == 2, done.stdout
        assert done.stderr.count("\n") == 1
        assert f"datastore root {typo} does not exist" in done.stderr
        assert "--no-datastore-check" in done.stderr
    assert not typo.exists()


def test_another_datastore_is_refused_unless_the_check_is_off(tmp_path: Path) -> None:
    """An existing root that is another datastore is refused, naming both; the override works."""
    fixture, path = _failed(tmp_path)
    copy = make_quantum(tmp_path / "copy", n_inputs=2, n_outputs=3)  # the same input files
    before = _rows(path)
    with pytest.raises(DatastoreMismatchError, match="has no identity file") as info:
        QuantumBackedButler.resume(copy.root, path, skip_existing=True)
    recorded = json.loads((fixture.root / IDENTITY_FILE).read_text())["id"]
    assert recorded in str(info.value)
    assert str(fixture.root) in str(info.value)
    with contextlib.closing(
        QuantumBackedButler.initialize(copy.root, copy.quantum, ledger=tmp_path / "other.ledger")
    ):
        pass  # now the copy is a datastore with an identity of its own
    with pytest.raises(DatastoreMismatchError, match="is datastore"):
        recover(path, copy.root)
    assert _rows(path) == before
    done = _qledger("verify", path, "--datastore", copy.root)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        _qledger("verify", path, "--datastore", copy.root, "--no-datastore-check").returncode == 1
    )
    report = recover(path, copy.root, check_datastore=False)
    assert report.quanta[0].outputs_missing  # output 0 was never written in the copy
    with QuantumBackedButler.resume(copy.root, path, check_datastore=False) as butler:
        assert butler.attempt == 2


def test_a_moved_datastore_is_still_recognised(tmp_path: Path) -> None:
    """The identity travels with the root: a datastore moved elsewhere is accepted."""
    fixture, path = _failed(tmp_path)
    moved = tmp_path / "moved"
    fixture.root.rename(moved)
    (q,) = recover(path, moved).quanta
    assert [o.dataset_id for o in q.outputs_verified] == [fixture.outputs[0].id]
    assert _qledger("verify", path, "--datastore", moved).returncode == 0
    with QuantumBackedButler.resume(moved, path, skip_existing=True) as butler:
        butler.put({"n": 0}, fixture.outputs[0])


def test_a_ledger_without_an_identity_is_checked_by_its_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quanta recorded before identities: a root holding their artifacts is accepted, others not."""
    monkeypatch.setattr(ledger.butler, "ensure_identity", lambda datastore: None)
    fixture, path = _failed(tmp_path)  # as an older version recorded it
    monkeypatch.undo()
    assert not (fixture.root / IDENTITY_FILE).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    before = _rows(path)
    with pytest.raises(DatastoreMismatchError, match="none of the 3 artifacts"):
        recover(path, empty)
    with pytest.raises(DatastoreMismatchError, match="before datastore identities"):
        QuantumBackedButler.resume(empty, path, skip_existing=True)
    assert _rows(path) == before
    assert recover(path, fixture.root).quanta[0].outputs_verified
    assert not (fixture.root / IDENTITY_FILE).exists()  # inspection writes nothing
    with QuantumBackedButler.resume(fixture.root, path, skip_existing=True):
        pass  # the retry records the identity from now on
    assert (fixture.root / IDENTITY_FILE).is_file()
    with pytest.raises(DatastoreMismatchError, match="has no identity file"):
        QuantumBackedButler.resume(empty, path)


def test_a_damaged_identity_file_is_a_named_error(tmp_path: Path) -> None:
    """An identity file that is not one (garbage, a FIFO) is refused, naming the file."""
    fixture, path = _failed(tmp_path)
    marker = fixture.root / IDENTITY_FILE
    marker.write_text("not json")
    with pytest.raises(DatastoreMismatchError, match=f"{marker} is not one quantum-ledger"):
        recover(path, fixture.root)
    done = _qledger("recover", path, "--datastore", fixture.root)
    assert done.returncode == 2
    assert str(marker) in done.stderr
    marker.unlink()
    os.mkfifo(marker)
    with pytest.raises(DatastoreMismatchError, match="cannot be read"):
        QuantumBackedButler.resume(fixture.root, path)


def test_a_fresh_datastore_without_a_butler_has_no_identity_file(tmp_path: Path) -> None:
    """A FileDatastore alone writes only its artifacts; the butler writes the identity file."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    assert not (fixture.root / IDENTITY_FILE).exists()
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum) as butler:
        butler.put({"n": 0}, fixture.outputs[0])
    assert (fixture.root / IDENTITY_FILE).is_file()
