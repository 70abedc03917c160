"""Hostile input and a hostile environment: bad URLs, silent servers, lost connections.

Every failure of the environment is a named `LedgerError`, one line on stderr
and exit code 2 (``--debug`` adds a traceback, never another code).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from docs_text import blocks, section
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, LedgerUnavailableError, LedgerUrlError, QuantumBackedButler
from ledger.cli import main
from ledger.errors import QueryTimeoutError
from ledger.store.connect import CONNECT_TIMEOUT_ENV
from ledger.store.query import read_only_query
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


# --- passwords are never shown ---------------------------------------------------------------

PASSWORD = "s3cret-pa55word"


@pytest.mark.postgres
def test_no_output_shows_the_password_of_a_url(tmp_path: Path, postgres_url: str) -> None:
    """verify, upgrade, show, recover, an unknown id, export files: the password never appears."""
    url = make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    assert PASSWORD in url  # the server trusts local connections: any password is accepted
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    write_quantum(fixture, url)
    jsonl, prov = tmp_path / "q.jsonl", tmp_path / "q.prov.json"
    commands = [
        ["verify", url],
        ["verify", url, "--datastore", str(fixture.root)],
        ["upgrade", url],
        ["show", url],
        ["show", url, "--json"],
        ["events", url, "--quantum", "ffffffff"],  # an unknown id prefix: an error naming the URL
        ["replay", url, "--quantum", "ffffffff"],
        ["recover", url, "--datastore", str(fixture.root)],
        ["recover", url, "--datastore", str(fixture.root), "--json"],
        ["export", url, "-o", str(jsonl)],
        ["export", url, "-f", "prov-json", "-o", str(prov)],
        ["sql", url, "SELECT * FROM no_such_table"],
        ["lineage", url, str(fixture.outputs[0].id), "--format", "json"],
    ]
    shown = []
    for command in commands:
        result = run(*command)
        assert result.exit_code != 3, (command, result.output)
        shown.append(result.output)
    assert url.replace(PASSWORD, "***") in "".join(shown)  # the URL is named, masked
    assert not [out for out in shown if PASSWORD in out]
    assert PASSWORD not in jsonl.read_text()
    assert PASSWORD not in prov.read_text()


@pytest.mark.parametrize(
    "target",
    [
        f"postgresql+psycopg://someone:{PASSWORD}@127.0.0.1:5432/db",
        f"postgresql+psycopg://someone:{PASSWORD}@127.0.0.1:port/db",  # does not parse
        f"postgresql+psycopg://someone@127.0.0.1/db?password={PASSWORD}",
        f"foo://someone:{PASSWORD}@host/db",
    ],
)
def test_display_target_hides_every_spelling_of_a_password(target: str) -> None:
    """A password in the authority or the query string, parseable or not, is masked."""
    from ledger.store.connect import display_target

    shown = display_target(target)
    assert PASSWORD not in shown
    assert "***" in shown


# --- qledger sql on SQLite ----------------------------------------------------------------


def fingerprint(path: Path) -> str:
    """The bytes of a ledger and of its WAL, as one digest."""
    digest = hashlib.sha256(path.read_bytes())
    wal = Path(f"{path}-wal")
    if wal.exists():
        digest.update(wal.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Path:
    """A ledger file holding one quantum that read and wrote."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    write_quantum(fixture, tmp_path / "q.ledger")
    return tmp_path / "q.ledger"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT load_extension('/tmp/evil')",
        "SELECT randomblob(1000000000)",
        "SELECT zeroblob(1000000000)",
        "SELECT length(zeroblob(1000000000))",
        "SELECT fts3_tokenizer('simple')",
        "SELECT sqlite_log(1, 'x')",
        "SELECT rtreenode(2, x'00')",
        "SELECT last_insert_rowid()",
        "SELECT count(*) FROM events WHERE kind = 'get' AND randomblob(8) IS NOT NULL",
        "SELECT * FROM quantum_status WHERE status IN (SELECT quote(zeroblob(10)))",
    ],
)
def test_sql_on_sqlite_refuses_functions_outside_the_safe_list(
    sqlite_ledger: Path, query: str
) -> None:
    """A function not on the safe list (load_extension, randomblob...) is refused; bytes stay."""
    before = fingerprint(sqlite_ledger)
    line = assert_one_line_error(run("sql", sqlite_ledger, query))
    assert "not authorized to use function" in line
    assert fingerprint(sqlite_ledger) == before


