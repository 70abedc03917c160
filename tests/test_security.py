"""Hostile input and a hostile environment: bad URLs, silent servers, lost connections.

Every failure of the environment is a named `LedgerError`, one line on stderr
and exit code 2 (``--debug`` adds a traceback, never another code).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, make_url, text

from ledger import Ledger, LedgerUnavailableError, LedgerUrlError, QuantumBackedButler
from ledger.cli import main
from ledger.store.connect import CONNECT_TIMEOUT_ENV
from ledger.testing import QuantumFixture, make_quantum

#: How long a subprocess may take before the test calls it hung (never a speed check).
HANG = 120


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process, as a user would from a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def assert_one_line_error(result: Result, code: int = 2) -> str:
    """The command failed with ``code`` and exactly one ``qledger: error:`` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qledger: error: "), lines[0]
    return lines[0]


def qledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run qledger in a subprocess (fails the test if it hangs)."""
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        capture_output=True,
        text=True,
        timeout=HANG,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write_quantum(fixture: QuantumFixture, ledger: str | Path) -> None:
    """Run one quantum that reads its inputs and writes its outputs."""
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as butler:
        for ref, present in butler.stored_many(fixture.predicted_inputs).items():
            if present:
                butler.get(ref)
        for ref in fixture.outputs:
            butler.put({"flux": 1.0}, ref)


# --- URLs that cannot be used -------------------------------------------------------------

BAD_URLS = [
    "postgres://someone:secret@127.0.0.1:5432/db",  # Heroku's spelling: no such dialect
    "foo://bar",
    "mysql://someone:secret@127.0.0.1/db",  # a dialect whose driver is not installed
    "postgresql+psycopg://someone:secret@127.0.0.1:port/db",  # a port that is not a number
    "postgresql+nodriver://someone@127.0.0.1/db",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unusable_url_is_one_line_and_exit_2(url: str, debug: bool) -> None:
    """A malformed URL or an unknown database or driver: exit 2, one line, --debug or not."""
    for command in (["show", url], ["sql", url, "SELECT 1"], ["upgrade", url]):
        result = run(*(["--debug"] if debug else []), *command)
        assert result.exit_code == 2, (command, result.output)
        last = result.stderr.splitlines()[-1]
        assert last.startswith("qledger: error: "), result.stderr
        assert "a bug" not in last
        assert "secret" not in result.output


@pytest.mark.parametrize("url", BAD_URLS)
def test_an_unusable_url_is_a_ledger_url_error(tmp_path: Path, url: str) -> None:
    """The library names the problem: LedgerUrlError from Ledger.open and from the butler."""
    with pytest.raises(LedgerUrlError, match="URL") as caught:
        Ledger.open(url)
    assert "secret" not in str(caught.value)
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    with pytest.raises(LedgerUrlError):
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=url)


# --- a server that accepts and never answers -----------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{url}"],
        ["sql", "{url}", "SELECT 1"],
        ["upgrade", "{url}"],
        ["ingest", "{url}", "{ledger}"],
        ["lineage", "{url}", "00000000-0000-0000-0000-000000000000"],
    ],
)
def test_a_silent_server_fails_every_command_after_the_connect_timeout(
    tmp_path: Path, silent_server: int, command: list[str]
) -> None:
    """A server that accepts and never answers: exit 2 with one line instead of hanging."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, tmp_path / "q.ledger")
    url = f"postgresql+psycopg://someone:secret@127.0.0.1:{silent_server}/db"
    args = [a.format(url=url, ledger=tmp_path / "q.ledger") for a in command]
    done = qledger(*args, env={CONNECT_TIMEOUT_ENV: "2"})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("qledger: error: cannot reach "), line
    assert "secret" not in line


def test_a_butler_on_a_silent_server_fails_after_the_connect_timeout(
    tmp_path: Path, silent_server: int
) -> None:
    """The library too: a butler on a silent server raises LedgerUnavailableError."""
    code = (
        "import sys\n"
        "from ledger import QuantumBackedButler, LedgerUnavailableError\n"
        "from ledger.testing import make_quantum\n"
        "f = make_quantum(sys.argv[2], n_inputs=1, n_outputs=1)\n"
        "try:\n"
        "    QuantumBackedButler.initialize(f.root, f.quantum, ledger=sys.argv[1])\n"
        "except LedgerUnavailableError as e:\n"
        "    print(type(e).__name__)\n"
    )
    url = f"postgresql+psycopg://someone@127.0.0.1:{silent_server}/db"
    done = subprocess.run(
        [sys.executable, "-c", code, url, str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        timeout=HANG,
        env={**os.environ, CONNECT_TIMEOUT_ENV: "2"},
        check=False,
    )
    assert done.stdout.strip() == "LedgerUnavailableError", done.stderr


# --- a connection the server ends mid-command ------------------------------------------------


def _terminate_backends(url: str) -> int:
    """End every session on the database of ``url`` (from a session on another one)."""
    database = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": database},
                ).all()
            )
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_terminated_session_is_ledger_unavailable(tmp_path: Path, postgres_url: str) -> None:
    """pg_terminate_backend of the reader's session: LedgerUnavailableError, not a driver error."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, postgres_url)
    with Ledger.open(postgres_url) as led:
        assert led.quantum_ids()
        assert _terminate_backends(postgres_url) >= 1
        with pytest.raises(LedgerUnavailableError, match="lost the connection"):
            list(led.events())
