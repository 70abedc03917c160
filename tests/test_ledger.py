"""The ledger file: replay from the file alone, quantum round trip, tamper evidence, read-only."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import (
    Head,
    Ledger,
    LedgerNotFoundError,
    NotALedgerError,
    Quantum,
    QuantumBackedButler,
    QuantumProvenanceData,
    UnknownQuantumError,
)
from ledger.testing import QuantumFixture, make_quantum


def _drop_triggers(conn: sqlite3.Connection) -> None:
    """Go behind the append-only triggers' back, as an attacker with file access could."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    for name in names:
        conn.execute(f'DROP TRIGGER "{name}"')


def _run(
    tmp_path: Path, *, fail: bool = False
) -> tuple[QuantumFixture, Path, QuantumProvenanceData]:
    fixture = make_quantum(tmp_path / "repo", n_inputs=3, n_missing=1, n_outputs=2, n_init_inputs=1)
    path = tmp_path / "q.ledger"
    try:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
            butler.stored_many(fixture.predicted_inputs)
            for ref in fixture.inputs:
                butler.get(ref)
            butler.put({"a": 1}, fixture.outputs[0])
            prov = butler.extract_provenance_data()
            if fail:
                raise ZeroDivisionError("boom")
            butler.put({"b": 2}, fixture.outputs[1])
            prov = butler.extract_provenance_data()
    except ZeroDivisionError:
        pass
    return fixture, path, prov


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_replay_in_a_new_process_equals_extract(tmp_path: Path) -> None:
    """A fresh process replaying the file gets exactly what the butler extracted."""
    _, path, prov = _run(tmp_path)
    code = (
        "import sys; from ledger import Ledger; "
        "print(Ledger.open(sys.argv[1]).replay().model_dump_json())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert QuantumProvenanceData.direct(**json.loads(out)) == prov


def test_provenance_json_round_trip(tmp_path: Path) -> None:
    """model_dump_json / direct(**json.loads(...)) round-trips, ids given as text."""
    _, _, prov = _run(tmp_path)
    again = QuantumProvenanceData.direct(**json.loads(prov.model_dump_json()))
    assert again == prov
    assert QuantumProvenanceData.model_validate_json(prov.model_dump_json()) == prov


def test_provenance_feeds_the_next_quantum(tmp_path: Path) -> None:
    """The serialized datastore records of one quantum are accepted as the next one's inputs."""
    fixture, _, prov = _run(tmp_path)
    nxt = Quantum(
        task_label="next",
        inputs={"calexp": tuple(fixture.outputs)},
        datastore_records=prov.model_dump(mode="json")["datastore_records"],
    )
    with QuantumBackedButler.initialize(fixture.root, nxt, ledger=tmp_path / "n.ledger") as b:
        assert b.get(fixture.outputs[0]) == {"a": 1}


def test_quantum_rebuilds_from_the_ledger_alone(tmp_path: Path) -> None:
    """Ledger.quantum() gives back the quantum that was run (with its id)."""
    fixture, path, _ = _run(tmp_path)
    with Ledger.open(path) as led:
        rebuilt = led.quantum()
        qid = led.quantum_ids()[0]
    assert rebuilt == fixture.quantum.model_copy(update={"id": qid})


def test_failure_is_recorded_with_traceback(tmp_path: Path) -> None:
    """An exception leaving the context manager is a quantum_failed event with its traceback."""
    _, path, _ = _run(tmp_path, fail=True)
    with Ledger.open(path) as led:
        (failed,) = led.events(kind="quantum_failed")
        (status,) = led.status()
    assert failed.error_type == "ZeroDivisionError"
    assert failed.error_message == "boom"
    assert failed.detail is not None
    assert "ZeroDivisionError: boom" in failed.detail["traceback"]
    assert status["status"] == "failed"


def test_inspecting_never_changes_the_file(tmp_path: Path) -> None:
    """Opening, replaying, verifying and querying leave the ledger's bytes identical."""
    _, path, _ = _run(tmp_path)
    before = _digest(path)
    with Ledger.open(path) as led:
        led.replay()
        list(led.events())
        led.verify()
        led.quantum()
        led.status()
    assert _digest(path) == before
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0


def test_every_row_edit_is_caught_at_its_quantum_seq(tmp_path: Path) -> None:
    """Editing any event behind the triggers' back is reported at exactly that quantum_seq."""
    _, path, _ = _run(tmp_path)
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT quantum_seq FROM events ORDER BY seq").fetchall()
    conn.close()
    for column, value in (("outcome", "rejected"), ("detail", '{"x":1}'), ("recorded_at", "x")):
        for (seq,) in rows:
            copy = path.with_name(f"t-{column}-{seq}.ledger")
            copy.write_bytes(path.read_bytes())
            conn = sqlite3.connect(copy)
            _drop_triggers(conn)
            conn.execute(f"UPDATE events SET {column} = ? WHERE quantum_seq = ?", (value, seq))
            conn.commit()
            conn.close()
            with Ledger.open(copy) as led:
                report = led.verify()
            assert not report.ok
            assert list(report.first_bad.values()) == [seq], report.problems
            assert f"quantum_seq {seq}" in report.problems[0]


def test_deleted_tail_is_caught_by_the_head(tmp_path: Path) -> None:
    """A cut-off tail verifies as a chain, but not against the head recorded elsewhere."""
    _, path, _ = _run(tmp_path)
    with Ledger.open(path) as led:
        head = led.head()
    assert head.terminal == "quantum_succeeded"
    conn = sqlite3.connect(path)
    triggers = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'")]
    _drop_triggers(conn)
    conn.execute("DELETE FROM events WHERE quantum_seq >= ?", (head.quantum_seq - 1,))
    for sql in triggers:  # put back, as a careful forger would
        conn.execute(sql)
    conn.commit()
    conn.close()
    with Ledger.open(path) as led:
        assert led.verify().ok  # the chain alone cannot see it
        report = led.verify(head=head)
    assert not report.ok
    assert "cut off" in report.problems[0]
    assert Head.model_validate(head.model_dump()) == head


def test_editing_the_quantum_definition_is_caught(tmp_path: Path) -> None:
    """The datasets rows are covered by the digest in quantum_started."""
    _, path, _ = _run(tmp_path)
    conn = sqlite3.connect(path)
    _drop_triggers(conn)
    conn.execute("UPDATE datasets SET role = 'input' WHERE role = 'output'")
    conn.commit()
    conn.close()
    with Ledger.open(path) as led:
        report = led.verify()
    assert not report.ok
    assert "differ from those recorded" in report.problems[0]


def test_triggers_refuse_edits(tmp_path: Path) -> None:
    """UPDATE and DELETE on the log fail with a message saying it is append-only."""
    _, path, _ = _run(tmp_path)
    conn = sqlite3.connect(path)
    for sql in ("UPDATE events SET outcome = 'ok'", "DELETE FROM events", "DELETE FROM quanta"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    """Missing files, non-SQLite files and SQLite non-ledgers get named errors."""
    with pytest.raises(LedgerNotFoundError, match=r"nope\.ledger"):
        Ledger.open(tmp_path / "nope.ledger")
    junk = tmp_path / "junk.ledger"
    junk.write_bytes(b"this is not a database at all, just some bytes" * 100)
    with pytest.raises(NotALedgerError, match=r"junk\.ledger"):
        Ledger.open(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(NotALedgerError, match=r"other\.db"):
        Ledger.open(other)


def test_replay_needs_a_quantum_when_there_are_several(tmp_path: Path) -> None:
    """With several quanta, replay without an id says how to list them."""
    path = tmp_path / "shared.ledger"
    for visit in (1, 2):
        f = make_quantum(tmp_path / "repo", visit=visit, n_inputs=1, n_outputs=1)
        with QuantumBackedButler.initialize(f.root, f.quantum, ledger=path) as b:
            b.stored(f.inputs[0])
    with Ledger.open(path) as led:
        with pytest.raises(UnknownQuantumError, match="several quanta"):
            led.replay()
        assert len(led.quantum_ids()) == 2
        for qid in led.quantum_ids():
            assert led.replay(qid).available_inputs