def test_sql_on_sqlite_still_answers_ordinary_queries(sqlite_ledger: Path) -> None:
    """The views, JSON, date, aggregate and window functions and read pragmas still work."""
    queries = [
        "SELECT status, count(*) FROM quantum_status GROUP BY status",
        "SELECT * FROM provenance WHERE actual_input = 1",
        "SELECT kind, detail ->> '$.host', json_extract(detail, '$.pid') FROM events",
        "SELECT strftime('%Y', recorded_at), date(recorded_at), julianday(recorded_at) FROM events",
        "SELECT kind, row_number() OVER (ORDER BY seq), lag(kind) OVER () FROM events",
        "SELECT upper(kind), substr(hash, 1, 8), coalesce(dataset_id, '-'), iif(1, 'a', 'b') "
        "FROM events",
        "SELECT group_concat(kind, ','), max(seq), total(attempt), round(avg(seq), 2) FROM events",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) "
        "SELECT sum(x) FROM n",
        "PRAGMA table_info(events)",
        "SELECT name FROM sqlite_master WHERE type = 'view'",
    ]
    for query in queries:
        result = run("sql", sqlite_ledger, query, "--json")
        assert result.exit_code == 0, (query, result.output)
        assert result.stdout.strip(), query


def test_sql_on_sqlite_stops_at_its_timeout(sqlite_ledger: Path) -> None:
    """A query that never ends stops at --timeout: one line, exit 2, QueryTimeoutError."""
    endless = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    )
    before = fingerprint(sqlite_ledger)
    line = assert_one_line_error(run("sql", sqlite_ledger, endless, "--timeout", "0.5"))
    assert "ran longer than 0.5 s" in line
    assert fingerprint(sqlite_ledger) == before
    with pytest.raises(QueryTimeoutError):
        read_only_query(sqlite_ledger, endless, timeout=0.2)


#: One row at once, then a count that never ends (the driver fetches a row ahead).
_STARTS_THEN_RUNS_FOREVER = (
    "SELECT 'started' AS x UNION ALL SELECT 'started' UNION ALL SELECT count(*) FROM "
    "(WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n)"
)


def test_ctrl_c_stops_sql_on_sqlite(sqlite_ledger: Path) -> None:
    """SIGINT mid-query stops qledger sql: "qledger: interrupted", exit 130."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger", "sql", sqlite_ledger, _STARTS_THEN_RUNS_FOREVER, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline()) == {"x": "started"}  # now inside the query
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=HANG)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip() == "qledger: interrupted"


# --- qledger sql on PostgreSQL --------------------------------------------------------------


def database_state(url: str) -> dict[str, Any]:
    """What a hostile query could change: triggers, tables, rows, settings, large objects."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in conn.execute(text(sql))]

            return {
                "triggers": rows(
                    "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
                    "WHERE NOT tgisinternal ORDER BY 1, 2"
                ),
                "relations": rows(
                    "SELECT relname, relkind FROM pg_class "
                    "WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
                ),
                "events": rows("SELECT seq, quantum_seq, outcome, hash FROM events ORDER BY seq"),
                "quanta": rows("SELECT * FROM quanta ORDER BY quantum_id"),
                "datasets": rows("SELECT quantum_id, dataset_id, role FROM datasets ORDER BY 1, 2"),
                "info": rows("SELECT key, value FROM ledger_info ORDER BY key"),
                "large objects": rows("SELECT count(*) FROM pg_largeobject_metadata"),
                "database settings": rows(
                    "SELECT setconfig FROM pg_db_role_setting ORDER BY setdatabase, setrole"
                ),
                "prepared": rows("SELECT count(*) FROM pg_prepared_xacts"),
            }
    finally:
        engine.dispose()


