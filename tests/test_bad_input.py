"""Bad input (SPEC §8): a named LedgerError that says what and where; nothing recorded is lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger import (
    DatasetTypeMismatchError,
    FileDatastore,
    Ledger,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerError,
    LedgerNotFoundError,
    MalformedDetailError,
    NotALedgerError,
    PathEscapeError,
    Quantum,
    QuantumBackedButler,
    SchemaTooNewError,
    TamperedError,
    UnpredictedOutputError,
)
from ledger.recovery import adopt_orphans, recover
from ledger.store.log import EventLog, PendingCall
from ledger.testing import QuantumFixture, make_quantum, make_ref


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256."""
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _ledger(tmp_path: Path, *, n_outputs: int = 20) -> tuple[QuantumFixture, Path]:
    """A finished quantum with enough events to span several SQLite pages."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=20, n_missing=1, n_outputs=n_outputs)
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        butler.stored_many(fixture.predicted_inputs)
        for ref in fixture.inputs:
            butler.get(ref)
        for i, ref in enumerate(fixture.outputs):
            butler.put({"i": i}, ref)
    return fixture, path


def _readers(fixture: QuantumFixture, path: Path) -> dict[str, Callable[[], object]]:
    """Every way the library reads a ledger, each opening it afresh."""

    def use(action: Callable[[Ledger], object]) -> Callable[[], object]:
        def run() -> object:
            with Ledger.open(path) as led:
                return action(led)

        return run

    return {
        "open": use(lambda led: None),
        "replay": use(lambda led: led.replay()),
        "verify": use(lambda led: led.verify()),
        "events": use(lambda led: list(led.events())),
        "quantum": use(lambda led: led.quantum()),
        "status": use(lambda led: led.status()),
        "recover": lambda: recover(path, fixture.root),
        "resume": lambda: QuantumBackedButler.resume(fixture.root, path).close(),
    }


# --- files that are not (good) ledgers ----------------------------------------------------


def test_a_missing_ledger_is_named(tmp_path: Path) -> None:
    """Reading, recovering or resuming a missing file raises LedgerNotFoundError naming it."""
    missing = tmp_path / "nope.ledger"
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    for name, read in _readers(fixture, missing).items():
        with pytest.raises(LedgerNotFoundError, match=r"nope\.ledger"):
            read()
        assert not missing.exists(), name
    with pytest.raises(LedgerNotFoundError, match=r"nope\.ledger"):
        EventLog(missing, create=False)


@pytest.mark.parametrize("kind", ["not_sqlite", "not_a_ledger"])
def test_files_that_are_not_ledgers_are_refused_untouched(tmp_path: Path, kind: str) -> None:
    """Junk bytes and a foreign SQLite database are NotALedgerError, and never written to."""
    path = tmp_path / "other.db"
    if kind == "not_sqlite":
        path.write_bytes(b"just some bytes, not a database " * 200)
    else:
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    before = _digest(path)
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    for read in _readers(fixture, path).values():
        with pytest.raises(NotALedgerError, match=r"other\.db"):
            read()
    with pytest.raises(NotALedgerError, match=r"other\.db"):
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    assert _digest(path) == before


@pytest.mark.parametrize("cut", ["half", "page_boundary"])
def test_a_truncated_ledger_is_corrupt_never_a_driver_error(tmp_path: Path, cut: str) -> None:
    """A ledger cut to half its size (or to a page boundary) is a LedgerCorruptError everywhere."""
    fixture, path = _ledger(tmp_path)
    data = path.read_bytes()
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    size = len(data) // 2
    if cut == "page_boundary":
        size -= size % page
        assert size % page == 0
    path.write_bytes(data[:size])
    for name, read in _readers(fixture, path).items():
        with pytest.raises(LedgerCorruptError, match=r"q\.ledger") as caught:
            read()
        assert not isinstance(caught.value, sqlite3.Error), name
    with pytest.raises(LedgerCorruptError):
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    assert path.read_bytes() == data[:size]


def test_damaged_pages_give_ledger_errors_or_a_report(tmp_path: Path) -> None:
    """Garbage written over any page: each reader works, reports, or raises a LedgerError."""
    fixture, path = _ledger(tmp_path)
    data = path.read_bytes()
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    seen: set[str] = set()
    for number in range(1, len(data) // page):
        damaged = bytearray(data)
        start = number * page + 100
        damaged[start : start + 900] = hashlib.sha512(bytes([number])).digest() * 14 + bytes(4)
        path.write_bytes(bytes(damaged))
        for name, read in _readers(fixture, path).items():
            if name == "resume":
                continue  # a resume that succeeds would append; readers only here
            try:
                read()
            except LedgerError as e:
                seen.add(type(e).__name__)
            # Anything else (sqlite3.Error, SQLAlchemy's DatabaseError) fails the test.
    assert "LedgerCorruptError" in seen


def test_a_newer_schema_is_refused_by_readers_and_writers(tmp_path: Path) -> None:
    """A ledger stamped by a newer library: SchemaTooNewError, and its bytes stay as they were."""
    fixture, path = _ledger(tmp_path, n_outputs=1)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    before = _digest(path)
    for read in _readers(fixture, path).values():
        with pytest.raises(SchemaTooNewError, match=r"q\.ledger.*9999_future"):
            read()
    with pytest.raises(SchemaTooNewError, match="upgrade the library"):
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    assert _digest(path) == before


# --- rows that are not what was written -------------------------------------------------------


def _edit(path: Path, sql: str, params: tuple[object, ...]) -> None:
    """Change a row behind the append-only triggers' back, as someone with the file could."""
    conn = sqlite3.connect(path)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def _failed(tmp_path: Path) -> tuple[QuantumFixture, Path]:
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    with (
        contextlib.suppress(RuntimeError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler,
    ):
        butler.put({"n": 0}, fixture.outputs[0])
        FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])  # an orphan
        raise RuntimeError("failed")
    return fixture, path


