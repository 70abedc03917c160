"""Recovery of failed and interrupted quanta, success caveats, and retries with resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from ledger import (
    DatasetExistsError,
    FileDatastore,
    Ledger,
    LedgerError,
    NotARegularFileError,
    PathEscapeError,
    QuantumBackedButler,
    SchemaTooOldError,
)
from ledger.errors import NoWorkFound, QuantumStillRunningError
from ledger.recovery import RecoveryReport, adopt_orphans, recover, remove_orphans
from ledger.store import migrate
from ledger.testing import QuantumFixture, make_quantum


def _failed(tmp_path: Path, *, orphan: bool = True) -> tuple[QuantumFixture, Path]:
    """A quantum that read its inputs, wrote output 0, left output 1 as an orphan, and failed."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_missing=1, n_outputs=3)
    path = tmp_path / "q.ledger"
    with (
        contextlib.suppress(ZeroDivisionError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler,
    ):
        butler.stored_many(fixture.predicted_inputs)
        for ref in fixture.inputs:
            butler.get(ref)
        butler.put({"n": 0}, fixture.outputs[0])
        if orphan:
            # Written, but the process "died" before recording it: no put event.
            FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])
        raise ZeroDivisionError("boom")
    return fixture, path


def _rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT quantum_seq, hash FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def _status(path: Path) -> dict[str, object]:
    with Ledger.open(path) as led:
        (row,) = led.status()
    return row


# --- recover -------------------------------------------------------------------------


def test_recover_reports_how_a_failed_quantum_ended_and_what_it_left(tmp_path: Path) -> None:
    """A failed quantum: exception and traceback, inputs read, outputs verified, orphan, missing."""
    fixture, path = _failed(tmp_path)
    report = recover(path, fixture.root)
    assert not report.ok
    (q,) = report.quanta
    assert (q.status, q.process, q.attempts) == ("failed", None, 1)
    assert (q.error_type, q.error_message) == ("ZeroDivisionError", "boom")
    assert q.traceback is not None
    assert "ZeroDivisionError: boom" in q.traceback
    assert [i.dataset_id for i in q.inputs_read] == [r.id for r in fixture.inputs]
    assert [i.dataset_id for i in q.inputs_unavailable] == [fixture.missing[0].id]
    assert [o.dataset_id for o in q.outputs_verified] == [fixture.outputs[0].id]
    (orphan,) = q.orphans
    assert orphan.dataset_id == fixture.outputs[1].id
    assert (orphan.orphan_reason, orphan.verified, orphan.problem) == (
        "unrecorded_write",
        True,
        None,
    )
    assert orphan.path is not None
    assert (fixture.root / orphan.path).is_file()
    assert [o.dataset_id for o in q.outputs_missing] == [fixture.outputs[2].id]
    assert not q.outputs_damaged
    assert not q.outputs_unstored
    with Ledger.open(path) as led:
        assert q.provenance == led.replay()


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    """The report's JSON form validates back to an equal report."""
    fixture, path = _failed(tmp_path)
    report = recover(path, {"root": str(fixture.root)})
    again = RecoveryReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert json.loads(report.model_dump_json())["quanta"][0]["status"] == "failed"