#: Every escape tried on qledger sql over a superuser connection ({marker}: a file path).
POSTGRES_ESCAPES = [
    "COMMIT; DROP TRIGGER events_append_only ON events",
    "COMMIT; DELETE FROM events",
    "COMMIT; UPDATE events SET outcome = 'ok'",
    "COMMIT; CREATE TABLE pwn (x int)",
    "ROLLBACK; DELETE FROM events",
    "END; DELETE FROM events",
    "BEGIN; DELETE FROM events; COMMIT",
    "SELECT 1; DELETE FROM events",
    "/* ; */ COMMIT; -- \nDELETE FROM events",
    "SELECT $$;$$; DELETE FROM events",
    "SELECT 'a'';'; DELETE FROM events",
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "RESET ALL",
    "SET ROLE postgres",
    "RESET ROLE",
    "SET SESSION AUTHORIZATION DEFAULT",
    "DISCARD ALL",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_catalog.set_config('transaction_read_only', 'off', true)",
    "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "COMMIT; COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "COPY events TO '{marker}'",
    "COPY events FROM '/etc/hostname'",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT pg_catalog.pg_read_file('/etc/hostname')",
    "SELECT pg_read_binary_file('/etc/hostname')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_export(1, '{marker}')",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT pg_sleep(600)",
    "SELECT pg_advisory_lock(1)",
    "SELECT nextval('events_seq_seq')",
    "SELECT setval('events_seq_seq', 1)",
    "SELECT query_to_xml('DELETE FROM events RETURNING 1', true, false, '')",
    "SELECT dblink_exec('dbname=postgres', 'DELETE FROM events')",
    "SELECT pg_notify('ch', 'x')",
    "SELECT txid_current()",
    "SELECT current_setting('data_directory')",
    "DO $$BEGIN DELETE FROM events; END$$",
    "CALL pwn()",
    "WITH x AS (DELETE FROM events RETURNING 1) SELECT count(*) FROM x",
    "WITH x AS (UPDATE events SET outcome = 'ok' RETURNING 1) SELECT count(*) FROM x",
    "WITH x AS (INSERT INTO ledger_info VALUES ('x', 'y') RETURNING 1) SELECT 1",
    "SELECT * FROM (WITH x AS (DELETE FROM events RETURNING 1) SELECT 1) AS s",
    "SELECT * INTO pwn FROM events",
    "CREATE TABLE pwn AS SELECT * FROM events",
    "SELECT * FROM events FOR UPDATE",
    "SELECT * FROM events FOR SHARE",
    "LOCK TABLE events",
    "LISTEN ch",
    "NOTIFY ch",
    "UNLISTEN *",
    "PREPARE p AS DELETE FROM events",
    "EXECUTE p",
    "DEALLOCATE ALL",
    "DECLARE c CURSOR FOR SELECT 1",
    "EXPLAIN ANALYZE DELETE FROM events",
    "EXPLAIN ANALYZE WITH x AS (DELETE FROM events RETURNING 1) SELECT * FROM x",
    "EXPLAIN ANALYZE SELECT pg_read_file('/etc/hostname')",
    "DELETE FROM events",
    "UPDATE events SET outcome = 'ok'",
    "INSERT INTO ledger_info VALUES ('x', 'y')",
    "MERGE INTO ledger_info USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
    "DROP TABLE events",
    "DROP TRIGGER events_append_only ON events",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "TRUNCATE events",
    "CREATE TABLE pwn (x int)",
    "CREATE FUNCTION pwn() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "GRANT ALL ON events TO PUBLIC",
    "ALTER DATABASE CURRENT SET default_transaction_read_only = off",
    "ALTER SYSTEM SET log_statement = 'none'",
    "VACUUM events",
    "ANALYZE events",
    "CHECKPOINT",
    "REINDEX TABLE events",
    "CLUSTER events",
    "REFRESH MATERIALIZED VIEW quantum_status",
    "COMMENT ON TABLE events IS 'x'",
    "SECURITY LABEL ON TABLE events IS 'x'",
    "LOAD 'auto_explain'",
    "PREPARE TRANSACTION 'x'",
    "SELECT * FROM pg_authid",
    "SELECT rolpassword FROM pg_catalog.pg_authid",
    "SELECT * FROM pg_stat_activity",
    "SELECT * FROM pg_catalog.pg_file_settings",
    "TABLE pg_shadow",
    "SELECT 1 OPERATOR(public.=) 1",
]


