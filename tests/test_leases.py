"""Leases: a quantum being recorded is known to be running on any host, and nobody steps on it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from ledger import (
    FileDatastore,
    Ledger,
    LedgerBusyError,
    QuantumBackedButler,
    QuantumStillRunningError,
    SchemaTooOldError,
)
from ledger.cli import main
from ledger.errors import MalformedRowError
from ledger.recovery import recover, remove_orphans
from ledger.store import migrate
from ledger.store.lease import HOST_ENV, LeasePolicy
from ledger.testing import QuantumFixture, make_quantum

WORKER = str(Path(__file__).with_name("workers.py"))
#: Short leases for the tests: renewed every 0.2 s, expired after 3 s without a renewal.
INTERVAL, TIMEOUT = 0.2, 3.0


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def _wait_for(predicate: object, what: str, limit: float = 60.0) -> None:
    """Poll ``predicate()`` until it is true (a liveness condition, not a timing check)."""
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Holder:
    """A recorder in a subprocess holding a quantum open, with an unrecorded output file."""

    def __init__(self, tmp_path: Path) -> None:
        self.fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
        self.path = tmp_path / "q.ledger"
        (tmp_path / "q.json").write_text(self.fixture.quantum.model_dump_json())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                WORKER,
                "hold",
                str(self.fixture.root),
                str(tmp_path / "q.json"),
                str(self.path),
                str(INTERVAL),
                str(TIMEOUT),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY"
        self.orphan = FileDatastore(self.fixture.root).artifact_path(self.fixture.outputs[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self) -> str:
        out, _ = self.proc.communicate("\n", timeout=120)
        return out


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    """A quantum held open by another process (killed at the end if still running)."""
    held = Holder(tmp_path)
    try:
        yield held
    finally:
        if held.proc.poll() is None:
            held.kill()


def _with_id(fixture: QuantumFixture) -> QuantumFixture:
    """The fixture's quantum with an id (as an executor gives it: its graph node id)."""
    fixture.quantum = fixture.quantum.model_copy(update={"id": uuid.uuid4()})
    return fixture


def _process(holder: Holder) -> str | None:
    (q,) = recover(holder.path, holder.fixture.root).quanta
    return q.process


# --- recovery from another host --------------------------------------------------------