def test_damaged_outputs_say_what_is_wrong(tmp_path: Path) -> None:
    """An edited artifact and a deleted one are damaged, each with a one-line reason."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    with (
        contextlib.suppress(RuntimeError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler,
    ):
        butler.put({"n": 10}, fixture.outputs[0])
        butler.put({"n": 20}, fixture.outputs[1])
        raise RuntimeError("late failure")
    first = fixture.datastore.artifact_path(fixture.outputs[0])
    first.write_bytes(first.read_bytes().replace(b"10", b"99"))  # same size, other bytes
    fixture.datastore.artifact_path(fixture.outputs[1]).unlink()
    (q,) = recover(path, fixture.root).quanta
    problems = {o.dataset_id: o.problem or "" for o in q.outputs_damaged}
    assert "sha256" in problems[fixture.outputs[0].id]
    assert "missing" in problems[fixture.outputs[1].id]


def test_succeeded_quanta_are_reported_only_when_named(tmp_path: Path) -> None:
    """Without an id only failed and interrupted quanta appear; a named success is ok."""
    path = tmp_path / "shared.ledger"
    good = make_quantum(tmp_path / "repo", visit=1, n_inputs=1, n_outputs=1)
    with QuantumBackedButler.initialize(good.root, good.quantum, ledger=path) as butler:
        butler.put({"ok": True}, good.outputs[0])
    bad = make_quantum(tmp_path / "repo", visit=2, n_inputs=1, n_outputs=1)
    with (
        pytest.raises(KeyError),
        QuantumBackedButler.initialize(bad.root, bad.quantum, ledger=path) as butler,
    ):
        raise KeyError("x")
    report = recover(path, good.root)
    assert [q.task_label for q in report.quanta] == ["task"]
    assert [q.status for q in report.quanta] == ["failed"]
    good_id = Ledger.open(path).quantum_ids()[0]
    named = recover(path, good.root, quantum_id=good_id)
    assert named.ok
    assert [q.status for q in named.quanta] == ["succeeded"]


def test_a_killed_quantum_is_interrupted_and_dead(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves an interrupted quantum whose process is dead."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from ledger import FileDatastore, QuantumBackedButler
        from ledger.testing import make_quantum
        fixture = make_quantum(Path(sys.argv[1]), n_inputs=1, n_outputs=2)
        butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=sys.argv[2])
        butler.put({"n": 0}, fixture.outputs[0])
        FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(fixture.root), str(path)], capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    (q,) = recover(path, fixture.root).quanta
    assert (q.status, q.process) == ("interrupted", "dead")
    assert q.pid != os.getpid()
    assert [o.dataset_id for o in q.orphans] == [fixture.outputs[1].id]
    assert [a.status for a in q.attempt_history] == ["interrupted"]


def test_an_interrupted_quantum_of_a_live_process_is_protected(tmp_path: Path) -> None:
    """While the quantum's recorder is open (a fresh lease), adopt/remove refuse unless forced."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])
    (q,) = recover(path, fixture.root).quanta
    assert (q.status, q.process, q.pid) == ("interrupted", "running", os.getpid())
    assert q.lease_expires_at is not None
    before = _rows(path)
    with pytest.raises(QuantumStillRunningError, match="is running: attempt 1 by pid"):
        adopt_orphans(path, fixture.root)
    with pytest.raises(QuantumStillRunningError):
        remove_orphans(path, fixture.root)
    assert _rows(path) == before
    (action,) = adopt_orphans(path, fixture.root, force=True)
    assert action.action == "adopted"
    butler.close()