def test_a_tampered_row_is_named_and_nothing_is_appended_to_it(tmp_path: Path) -> None:
    """An edited event: verify and recover name its quantum_seq; resume and adopt refuse."""
    fixture, path = _failed(tmp_path)
    with Ledger.open(path) as led:
        (put,) = led.events(kind="put")
        qid = str(put.quantum_id)
    _edit(path, "UPDATE events SET outcome = 'error' WHERE quantum_seq = ?", (put.quantum_seq,))
    before = _digest(path)
    with Ledger.open(path) as led:
        report = led.verify()
    assert report.first_bad == {qid: put.quantum_seq}
    (q,) = recover(path, fixture.root).quanta
    # (verify also reports the triggers _edit dropped: problems of the file, not of the quantum)
    assert q.chain_problems == [p for p in report.problems if p.startswith(f"quantum {qid}:")]
    assert f"quantum_seq {put.quantum_seq}" in q.chain_problems[0]
    seq = f"quantum_seq {put.quantum_seq}"
    with pytest.raises(TamperedError, match=seq):
        QuantumBackedButler.resume(fixture.root, path)
    with pytest.raises(TamperedError, match=seq):
        adopt_orphans(path, fixture.root)
    assert _digest(path) == before
    assert issubclass(TamperedError, LedgerCorruptError)