def test_recover_from_another_host_refuses_while_the_lease_is_fresh(
    holder: Holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a login node, a running quantum's orphans are left alone until its lease expires."""
    monkeypatch.setenv(HOST_ENV, "login-node")
    (q,) = recover(holder.path, holder.fixture.root).quanta
    assert (q.status, q.process) == ("interrupted", "running")
    assert [o.dataset_id for o in q.orphans] == [holder.fixture.outputs[1].id]
    before = _rows(holder.path)
    with pytest.raises(QuantumStillRunningError, match="is running: attempt 1 by pid"):
        remove_orphans(holder.path, holder.fixture.root)
    result = CliRunner().invoke(
        main, ["recover", str(holder.path), "--datastore", str(holder.fixture.root), "--remove"]
    )
    assert result.exit_code == 2
    assert "is running" in result.stderr
    assert "--force" in result.stderr
    assert holder.orphan.is_file()
    assert _rows(holder.path) == before
    # The recorder renews its lease: well past one timeout it is still running.
    time.sleep(TIMEOUT + 1)
    assert _process(holder) == "running"
    holder.kill()
    # Another host cannot see the process die: refused until the lease runs out.
    _wait_for(lambda: _process(holder) == "expired", "the lease to expire")
    (action,) = remove_orphans(holder.path, holder.fixture.root)
    assert action.action == "removed"
    assert not holder.orphan.exists()


def test_recover_on_the_same_host_sees_a_killed_recorder_at_once(holder: Holder) -> None:
    """On the recorder's host a SIGKILLed process is dead though its lease is still fresh."""
    assert _process(holder) == "running"
    with pytest.raises(QuantumStillRunningError):
        remove_orphans(holder.path, holder.fixture.root)
    holder.kill()
    assert _process(holder) == "dead"
    (action,) = remove_orphans(holder.path, holder.fixture.root)
    assert action.action == "removed"


def test_force_acts_on_a_running_quantum(holder: Holder, monkeypatch: pytest.MonkeyPatch) -> None:
    """--force removes anyway and revokes the lease, so the recorder is known to be overruled."""
    monkeypatch.setenv(HOST_ENV, "login-node")
    (action,) = remove_orphans(holder.path, holder.fixture.root, force=True)
    assert action.action == "removed"
    with Ledger.open(holder.path) as led:
        (lease,) = led.rows("SELECT released_by FROM leases")
    assert lease == ("recover",)


# --- show and status --------------------------------------------------------------------


def test_show_tells_running_from_interrupted(
    holder: Holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """show says running while the lease is fresh, interrupted once the process is dead."""
    monkeypatch.setenv(HOST_ENV, "login-node")
    with Ledger.open(holder.path) as led:
        (row,) = led.status()
    assert (row["status"], row["state"], row["process"]) == ("interrupted", "running", "running")
    assert row["lease_expires_at"] > row["started_at"]
    (shown,) = [
        json.loads(line)
        for line in CliRunner()
        .invoke(main, ["show", str(holder.path), "--json"])
        .stdout.splitlines()
    ]
    assert (shown["state"], shown["process"]) == ("running", "running")
    assert "running" in CliRunner().invoke(main, ["show", str(holder.path)]).output
    monkeypatch.delenv(HOST_ENV)
    holder.kill()
    with Ledger.open(holder.path) as led:
        (row,) = led.status()
    assert (row["status"], row["state"], row["process"]) == ("interrupted", "interrupted", "dead")


def test_a_finished_recorder_releases_its_lease(holder: Holder) -> None:
    """After the recorder's end the lease is released and the quantum has its final status."""
    assert "DONE" in holder.finish()
    with Ledger.open(holder.path) as led:
        (row,) = led.status()
        (lease,) = led.rows("SELECT released_by, released_at IS NOT NULL FROM leases")
    assert (row["status"], row["state"], row["process"]) == ("succeeded", "succeeded", None)
    assert lease == ("end", 1)


# --- starting an attempt ----------------------------------------------------------------


def test_a_second_executor_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """A start (initialize or resume) while the quantum is being recorded: the named error."""
    fixture = _with_id(make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1))
    path = tmp_path / "q.ledger"
    first = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    before = _rows(path)
    with pytest.raises(QuantumStillRunningError, match="is running: attempt 1") as refused:
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    assert isinstance(refused.value, LedgerBusyError)
    with pytest.raises(QuantumStillRunningError):
        QuantumBackedButler.resume(fixture.root, path)
    assert _rows(path) == before
    first.finish()
    with QuantumBackedButler.resume(fixture.root, path) as second:
        assert second.attempt == 2


def test_a_closed_attempt_may_be_resumed_at_once(tmp_path: Path) -> None:
    """A recorder that closed without an end released its lease: a retry starts right away."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path).close()
    with Ledger.open(path) as led:
        (row,) = led.status()
    assert (row["state"], row["process"]) == ("interrupted", "closed")
    with QuantumBackedButler.resume(fixture.root, path) as butler:
        assert butler.attempt == 2


def test_a_ledger_without_a_lease_falls_back_to_the_recorded_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lease row (a ledger from before leases): same host and a live pid still blocks."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    first = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    first._recorder.lease.stop()  # type: ignore[union-attr]
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM leases")  # operational state: not append-only
    conn.commit()
    conn.close()
    with Ledger.open(path) as led:
        (row,) = led.status()
    assert row["process"] == "possibly still running"
    with pytest.raises(QuantumStillRunningError, match="no lease"):
        QuantumBackedButler.resume(fixture.root, path)
    monkeypatch.setenv(HOST_ENV, "elsewhere")
    with Ledger.open(path) as led:
        (row,) = led.status()
    assert row["process"] == "unknown"  # as before leases: another host cannot tell
    first.close()


def _race(tmp_path: Path, fixture: QuantumFixture, ledger: str, mode: str, tag: str) -> None:
    """Two processes start the same quantum at once: one runs, one gets the named error."""
    go = tmp_path / f"go-{tag}"
    quantum = tmp_path / "q.json"
    quantum.write_text(fixture.quantum.model_dump_json())
    command = [sys.executable, WORKER, "race", str(fixture.root), str(quantum), ledger, str(go)]
    procs = [
        subprocess.Popen(
            [*command, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
        go.touch()  # both are waiting for it: they start within a millisecond
        outcomes = []
        for proc in procs:
            assert proc.stdout is not None
            outcomes.append(proc.stdout.readline().split(maxsplit=2) or ["NOTHING"])
        ended = [proc.communicate("\n", timeout=120) for proc in procs]
        assert sorted(o[0] for o in outcomes) == ["REFUSED", "STARTED"], (outcomes, ended)
        (refused,) = [o for o in outcomes if o[0] == "REFUSED"]
        assert refused[1] == "QuantumStillRunningError", refused
        assert "is running" in refused[2]
        assert [proc.returncode for proc in procs] == [0, 0], ended
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("mode", ["initialize", "resume"])
def test_two_processes_racing_to_start_one_quantum(tmp_path: Path, mode: str) -> None:
    """Repeated races: always exactly one new attempt, one refusal, a ledger that verifies."""
    fixture = _with_id(make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1))
    for round_ in range(4):
        path = tmp_path / f"r{round_}.ledger"
        if mode == "resume":  # an attempt that failed: both race to be attempt 2
            with (
                pytest.raises(ZeroDivisionError),
                QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
            ):
                1 / 0  # noqa: B018
        _race(tmp_path, fixture, str(path), mode, str(round_))
        with Ledger.open(path) as led:
            assert led.verify().ok
            starts = [e.attempt for e in led.events(kind="quantum_started")]
            ends = [e.attempt for e in led.events(kind=["quantum_succeeded", "quantum_failed"])]
        expected = [1] if mode == "initialize" else [1, 2]
        assert starts == ends == expected


@pytest.mark.postgres
def test_two_processes_racing_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same race against a PostgreSQL ledger: the event-order lock serialises the starts."""
    fixture = _with_id(make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1))
    for round_ in range(2):
        _race(tmp_path, fixture, postgres_url, "initialize", str(round_))
    with Ledger.open(postgres_url) as led:
        assert led.verify().ok
        starts = [e.attempt for e in led.events(kind="quantum_started")]
    assert starts == [1, 2]