def test_a_closed_quantum_is_not_running(tmp_path: Path) -> None:
    """A recorder closed without an end released its lease: recovery may act at once."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    FileDatastore(fixture.root).put({"n": 1}, fixture.outputs[1])
    butler.close()  # no terminal event, but the recorder said it is done
    (q,) = recover(path, fixture.root).quanta
    assert (q.status, q.process) == ("interrupted", "closed")
    (action,) = adopt_orphans(path, fixture.root)
    assert action.action == "adopted"


# --- adopt and remove ------------------------------------------------------------------


def test_adopting_records_a_put_and_changes_no_old_event(tmp_path: Path) -> None:
    """An adopted orphan is a new put event: replay and the view count it, old rows stay."""
    fixture, path = _failed(tmp_path)
    before = _rows(path)
    (action,) = adopt_orphans(path, fixture.root)
    assert (action.action, action.dataset_id) == ("adopted", fixture.outputs[1].id)
    after = _rows(path)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1
    with Ledger.open(path) as led:
        (event,) = led.events(kind="put", dataset_id=fixture.outputs[1].id)
        assert event.quantum_seq == action.quantum_seq == before[-1][0] + 1
        assert event.attempt == 1
        assert event.detail is not None
        assert event.detail["adopted"] is True
        prov = led.replay()
        assert led.verify().ok
    assert prov.actual_outputs == {fixture.outputs[0].id, fixture.outputs[1].id}
    assert fixture.outputs[1].id in set(prov.datastore_records["files"].dataset_ids)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    (flag,) = conn.execute(
        "SELECT actual_output FROM provenance WHERE dataset_id = ?", (str(fixture.outputs[1].id),)
    ).fetchone()
    conn.close()
    assert flag == 1
    assert _status(path)["status"] == "failed"  # recovery is not a retry
    (q,) = recover(path, fixture.root).quanta
    assert not q.orphans
    assert {o.dataset_id for o in q.outputs_verified} == {r.id for r in fixture.outputs[:2]}


def test_an_undecodable_orphan_is_not_adopted_but_can_be_removed(tmp_path: Path) -> None:
    """A file that does not decode is reported, skipped by adopt, and removed (recorded)."""
    fixture, path = _failed(tmp_path, orphan=False)
    target = fixture.datastore.artifact_path(fixture.outputs[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"{not json")
    (q,) = recover(path, fixture.root).quanta
    (orphan,) = q.orphans
    assert orphan.verified is False
    assert orphan.problem is not None
    assert "decode" in orphan.problem
    (skipped,) = adopt_orphans(path, fixture.root)
    assert skipped.action == "skipped"
    with Ledger.open(path) as led:
        before = led.replay()
    (removed,) = remove_orphans(path, fixture.root)
    assert removed.action == "removed"
    assert not target.exists()
    with Ledger.open(path) as led:
        (event,) = led.events(kind="prune")
        assert event.detail is not None
        assert {k: event.detail[k] for k in ("orphan", "unstore", "purge", "disassociate")} == {
            "orphan": True,
            "unstore": True,
            "purge": False,
            "disassociate": False,
        }
        assert event.detail["path"] == orphan.path
        assert led.replay() == before
    assert not recover(path, fixture.root).quanta[0].orphans


def test_a_pruned_file_left_behind_is_removed_never_adopted(tmp_path: Path) -> None:
    """A file matching what a recorded prune removed is 'pruned_not_deleted'."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    (out,) = fixture.outputs
    path = tmp_path / "q.ledger"
    artifact = fixture.datastore.artifact_path(out)
    with (
        contextlib.suppress(RuntimeError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler,
    ):
        butler.put({"n": 1}, out)
        content = artifact.read_bytes()
        butler.pruneDatasets([out], disassociate=False, unstore=True)
        artifact.write_bytes(content)  # as if the crash came before the delete
        raise RuntimeError("crash")
    (q,) = recover(path, fixture.root).quanta
    (orphan,) = q.orphans
    assert orphan.orphan_reason == "pruned_not_deleted"
    (skipped,) = adopt_orphans(path, fixture.root)
    assert skipped.action == "skipped"
    assert skipped.reason is not None
    assert "remove" in skipped.reason
    (removed,) = remove_orphans(path, fixture.root)
    assert removed.action == "removed"
    assert not artifact.exists()


def test_adopting_needs_the_datastore_the_quantum_used(tmp_path: Path) -> None:
    """A config naming another datastore is refused before anything is written."""
    fixture, path = _failed(tmp_path)
    before = _rows(path)
    with pytest.raises(LedgerError, match="used datastore 'files'"):
        adopt_orphans(path, {"root": str(fixture.root), "name": "other"})
    assert _rows(path) == before


# --- caveats -------------------------------------------------------------------------------


def test_no_work_found_is_a_success_with_caveats_and_still_propagates(tmp_path: Path) -> None:
    """NoWorkFound records quantum_succeeded with no_work (and missing outputs), then re-raises."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    with (
        pytest.raises(NoWorkFound),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
    ):
        raise NoWorkFound("no overlap with the tract")
    with Ledger.open(path) as led:
        (event,) = led.events(kind="quantum_succeeded")
        assert not list(led.events(kind="quantum_failed"))
    assert event.detail == {
        "caveats": ["no_work", "some_outputs_missing", "all_outputs_missing"],
        "message": "no overlap with the tract",
    }
    status = _status(path)
    assert status["status"] == "succeeded"
    assert status["caveats"] == event.detail["caveats"]


def test_any_exception_named_no_work_found_counts(tmp_path: Path) -> None:
    """Upstream's class (matched by name) and its subclasses are no_work successes."""

    class NoWorkFound(Exception):  # noqa: N818 -- stands for lsst.pipe.base.NoWorkFound
        pass

    class UpstreamFailureNoWorkFound(NoWorkFound):
        pass

    def run(fixture: QuantumFixture, path: Path, error: Exception) -> None:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
            butler.put({"n": 1}, fixture.outputs[0])
            raise error

    for i, error in enumerate((NoWorkFound("a"), UpstreamFailureNoWorkFound("b"))):
        fixture = make_quantum(tmp_path / "repo", visit=i, n_inputs=1, n_outputs=1)
        path = tmp_path / f"q{i}.ledger"
        with pytest.raises(NoWorkFound):
            run(fixture, path, error)
        assert _status(path)["status"] == "succeeded"
        assert _status(path)["caveats"] == ["no_work"]


def test_caveats_say_which_outputs_are_missing(tmp_path: Path) -> None:
    """All outputs written: no caveats ([]); some missing: some_outputs_missing."""
    for n_put, expected in ((2, []), (1, ["some_outputs_missing"])):
        fixture = make_quantum(tmp_path / f"repo{n_put}", n_inputs=1, n_outputs=2)
        path = tmp_path / f"q{n_put}.ledger"
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as b:
            for ref in fixture.outputs[:n_put]:
                b.put({"n": 1}, ref)
        assert _status(path)["caveats"] == expected
    fixture, path = _failed(tmp_path / "failed")
    assert _status(path)["caveats"] is None  # caveats qualify successes only


def test_recover_shows_caveats_and_every_attempt(tmp_path: Path) -> None:
    """The recovery report lists each attempt with its status and caveats."""
    fixture, path = _failed(tmp_path, orphan=False)
    with QuantumBackedButler.resume(fixture.root, path) as butler:
        butler.put({"n": 1}, fixture.outputs[1])
    (q,) = recover(path, fixture.root, quantum_id=Ledger.open(path).quantum_ids()[0]).quanta
    assert q.status == "succeeded"
    assert q.attempts == 2
    assert [(a.attempt, a.status, a.resumed) for a in q.attempt_history] == [
        (1, "failed", False),
        (2, "succeeded", True),
    ]
    assert q.caveats == ["some_outputs_missing"]
    assert q.attempt_history[0].error_type == "ZeroDivisionError"


# --- resume ------------------------------------------------------------------------------


def test_resume_is_the_next_attempt_and_keeps_earlier_outputs(tmp_path: Path) -> None:
    """A resumed quantum is attempt 2; outputs of attempt 1 are readable and never rewritten."""
    fixture, path = _failed(tmp_path, orphan=False)
    first = fixture.datastore.artifact_path(fixture.outputs[0])
    content = first.read_bytes()
    with QuantumBackedButler.resume(fixture.root, path) as butler:
        assert butler.attempt == 2
        assert butler.get(fixture.inputs[0]) is not None
        assert butler.stored(fixture.outputs[0])
        assert butler.get(fixture.outputs[0]) == {"n": 0}
        with pytest.raises(DatasetExistsError):
            butler.put({"n": "again"}, fixture.outputs[0])
        butler.put({"n": 1}, fixture.outputs[1])
        extracted = butler.extract_provenance_data()
    assert first.read_bytes() == content
    with Ledger.open(path) as led:
        assert led.replay() == extracted
        assert led.replay(attempt=1).actual_outputs == {fixture.outputs[0].id}
        assert led.replay(attempt=2).actual_outputs == {fixture.outputs[1].id}
        (started,) = [e for e in led.events(kind="quantum_started") if e.attempt == 2]
        assert started.detail is not None
        assert started.detail["resumed"] is True
        assert led.verify().ok
    assert extracted.actual_outputs == {fixture.outputs[0].id, fixture.outputs[1].id}
    status = _status(path)
    assert (status["status"], status["attempts"]) == ("succeeded", 2)


def test_resume_skip_existing_records_the_existing_output_as_done(tmp_path: Path) -> None:
    """With skip_existing, a put of a verified earlier output writes nothing and is recorded."""
    fixture, path = _failed(tmp_path, orphan=False)
    out = fixture.outputs[0]
    artifact = fixture.datastore.artifact_path(out)
    stat = artifact.stat()
    with QuantumBackedButler.resume(fixture.root, path, skip_existing=True) as butler:
        assert butler.put({"n": "new"}, out) == out
        with pytest.raises(DatasetExistsError):
            butler.put({"n": "new"}, out)  # skipped once; the artifact still exists
    assert artifact.stat().st_mtime_ns == stat.st_mtime_ns
    assert artifact.read_bytes() != b'{"n": "new"}'
    with Ledger.open(path) as led:
        puts = [e for e in led.events(kind="put", outcome="ok") if e.dataset_id == out.id]
    assert len(puts) == 2
    assert puts[1].detail is not None
    assert puts[1].detail["skipped_existing"] is True
    assert puts[1].detail["records"] == puts[0].detail["records"]  # type: ignore[index]


def test_resume_skip_existing_does_not_skip_a_damaged_output(tmp_path: Path) -> None:
    """An earlier output whose artifact no longer verifies is not counted as done."""
    fixture, path = _failed(tmp_path, orphan=False)
    artifact = fixture.datastore.artifact_path(fixture.outputs[0])
    artifact.write_bytes(artifact.read_bytes().replace(b"0", b"7"))
    with (
        QuantumBackedButler.resume(fixture.root, path, skip_existing=True) as butler,
        pytest.raises(DatasetExistsError),
    ):
        butler.put({"n": 0}, fixture.outputs[0])


def test_resume_clobber_prunes_outputs_and_orphans_first(tmp_path: Path) -> None:
    """With clobber, earlier outputs are pruned (recorded) and orphans removed, then rewritten."""
    fixture, path = _failed(tmp_path)
    with QuantumBackedButler.resume(fixture.root, path, clobber=True) as butler:
        assert not butler.stored(fixture.outputs[0])
        assert butler.extract_provenance_data().actual_outputs == set()
        butler.put({"n": "zero"}, fixture.outputs[0])
        butler.put({"n": "one"}, fixture.outputs[1])
        assert butler.get(fixture.outputs[1]) == {"n": "one"}
    with Ledger.open(path) as led:
        prunes = list(led.events(kind="prune", attempt=2))
        prov = led.replay()
    flags = [(p.dataset_id, p.detail) for p in prunes]
    assert flags[0] == (
        fixture.outputs[0].id,
        {"disassociate": True, "purge": True, "unstore": True},
    )
    assert flags[1][0] == fixture.outputs[1].id
    assert flags[1][1] is not None
    assert flags[1][1]["orphan"] is True
    assert prov.actual_outputs == {fixture.outputs[0].id, fixture.outputs[1].id}


def test_resume_refuses_both_flags_and_another_datastore(tmp_path: Path) -> None:
    """skip_existing with clobber is a ValueError; another datastore name is refused."""
    fixture, path = _failed(tmp_path, orphan=False)
    before = _rows(path)
    with pytest.raises(ValueError, match="not both"):
        QuantumBackedButler.resume(fixture.root, path, skip_existing=True, clobber=True)
    with pytest.raises(LedgerError, match="same datastore"):
        QuantumBackedButler.resume({"root": str(fixture.root), "name": "elsewhere"}, path)
    assert _rows(path) == before


# --- symlinks and FIFOs in the datastore ----------------------------------------------------


def _link_output_folder_out(tmp_path: Path) -> tuple[QuantumFixture, Path, Path]:
    """A failed quantum whose output run folder is a symlink out of the root, onto a file."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1, output_run="out")
    path = tmp_path / "q.ledger"
    with (
        contextlib.suppress(ZeroDivisionError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
    ):
        raise ZeroDivisionError("boom")
    relative = FileDatastore(fixture.root).artifact_path(fixture.outputs[0])
    relative = relative.relative_to(fixture.root)
    outside = tmp_path / "outside"
    victim = outside.joinpath(*relative.parts[1:])
    victim.parent.mkdir(parents=True)
    victim.write_text("precious, not the datastore's")
    (fixture.root / relative.parts[0]).symlink_to(outside)
    return fixture, path, victim


def test_resume_clobber_never_deletes_through_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    """An output folder linked out of the root: clobber refuses, deletes and records nothing."""
    fixture, path, victim = _link_output_folder_out(tmp_path)
    (q,) = recover(path, fixture.root).quanta
    assert "left alone" in (q.outputs_missing[0].problem or "")  # recover refuses the path
    before = _rows(path)
    with pytest.raises(PathEscapeError, match="outside the datastore root"):
        QuantumBackedButler.resume(fixture.root, path, clobber=True)
    assert victim.read_text() == "precious, not the datastore's"
    assert _rows(path) == before
    assert remove_orphans(path, fixture.root) == []
    assert victim.exists()


def test_resume_clobber_refuses_a_fifo_where_an_output_goes(tmp_path: Path) -> None:
    """A FIFO at an output's path is not an orphan to delete: clobber refuses, records nothing."""
    fixture, path = _failed(tmp_path, orphan=False)
    os.mkfifo(FileDatastore(fixture.root).artifact_path(fixture.outputs[2]))
    before = _rows(path)
    with pytest.raises(NotARegularFileError, match="a FIFO is where an artifact should be"):
        QuantumBackedButler.resume(fixture.root, path, clobber=True)
    assert _rows(path) == before


def test_a_fifo_in_place_of_an_artifact_is_a_problem_never_a_hang(tmp_path: Path) -> None:
    """verify --datastore and recover name a FIFO where an artifact was, exit 1, never block."""
    fixture, path = _failed(tmp_path)  # output 0 recorded, output 1 an orphan
    datastore = FileDatastore(fixture.root)
    for ref in fixture.outputs[:2]:
        artifact = datastore.artifact_path(ref)
        artifact.unlink()
        os.mkfifo(artifact)
    root = str(fixture.root)

    def qledger(*args: str) -> subprocess.CompletedProcess[str]:
        # A FIFO opened for reading waits for a writer: the timeout turns a hang into a failure.
        return subprocess.run(
            [sys.executable, "-m", "ledger", *args], capture_output=True, text=True, timeout=60
        )

    verified = qledger("verify", str(path), "--datastore", root)
    assert verified.returncode == 1, verified.stderr
    assert "is a FIFO, not a regular file" in verified.stdout
    recovered = qledger("recover", str(path), "--datastore", root, "--json")
    assert recovered.returncode == 1, recovered.stderr
    (q,) = RecoveryReport.model_validate_json(recovered.stdout).quanta
    assert [o.dataset_id for o in q.outputs_damaged] == [fixture.outputs[0].id]
    assert "is a FIFO, not a regular file" in (q.outputs_damaged[0].problem or "")
    assert q.orphans == []
    fifo = [o for o in q.outputs_missing if o.dataset_id == fixture.outputs[1].id]
    assert "is a FIFO, not an artifact" in (fifo[0].problem or "")


# --- migration 0002 ---------------------------------------------------------------------------


def test_a_0001_ledger_upgrades_to_status_with_caveats(tmp_path: Path) -> None:
    """A ledger at revision 0001 is too old; upgrading keeps every row and adds caveats."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        butler.put({"n": 1}, fixture.outputs[0])
    rows = _rows(path)
    engine = create_engine(f"sqlite:///{path}")
    migrate.downgrade(engine, "0001")
    with pytest.raises(SchemaTooOldError, match="qledger upgrade"):
        Ledger.open(path)
    migrate.upgrade(engine)
    engine.dispose()
    assert _rows(path) == rows
    assert _status(path)["caveats"] == ["some_outputs_missing"]


@pytest.mark.postgres
def test_status_caveats_agree_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """The caveats column has the same text on SQLite and PostgreSQL."""
    found = {}
    for name, target in (("sqlite", str(tmp_path / "q.ledger")), ("postgres", postgres_url)):
        repo = tmp_path / f"repo-{name}"
        runs: list[tuple[int, Exception | None]] = [(0, NoWorkFound("none")), (1, None), (2, None)]
        for visit, (n_put, error) in enumerate(runs):
            fixture = make_quantum(repo, visit=visit, n_inputs=1, n_outputs=2)
            try:
                with QuantumBackedButler.initialize(
                    fixture.root, fixture.quantum, ledger=target
                ) as butler:
                    for ref in fixture.outputs[:n_put]:
                        butler.put({"n": 1}, ref)
                    if error is not None:
                        raise error
            except NoWorkFound:
                pass
        with Ledger.open(target) as led:
            found[name] = sorted((r["status"], r["caveats"]) for r in led.status())
    assert found["sqlite"] == found["postgres"]
    assert [c for _, c in found["sqlite"]] == sorted(
        [
            ["no_work", "some_outputs_missing", "all_outputs_missing"],
            ["some_outputs_missing"],
            [],
        ]
    )