def test_malformed_detail_names_quantum_and_quantum_seq(tmp_path: Path) -> None:
    """A put whose detail is not JSON: replay, events and recover raise; verify reports it."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    qid = str(butler.quantum_id)
    butler.close()
    # A buggy writer: the row hashes correctly but its detail is not JSON.
    with EventLog(path) as log:
        bad = (str(fixture.outputs[0].id), "ok", None, None, '{"records": [')
        log.append(PendingCall(qid, 1, "put", [bad]))
    where = rf"quantum {qid} quantum_seq 2"
    with Ledger.open(path) as led:
        with pytest.raises(MalformedDetailError, match=where):
            led.replay()
        with pytest.raises(MalformedDetailError, match=where):
            list(led.events())
        report = led.verify()
    assert not report.ok
    assert report.first_bad == {qid: 2}
    assert "detail is not a JSON object" in report.problems[0]
    with pytest.raises(MalformedDetailError, match=where):
        recover(path, fixture.root)
    assert issubclass(MalformedDetailError, LedgerCorruptError)


def test_replay_parses_only_the_put_that_stands_and_verify_checks_every_row(
    tmp_path: Path,
) -> None:
    """A malformed put superseded by a later put of the same id: replay uses the later one."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    qid = str(butler.quantum_id)
    butler.close()
    output = str(fixture.outputs[0].id)
    good = '{"datastore":"files","records":[]}'
    with EventLog(path) as log:
        log.append(PendingCall(qid, 1, "put", [(output, "ok", None, None, '{"records": [')]))
        log.append(PendingCall(qid, 1, "put", [(output, "ok", None, None, good)]))
    with Ledger.open(path) as led:
        assert {str(i) for i in led.replay().actual_outputs} == {output}
        report = led.verify()
    assert report.first_bad == {qid: 2}


def test_an_edited_detail_is_reported_by_verify_and_replay(tmp_path: Path) -> None:
    """Detail text edited into non-JSON: verify names the row, replay names it too."""
    _, path = _failed(tmp_path)
    with Ledger.open(path) as led:
        (put,) = led.events(kind="put")
    _edit(path, "UPDATE events SET detail = '{oops' WHERE quantum_seq = ?", (put.quantum_seq,))
    with Ledger.open(path) as led:
        report = led.verify()
        assert f"quantum_seq {put.quantum_seq}" in report.problems[0]
        with pytest.raises(MalformedDetailError, match=f"quantum_seq {put.quantum_seq}"):
            led.replay()


# --- calls the butler refuses ------------------------------------------------------------------