def test_lease_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QLEDGER_LEASE_INTERVAL / _TIMEOUT set the policy; nonsense is a clear ValueError."""
    assert LeasePolicy.from_env() == LeasePolicy(30.0, 120.0)
    monkeypatch.setenv("QLEDGER_LEASE_INTERVAL", "1")
    monkeypatch.setenv("QLEDGER_LEASE_TIMEOUT", "5")
    assert LeasePolicy.from_env() == LeasePolicy(1.0, 5.0)
    monkeypatch.setenv("QLEDGER_LEASE_TIMEOUT", "0.5")
    with pytest.raises(ValueError, match="interval < timeout"):
        LeasePolicy.from_env()
    assert os.environ.get("QLEDGER_LEASE_TIMEOUT") == "0.5"


def test_a_ledger_from_before_leases_upgrades_and_keeps_working(tmp_path: Path) -> None:
    """A revision-0003 ledger upgrades; without lease rows a dead recorder's quantum resumes."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "old.ledger"
    (tmp_path / "q.json").write_text(fixture.quantum.model_dump_json())
    code = (
        "import os, sys; from ledger import QuantumBackedButler, Quantum; "
        "q = Quantum.model_validate_json(open(sys.argv[2]).read()); "
        "b = QuantumBackedButler.initialize(sys.argv[1], q, ledger=sys.argv[3]); os._exit(0)"
    )
    subprocess.run(
        [sys.executable, "-c", code, fixture.root, tmp_path / "q.json", path], check=True
    )
    engine = create_engine(f"sqlite:///{path}")
    migrate.downgrade(engine, "0003")  # as written before leases existed
    engine.dispose()
    with pytest.raises(SchemaTooOldError):
        Ledger.open(path)
    assert CliRunner().invoke(main, ["upgrade", str(path)]).exit_code == 0
    with Ledger.open(path) as led:
        assert led.verify().ok
        assert list(led.rows("SELECT * FROM leases")) == []
        (row,) = led.status()
    assert (row["status"], row["process"]) == ("interrupted", "dead")  # the recorded pid died
    with QuantumBackedButler.resume(fixture.root, path) as butler:
        assert butler.attempt == 2
    with Ledger.open(path) as led:
        assert led.verify().ok
        assert led.head().terminal == "quantum_succeeded"


def test_a_malformed_lease_row_is_a_named_error(tmp_path: Path) -> None:
    """A leases row no recorder writes: MalformedRowError naming it and the way out, exit 2."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE leases SET expires_at = 42")
    conn.commit()
    conn.close()
    with pytest.raises(MalformedRowError, match="DELETE FROM leases"):
        QuantumBackedButler.resume(fixture.root, path)
    result = CliRunner().invoke(main, ["show", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "leases row" in result.stderr
