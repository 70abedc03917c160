"""The two journal-switch races, made to happen on demand.

A writer turns WAL on when it starts on a finished ledger and off at its clean
close; a reader chooses how to read by looking at the file's ``-wal``/``-shm``.
Two races follow, both seen only as rare flakes of concurrent tests:

- a writer's switch to WAL refused at once ("database is locked", without the
  busy handler) while another writer switches too: `wal_on` tries again until
  its busy timeout;
- a reader that looked at the file just before a writer switched gets "unable
  to open database file" from SQLite: `Ledger.open` looks again (three times).

Here each race is forced with a connection (or a revision read) that fails the
way SQLite does, so the retry is tested every run, not once in a hundred.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import ledger.store.ledger as ledger_module
from ledger import QuantumBackedButler
from ledger.errors import LedgerBusyError, LedgerError
from ledger.store import log
from ledger.store.ledger import Ledger
from ledger.testing import make_quantum


class _Refusing(sqlite3.Connection):
    """A connection whose first ``refusals`` WAL switches fail with ``message``."""

    refusals = 0
    message = "database is locked"

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA journal_mode") and type(self).refusals:
            type(self).refusals -= 1
            raise sqlite3.OperationalError(self.message)
        return super().execute(sql, *args)


def _refusing(path: Path, refusals: int, message: str = "database is locked") -> sqlite3.Connection:
    _Refusing.refusals = refusals
    _Refusing.message = message
    conn = sqlite3.connect(path, factory=_Refusing)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    return conn


def test_wal_on_tries_again_while_the_switch_is_refused(tmp_path: Path) -> None:
    conn = _refusing(tmp_path / "f.db", refusals=3)
    log.wal_on(conn, "f.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert _Refusing.refusals == 0  # every refusal was met by another try
    conn.close()


def test_wal_on_gives_up_with_a_named_error_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "_BUSY_TIMEOUT_S", 0.05)
    conn = _refusing(tmp_path / "f.db", refusals=10**9)
    with pytest.raises(LedgerBusyError, match=r"f\.db"):
        log.wal_on(conn, "f.db")
    conn.close()


def test_wal_on_does_not_retry_an_error_that_is_not_a_lock(tmp_path: Path) -> None:
    conn = _refusing(tmp_path / "f.db", refusals=5, message="disk I/O error")
    with pytest.raises(LedgerError):
        log.wal_on(conn, "f.db")
    assert _Refusing.refusals == 4  # failed on the first try
    conn.close()


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    fixture = make_quantum(tmp_path / "repo")
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        for ref in fixture.predicted_inputs:
            butler.get(ref)
    return path


def _vanishing(times: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the revision read fail ``times`` times as SQLite does when the journal switched."""
    real = ledger_module._sqlite_revision
    calls: list[int] = []

    def read(conn: sqlite3.Connection) -> str | None:
        calls.append(1)
        if len(calls) <= times:
            raise sqlite3.OperationalError("unable to open database file")
        return real(conn)

    monkeypatch.setattr(ledger_module, "_sqlite_revision", read)
    return calls


def test_open_looks_again_when_the_file_vanished_under_the_read(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _vanishing(2, monkeypatch)
    with Ledger.open(finished) as led:
        assert led.status()
    assert len(calls) == 3


def test_open_stops_looking_after_three_tries(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _vanishing(10, monkeypatch)
    with pytest.raises(LedgerError, match="unable to open database file"):
        Ledger.open(finished)
    assert len(calls) == 4  # the first look and three more