def _events(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_put_of_an_unpredicted_output_stores_nothing(tmp_path: Path) -> None:
    """UnpredictedOutputError (a RuntimeError, upstream's message); no file; a rejected event."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    stranger = make_ref("calexp", 99)
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        butler.put({"n": 1}, fixture.outputs[0])
        before = _events(path)
        with pytest.raises(RuntimeError) as caught:
            butler.put({"n": 2}, stranger)
        assert isinstance(caught.value, UnpredictedOutputError)
        assert str(caught.value) == "Cannot put dataset that was not predicted as an output."
        assert not fixture.datastore.artifact_path(stranger).exists()
        after = _events(path)
        assert after[: len(before)] == before
        assert after[-1][5:8] == ("put", str(stranger.id), "rejected")
    with Ledger.open(path) as led:
        assert led.verify().ok
        assert led.replay().actual_outputs == {fixture.outputs[0].id}


def test_a_ref_of_the_wrong_dataset_type_is_refused(tmp_path: Path) -> None:
    """A ref whose id was predicted with another dataset type: DatasetTypeMismatchError."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    out = fixture.outputs[0]
    impostor = out.model_copy(update={"dataset_type": fixture.inputs[0].dataset_type})
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        for call in (lambda: butler.put({"n": 1}, impostor), lambda: butler.get(impostor)):
            with pytest.raises(DatasetTypeMismatchError, match=rf"{out.id}.*'calexp'"):
                call()
        assert not fixture.datastore.artifact_path(out).exists()
        qid = str(butler.quantum_id)
    with Ledger.open(path) as led:
        assert [e.outcome.value for e in led.events(qid, kind=["put", "get"])] == ["rejected"] * 2
        assert led.replay().actual_outputs == set()


@pytest.mark.parametrize("bad_path", ["../outside.json", "/etc/passwd", "a/../../b.json"])
def test_record_paths_that_escape_the_root_are_refused(tmp_path: Path, bad_path: str) -> None:
    """An input record pointing out of the root: PathEscapeError naming it; the ledger unchanged."""
    fixture, path = _ledger(tmp_path, n_outputs=1)
    before = _digest(path)
    records = fixture.quantum.datastore_records["files"].to_simple()
    table = records["records"]["file_datastore_records"]
    first = next(iter(table))
    table[first][0]["path"] = bad_path
    with pytest.raises(PathEscapeError, match=rf"{bad_path}"):
        Quantum(
            task_label="t",
            inputs=dict(fixture.quantum.inputs),
            datastore_records={"files": records},
        )
    other = make_quantum(tmp_path / "repo", visit=7, n_inputs=1, n_outputs=1)
    with pytest.raises(PathEscapeError, match=rf"{bad_path}"):
        other.datastore.import_records({"files": records})
    assert _digest(path) == before


def test_a_recorded_output_path_out_of_the_root_stops_resume(tmp_path: Path) -> None:
    """A put record in the ledger escaping the root: resume and recover refuse, nothing written."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    qid = str(butler.quantum_id)
    butler.finish(RuntimeError("failed"))
    record = {"path": "../../etc/passwd", "formatter": "json", "storage_class": "Text"}
    detail = json.dumps({"datastore": "files", "records": [record]})
    with EventLog(path) as log:  # a writer that did not check its paths
        log.append(
            PendingCall(qid, 1, "put", [(str(fixture.outputs[0].id), "ok", None, None, detail)])
        )
    before = _digest(path)
    with pytest.raises(PathEscapeError, match=r"\.\./\.\./etc/passwd"):
        QuantumBackedButler.resume(fixture.root, path)
    with pytest.raises(PathEscapeError, match="escapes the datastore root"):
        recover(path, fixture.root)  # as replay does: provenance cannot hold that record
    assert _digest(path) == before


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """An input artifact replaced by a symlink out of the root: refused before any read."""
    _, path = _ledger(tmp_path, n_outputs=1)
    before = _digest(path)
    other = make_quantum(tmp_path / "repo", visit=5, n_inputs=1, n_outputs=1)
    artifact = other.datastore.artifact_path(other.inputs[0])
    outside = tmp_path / "secret.json"
    outside.write_text('{"secret": 1}')
    artifact.unlink()
    os.symlink(outside, artifact)
    with pytest.raises(PathEscapeError, match=r"secret\.json, outside the datastore root"):
        QuantumBackedButler.initialize(other.root, other.quantum, ledger=path)
    assert _digest(path) == before


def test_a_second_writer_on_a_batch_ledger_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    """While a batch-mode writer holds the ledger, another writer gets LedgerBusyError."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    other = make_quantum(tmp_path / "repo", visit=2, n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=path, durability="batch"
    ) as butler:
        butler.get(fixture.inputs[0])
        butler.put({"n": 1}, fixture.outputs[0])
        for durability in ("normal", "batch"):
            with pytest.raises(LedgerBusyError, match=r"q\.ledger.*batch-mode|q\.ledger.*another"):
                QuantumBackedButler.initialize(
                    other.root,
                    other.quantum,
                    ledger=path,
                    durability=durability,
                )
        extracted = butler.extract_provenance_data()
    with Ledger.open(path) as led:
        assert led.quantum_ids() == [butler.quantum_id]
        assert led.replay() == extracted
        assert led.verify().ok
    assert extracted.actual_outputs == {fixture.outputs[0].id}


# --- inspecting never writes ------------------------------------------------------------------


def test_recover_leaves_the_ledger_and_the_datastore_unchanged(tmp_path: Path) -> None:
    """recover (no adopt, no remove) changes no byte of the ledger and no file of the datastore."""
    fixture, path = _failed(tmp_path)
    interrupted = make_quantum(tmp_path / "repo", visit=3, n_inputs=1, n_outputs=1)
    QuantumBackedButler.initialize(interrupted.root, interrupted.quantum, ledger=path).close()
    ledger_before, files_before = _digest(path), _tree(fixture.root)
    report = recover(path, fixture.root)
    assert {q.status for q in report.quanta} == {"failed", "interrupted"}
    for q in report.quanta:
        recover(path, fixture.root, quantum_id=q.quantum_id)
    assert _digest(path) == ledger_before
    assert _tree(fixture.root) == files_before
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