@pytest.mark.postgres
def test_sql_on_postgresql_refuses_every_escape(tmp_path: Path, postgres_url: str) -> None:
    """COMMIT;, SET, COPY TO PROGRAM, pg_read_file, DO, CTE DELETE...: refused, nothing changes."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    write_quantum(fixture, postgres_url)
    marker = tmp_path / "escaped"
    before = database_state(postgres_url)
    let_through = []
    for template in POSTGRES_ESCAPES:
        query = template.replace("{marker}", str(marker))
        result = run("sql", postgres_url, query)
        lines = result.stderr.splitlines()
        if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("qledger: error:"):
            let_through.append((query, result.exit_code, result.output))
    assert let_through == []
    assert not marker.exists()
    assert database_state(postgres_url) == before


@pytest.mark.postgres
def test_sql_on_postgresql_binds_parameters_as_literals(tmp_path: Path, postgres_url: str) -> None:
    """A -p value is one quoted literal: an injection attempt in it only matches no row."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    write_quantum(fixture, postgres_url)
    before = database_state(postgres_url)
    query = "SELECT count(*) AS n FROM events WHERE kind = :kind AND ':kind' <> :kind"
    for value, count in [
        ("put", 2),
        ("x'; DELETE FROM events; --", 0),
        ("x\\'; COMMIT; DELETE FROM events; --", 0),
        ("$$; DELETE FROM events; $$", 0),
        ("é'€", 0),
    ]:
        result = run("sql", postgres_url, query, "-p", f"kind={value}", "--json")
        assert result.exit_code == 0, (value, result.output)
        assert json.loads(result.stdout) == {"n": count}, value
    assert database_state(postgres_url) == before


@pytest.mark.postgres
def test_sql_on_postgresql_still_answers_ordinary_queries(
    tmp_path: Path, postgres_url: str
) -> None:
    """Views, CTEs, VALUES, TABLE, EXPLAIN, SHOW, JSON, window and date functions still work."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    write_quantum(fixture, postgres_url)
    queries = [
        "SELECT status, count(*) FROM quantum_status GROUP BY status",
        "SELECT * FROM provenance WHERE actual_input = 1",
        "TABLE quantum_status",
        "VALUES (1, 'a'), (2, 'b')",
        "WITH p AS (SELECT kind FROM events) SELECT kind, count(*) FROM p GROUP BY kind",
        "SELECT kind, detail::json ->> 'host', lower(outcome), length(hash) FROM events",
        "SELECT kind, row_number() OVER (ORDER BY seq), lag(kind) OVER (ORDER BY seq) FROM events",
        "SELECT date_trunc('day', recorded_at::timestamptz), "
        "extract(year FROM recorded_at::timestamptz) FROM events",
        "SELECT string_agg(kind, ',' ORDER BY seq), max(seq), coalesce(min(dataset_id), '-') "
        "FROM events",
        "SELECT x FROM generate_series(1, 3) AS x",
        "SELECT e.seq FROM events e JOIN quanta q USING (quantum_id) WHERE e.kind = 'put'",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        "EXPLAIN SELECT * FROM events WHERE seq > 1",
        "SHOW server_version",
        "SELECT current_user, current_database(), now() > '2000-01-01'",
        "SELECT substring(hash FROM 1 FOR 8), trim(both ' ' FROM kind) FROM events",
    ]
    for query in queries:
        result = run("sql", postgres_url, query, "--json")
        assert result.exit_code == 0, (query, result.output)
        assert result.stdout.strip(), query


@pytest.mark.postgres
def test_sql_on_postgresql_stops_at_its_timeout(tmp_path: Path, postgres_url: str) -> None:
    """A query that runs too long is cancelled by the server's statement_timeout: exit 2."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, postgres_url)
    slow = "SELECT count(*) FROM generate_series(1, 1000000000000) AS x"
    line = assert_one_line_error(run("sql", postgres_url, slow, "--timeout", "0.5"))
    assert "ran longer than 0.5 s" in line
    with pytest.raises(QueryTimeoutError):
        read_only_query(postgres_url, slow, timeout=0.2)


_SLOW_MARKER = "slow_query_marker"


def _wait_for_active_query(url: str, process: subprocess.Popen[str]) -> int:
    """The pid of the backend running the marked query, once it runs."""
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for _ in range(HANG * 10):
                pid = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = :d AND state = 'active' "
                        "AND query LIKE :q AND pid <> pg_backend_pid()"
                    ),
                    {"d": make_url(url).database, "q": f"%{_SLOW_MARKER}%"},
                ).scalar()
                if pid is not None:
                    return int(pid)
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
    finally:
        admin.dispose()
    raise AssertionError("the query never started")


def _backend_alive(url: str, pid: int) -> bool:
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = :p AND state = 'active'"
                    ),
                    {"p": pid},
                ).scalar()
            )
    finally:
        admin.dispose()


def _slow_sql(url: str) -> subprocess.Popen[str]:
    query = f"SELECT count(*) FROM generate_series(1, 1000000000000) AS {_SLOW_MARKER}"
    return subprocess.Popen(
        [sys.executable, "-m", "ledger", "sql", url, query],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.postgres
def test_ctrl_c_cancels_sql_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """SIGINT mid-query cancels it on the server too: "qledger: interrupted", exit 130."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, postgres_url)
    process = _slow_sql(postgres_url)
    try:
        backend = _wait_for_active_query(postgres_url, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=HANG)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip() == "qledger: interrupted"
    assert not _backend_alive(postgres_url, backend)


@pytest.mark.postgres
def test_a_session_terminated_mid_query_is_exit_2(tmp_path: Path, postgres_url: str) -> None:
    """pg_terminate_backend of qledger sql's session: one line, exit 2, not a bug."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, postgres_url)
    process = _slow_sql(postgres_url)
    try:
        _wait_for_active_query(postgres_url, process)
        assert _terminate_backends(postgres_url) >= 1
        _, err = process.communicate(timeout=HANG)
    finally:
        process.kill()
    assert process.returncode == 2, err
    (line,) = err.splitlines()
    assert line.startswith("qledger: error: lost the connection to "), line


# --- the documented read-only role -------------------------------------------------------------


def _security_sql() -> str:
    """The PostgreSQL block of the documentation's security section (the threat model)."""
    (block,) = blocks("postgresql", section("security"))
    return block


@pytest.mark.postgres
def test_the_documented_read_only_role_reads_and_cannot_write(
    tmp_path: Path, postgres_url: str
) -> None:
    """The documented role runs qledger sql and show, directly or via --role, and cannot write."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    write_quantum(fixture, postgres_url)
    database = make_url(postgres_url).database
    role = f"reader_{database}"
    script = _security_sql().replace("ledger_reader", role).replace("ledgers", f'"{database}"')
    owner = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as conn:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(text(statement))
        reader = make_url(postgres_url).set(username=role, password=PASSWORD)
        reader_url = reader.render_as_string(hide_password=False)
        count = "SELECT count(*) AS n, current_user AS who FROM events"
        result = run("sql", reader_url, count, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["who"] == role
        assert run("show", reader_url).exit_code == 0
        assert run("verify", reader_url).exit_code == 0
        as_role = run("sql", postgres_url, count, "--role", role, "--json")
        assert as_role.exit_code == 0, as_role.output
        assert json.loads(as_role.stdout)["who"] == role
        # Past every check of qledger's, the role itself cannot write.
        direct = create_engine(reader)
        try:
            with direct.connect() as conn:
                with pytest.raises(DBAPIError, match="read-only transaction"):
                    conn.execute(text("CREATE TABLE pwn (x int)"))
                conn.rollback()
                conn.execute(text("SET default_transaction_read_only = off"))
                conn.commit()
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text("DELETE FROM events"))
        finally:
            direct.dispose()
    finally:
        with owner.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        owner.dispose()
