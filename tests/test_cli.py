"""The ``qledger`` command line: every command, its filters, exit codes and one-line errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import structlog
from click.testing import CliRunner, Result
from docs_text import blocks
from docs_text import section as section_text

from ledger import FileDatastore, Head, Ledger, QuantumBackedButler, QuantumProvenanceData
from ledger._logging import get_logger
from ledger.cli import main
from ledger.cli._output import as_on_terminal
from ledger.store import migrate
from ledger.testing import QuantumFixture, make_quantum

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process, as a user would from a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def run_tty(*args: str | Path) -> Result:
    """Invoke qledger in-process, printing as on a terminal (tables aligned, summary on stdout)."""
    with as_on_terminal():
        return run(*args)


def all_commands() -> dict[str, click.Command]:
    """Every qledger command by name (the group imports them lazily)."""
    ctx = click.Context(main)
    found = {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def assert_one_line_error(result: Result, code: int = 2) -> str:
    """The command failed with ``code`` and exactly one ``qledger: error:`` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qledger: error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def fingerprint(path: Path) -> tuple[str, int]:
    """The ledger's bytes (sha256) and the number of bytes in its WAL (0 when none)."""
    wal = Path(f"{path}-wal")
    return hashlib.sha256(path.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0


def run_quantum(fixture: QuantumFixture, ledger: Path | str, *, fail: bool = False) -> None:
    """Run one quantum: check every input, read the present ones, write outputs (maybe fail)."""
    try:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
            found = b.stored_many(fixture.predicted_inputs)
            for ref, present in found.items():
                if present:
                    b.get(ref)
            b.put({"flux": 1.5}, fixture.outputs[0])
            if fail:
                raise RuntimeError("the fit did not converge")
            for ref in fixture.outputs[1:]:
                b.put({"flux": 2.5}, ref)
    except RuntimeError:
        if not fail:
            raise


@dataclass
class Work:
    """Ledgers of a few quanta over one datastore root."""

    root: Path
    ok: Path
    failed: Path
    shared: Path
    fixture: QuantumFixture
    failed_fixture: QuantumFixture

    def qid(self, ledger: Path) -> str:
        with Ledger.open(ledger) as led:
            return str(led.quantum_ids()[0])


@pytest.fixture
def work(tmp_path: Path) -> Work:
    """A succeeded quantum, a failed one (one output written), and a ledger holding two."""
    root = tmp_path / "repo"
    ok = make_quantum(root, visit=1, n_inputs=2, n_missing=1, n_outputs=2)
    bad = make_quantum(root, visit=2, n_inputs=2, n_outputs=2, output_type="calexp2")
    run_quantum(ok, tmp_path / "ok.ledger")
    run_quantum(bad, tmp_path / "failed.ledger", fail=True)
    third = make_quantum(root, visit=3, n_inputs=1, n_outputs=1, output_type="calexp3")
    fourth = make_quantum(root, visit=4, n_inputs=1, n_outputs=2, output_type="calexp4")
    run_quantum(third, tmp_path / "shared.ledger")
    run_quantum(fourth, tmp_path / "shared.ledger", fail=True)
    return Work(root, tmp_path / "ok.ledger", tmp_path / "failed.ledger",
                tmp_path / "shared.ledger", ok, bad)  # fmt: skip


# --- help, version, global options -----------------------------------------------------


def test_every_command_has_a_summary_and_an_example() -> None:
    """Each command's --help has a one-line summary and an Example: line running that command."""
    commands = all_commands()
    assert commands, "no commands registered"
    for name, command in commands.items():
        result = run(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        summary = (command.help or "").strip().splitlines()[0]
        assert summary.endswith("."), (name, summary)
        assert summary in result.output, name
        assert command.get_short_help_str(limit=200), name
        lines = [line.strip() for line in result.output.splitlines()]
        assert "Example:" in lines, f"{name} --help has no Example: line"
        example = lines[lines.index("Example:") + 1]
        assert example.startswith(f"qledger {name}"), (name, example)


def test_group_help_lists_every_command_and_the_exit_codes() -> None:
    """qledger --help names every command and states the exit codes."""
    result = run("--help")
    assert result.exit_code == 0
    for name in all_commands():
        assert name in result.output
    text = " ".join(result.output.split())
    assert "Exit codes: 0 ok, 1 a check found a problem, 2 bad usage or input, 3 a bug." in text


def test_version_is_printed() -> None:
    """qledger --version prints the library version."""
    from ledger import __version__

    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_command_and_option_are_usage_errors(work: Work) -> None:
    """Bad usage (an unknown command, option or choice) exits with code 2."""
    assert run("frobnicate").exit_code == 2
    assert run("show", work.ok, "--bogus").exit_code == 2
    assert run("events", work.ok, "--kind", "teleport").exit_code == 2
    assert run("show").exit_code == 2  # LEDGER... is required


def test_python_dash_m_ledger_runs_the_cli() -> None:
    """python -m ledger is the same command line as qledger."""
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: qledger" in result.stdout


# --- show ---------------------------------------------------------------------------------


def test_show_lists_quanta_with_status_and_counts(work: Work) -> None:
    """show prints each quantum's task, status, attempts and counts, and a summary."""
    result = run_tty("show", work.ok, work.failed)
    assert result.exit_code == 0, result.output
    assert "ok.ledger" in result.output
    assert "failed.ledger" in result.output
    assert "succeeded" in result.output
    assert "failed*" in result.output
    assert "RuntimeError: the fit did not converge" in result.output
    assert "2 quanta: 1 failed, 1 succeeded" in result.output


def test_show_json_gives_the_quantum_status_row(work: Work) -> None:
    """show --json prints one object per quantum with the view's columns."""
    result = run("show", work.shared, "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["succeeded", "failed"]
    assert rows[1]["error_type"] == "RuntimeError"
    assert rows[0]["attempts"] == 1
    assert rows[0]["n_put"] == 1
    assert rows[0]["ledger"] == str(work.shared)
    assert rows[0]["process"] is None


def test_show_tells_a_running_quantum_from_a_dead_one(tmp_path: Path) -> None:
    """An interrupted quantum is 'running' while its lease is fresh, 'dead' once its pid died."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    alive = tmp_path / "alive.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=alive)
    butler.get(fixture.inputs[0])  # still open: no terminal event, its lease renewed
    dead = tmp_path / "dead.ledger"
    code = (
        "import os, sys; from ledger import QuantumBackedButler, Quantum; "
        "q = Quantum.model_validate_json(open(sys.argv[2]).read()); "
        "b = QuantumBackedButler.initialize(sys.argv[1], q, ledger=sys.argv[3]); os._exit(0)"
    )
    (tmp_path / "q.json").write_text(fixture.quantum.model_dump_json())
    subprocess.run(
        [sys.executable, "-c", code, fixture.root, tmp_path / "q.json", dead], check=True
    )
    rows = [json.loads(line) for line in run("show", alive, dead, "--json").stdout.splitlines()]
    states = {Path(r["ledger"]).name: (r["status"], r["state"], r["process"]) for r in rows}
    assert states == {
        "alive.ledger": ("interrupted", "running", "running"),
        "dead.ledger": ("interrupted", "interrupted", "dead"),
    }
    assert "dead (pid" in run("show", dead).output
    shown = run("show", alive).output
    assert "running" in shown
    assert "lease expires" in shown
    butler.close()  # closed without an end: released, no longer running
    (row,) = [json.loads(line) for line in run("show", alive, "--json").stdout.splitlines()]
    assert (row["status"], row["state"], row["process"]) == ("interrupted", "interrupted", "closed")


# --- events -------------------------------------------------------------------------------


def test_events_lists_every_event_in_order(work: Work) -> None:
    """events prints one row per event and a count."""
    result = run("events", work.ok)
    assert result.exit_code == 0
    with Ledger.open(work.ok) as led:
        n = len(list(led.events()))
    assert f"{n} events" in result.output
    assert "quantum_started" in result.output
    assert "quantum_succeeded" in result.output


def test_events_filters_by_kind_outcome_dataset_quantum_and_attempt(work: Work) -> None:
    """Each filter narrows the JSON lines to matching events; prefixes name ids."""

    def listed(*args: str | Path) -> list[dict[str, object]]:
        result = run("events", *args, "--json")
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    puts = listed(work.ok, "--kind", "put")
    assert [e["kind"] for e in puts] == ["put", "put"]
    missing = listed(work.ok, "--outcome", "missing")
    assert [e["dataset_id"] for e in missing] == [str(work.fixture.missing[0].id)]
    target = str(work.fixture.outputs[0].id)
    about = listed(work.ok, "--dataset", target[:8])
    assert {e["dataset_id"] for e in about} == {target}
    two = listed(work.ok, "-k", "get", "-k", "put")
    assert {e["kind"] for e in two} == {"get", "put"}
    qid = work.qid(work.shared)
    one = listed(work.shared, "--quantum", qid[:6])
    assert {e["quantum_id"] for e in one} == {qid}
    assert listed(work.ok, "--attempt", "2") == []
    assert len(listed(work.ok, "--attempt", "1")) == len(listed(work.ok))


def test_events_refuses_an_unknown_or_ambiguous_id(work: Work) -> None:
    """An id that matches nothing, or is not an id at all, is one error line."""
    assert "holds no dataset" in assert_one_line_error(run("events", work.ok, "-d", "ffffffff"))
    assert "is not a quantum id" in assert_one_line_error(run("events", work.ok, "-q", "xyz!"))


# --- replay -------------------------------------------------------------------------------


def test_replay_prints_the_provenance_json(work: Work) -> None:
    """replay prints QuantumProvenanceData JSON equal to Ledger.replay, loadable by direct."""
    result = run("replay", work.failed)
    assert result.exit_code == 0
    loaded = QuantumProvenanceData.direct(**json.loads(result.stdout))
    with Ledger.open(work.failed) as led:
        expected = led.replay()
    assert loaded.actual_outputs == expected.actual_outputs
    assert loaded.actual_inputs == expected.actual_inputs
    assert (
        loaded.model_dump(mode="json")["datastore_records"]
        == json.loads(expected.model_dump_json())["datastore_records"]
    )


def test_replay_until_a_seq_or_a_time_and_one_attempt(work: Work, tmp_path: Path) -> None:
    """--until SEQ and --until TIME replay a prefix; --attempt one attempt; -o writes a file."""
    with Ledger.open(work.ok) as led:
        events = list(led.events())
        first_put = next(e for e in events if e.kind == "put")
        before = led.replay(until=first_put.quantum_seq - 1)
        at_time = led.replay(until=first_put.recorded_at)
    out = tmp_path / "p.json"
    result = run("replay", work.ok, "--until", first_put.quantum_seq - 1, "-o", out)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert QuantumProvenanceData.direct(**json.loads(out.read_text())) == before
    assert before.actual_outputs == set()
    by_time = json.loads(
        run("replay", work.ok, "--until", first_put.recorded_at.isoformat()).stdout
    )
    assert QuantumProvenanceData.direct(**by_time) == at_time
    assert json.loads(run("replay", work.ok, "--attempt", "1").stdout)["actual_outputs"]
    assert run("replay", work.ok, "--until", "yesterday").exit_code == 2


def test_replay_of_a_shared_ledger_needs_a_quantum(work: Work) -> None:
    """Without --quantum, a ledger of several quanta is one error line naming the way out."""
    message = assert_one_line_error(run("replay", work.shared))
    assert "several quanta" in message
    assert "qledger show" in message
    assert run("replay", work.shared, "-q", work.qid(work.shared)).exit_code == 0


# --- head and verify ------------------------------------------------------------------------


def test_head_prints_each_quantums_head(work: Work) -> None:
    """head prints one Head JSON per quantum; --quantum picks one."""
    heads = [Head.model_validate_json(line) for line in run("head", work.shared).stdout.split()]
    assert len(heads) == 2
    assert {h.terminal for h in heads} == {"quantum_succeeded", "quantum_failed"}
    one = run("head", work.shared, "-q", str(heads[0].quantum_id)).stdout.split()
    assert [Head.model_validate_json(line) for line in one] == heads[:1]


def test_verify_ok_and_against_recorded_heads(work: Work, tmp_path: Path) -> None:
    """verify exits 0 on a sound ledger, with heads from a file or inline JSON."""
    result = run("verify", work.shared)
    assert result.exit_code == 0
    assert result.stdout.startswith("ok: ")
    (tmp_path / "heads.jsonl").write_text(run("head", work.shared).stdout)
    assert run("verify", work.shared, "--head", tmp_path / "heads.jsonl").exit_code == 0
    inline = run("head", work.ok).stdout.strip()
    assert run("verify", work.ok, "--head", inline).exit_code == 0


def test_verify_catches_a_cut_off_tail_with_a_head(work: Work) -> None:
    """A head beyond the ledger's last event means a cut-off tail: exit 1, one line."""
    with Ledger.open(work.ok) as led:
        head = led.head()
    later = head.model_copy(update={"quantum_seq": head.quantum_seq + 3, "hash": "0" * 64})
    result = run("verify", work.ok, "--head", later.model_dump_json())
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    assert "cut off" in result.stdout


def test_verify_refuses_a_head_that_is_not_one(work: Work, tmp_path: Path) -> None:
    """A head file that is missing or not Head JSON is bad input: one line, exit 2."""
    assert "cannot read head file" in assert_one_line_error(
        run("verify", work.ok, "--head", tmp_path / "nope.json")
    )
    assert "is not a head" in assert_one_line_error(run("verify", work.ok, "--head", '{"a": 1}'))


def tamper(ledger: Path, sql: str) -> None:
    """Edit a ledger behind the triggers' back (as an attacker with sqlite3 would)."""
    conn = sqlite3.connect(ledger)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute(sql)
    for _, text in triggers:
        conn.execute(text)
    conn.commit()
    conn.close()


def test_verify_names_a_tampered_row_and_exits_1(work: Work) -> None:
    """An edited event makes verify print one line naming its quantum_seq, exit code 1."""
    tamper(work.ok, "UPDATE events SET outcome = 'missing' WHERE quantum_seq = 3")
    result = run("verify", work.ok)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert "quantum_seq 3" in lines[0]
    assert work.qid(work.ok) in lines[0]


def test_verify_datastore_checks_every_artifact(work: Work) -> None:
    """--datastore checks size and checksum of each recorded output; each problem one line."""
    result = run("verify", work.ok, "--datastore", work.root)
    assert result.exit_code == 0, result.output
    assert "2 artifacts match their records" in result.stdout
    datastore = FileDatastore(work.root)
    first, second = (datastore.artifact_path(r) for r in work.fixture.outputs)
    first.write_bytes(first.read_bytes().replace(b"1.5", b"9.5"))
    second.unlink()
    result = run("verify", work.ok, "--datastore", work.root)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert any("sha256" in line for line in lines)
    assert any("missing" in line for line in lines)


# --- recover -----------------------------------------------------------------------------


def write_orphan(work: Work) -> Path:
    """Write the failed quantum's unwritten output with no put recorded: an orphan."""
    ref = work.failed_fixture.outputs[1]
    FileDatastore(work.root).put({"flux": 7.0}, ref)
    return FileDatastore(work.root).artifact_path(ref)


def test_recover_reports_a_failed_quantum_and_exits_1(work: Work) -> None:
    """recover shows how the quantum ended, its outputs and a retry hint; exit 1."""
    result = run("recover", work.failed, "--datastore", work.root)
    assert result.exit_code == 1, result.output
    for text in ("failed", "RuntimeError: the fit did not converge", "outputs ok", "missing",
                 "Traceback", "QuantumBackedButler.resume"):  # fmt: skip
        assert text in result.stdout, text


def test_recover_json_is_the_recovery_report(work: Work) -> None:
    """recover --json prints the RecoveryReport model's JSON."""
    from ledger.recovery import RecoveryReport

    result = run("recover", work.shared, "--datastore", work.root, "--json")
    assert result.exit_code == 1
    report = RecoveryReport.model_validate_json(result.stdout)
    assert [q.status for q in report.quanta] == ["failed"]
    assert not report.ok


def test_recover_of_a_clean_ledger_exits_0(work: Work) -> None:
    """A ledger whose quanta all succeeded has nothing to recover: exit 0."""
    result = run("recover", work.ok, "--datastore", work.root)
    assert result.exit_code == 0
    assert "nothing to recover" in result.stdout


def test_recover_adopts_an_orphan_as_a_new_put(work: Work) -> None:
    """--adopt records a verified orphan as a new put event; old events are unchanged."""
    write_orphan(work)
    before = run("events", work.failed, "--json").stdout
    report = run("recover", work.failed, "--datastore", work.root)
    assert report.exit_code == 1
    assert "orphans" in report.stdout
    assert "--adopt" in report.stdout
    result = run("recover", work.failed, "--datastore", work.root, "--adopt")
    assert result.stdout.startswith("adopted ")
    after = run("events", work.failed, "--json").stdout
    assert after.startswith(before)
    adopted = json.loads(after.splitlines()[-1])
    assert adopted["kind"] == "put"
    assert adopted["detail"]["adopted"] is True
    assert run("verify", work.failed, "--datastore", work.root).exit_code == 0


def test_recover_removes_an_orphan_recording_a_prune(work: Work) -> None:
    """--remove deletes the orphan file after recording a prune event."""
    path = write_orphan(work)
    result = run("recover", work.failed, "--datastore", work.root, "--remove", "--json")
    data = json.loads(result.stdout)
    assert [a["action"] for a in data["actions"]] == ["removed"]
    assert data["quanta"][0]["orphans"] == []
    assert not path.exists()
    last = json.loads(run("events", work.failed, "--json").stdout.splitlines()[-1])
    assert last["kind"] == "prune"
    assert last["detail"]["orphan"] is True


def test_recover_adopt_and_remove_exclude_each_other(work: Work) -> None:
    """--adopt with --remove is bad usage: exit 2, nothing written."""
    before = fingerprint(work.failed)
    result = run("recover", work.failed, "--datastore", work.root, "--adopt", "--remove")
    assert result.exit_code == 2
    assert fingerprint(work.failed) == before


# --- sql ---------------------------------------------------------------------------------


def test_sql_prints_a_table_or_json_with_parameters(work: Work) -> None:
    """sql runs a query with :name parameters and prints a table, or JSON lines."""
    query = "SELECT status, attempts FROM quantum_status WHERE quantum_id = :qid"
    qid = work.qid(work.failed)
    result = run("sql", work.failed, query, "-p", f"qid={qid}")
    assert result.exit_code == 0
    assert result.stdout == "status\tattempts\nfailed\t1\n"  # off a terminal: TSV
    assert result.stderr == "1 row\n"
    rows = run("sql", work.failed, query, "-p", f"qid={qid}", "--json").stdout.splitlines()
    assert [json.loads(r) for r in rows] == [{"status": "failed", "attempts": 1}]
    assert run("sql", work.failed, "PRAGMA table_info(events)").exit_code == 0
    assert run("sql", work.failed, query, "-p", "no-equals").exit_code == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET outcome = 'ok'",
        "DELETE FROM events",
        "DROP TABLE events",
        "DROP TRIGGER IF EXISTS events_no_update",
        "INSERT INTO ledger_info VALUES ('x', 'y')",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "CREATE TABLE t (x)",
        "VACUUM",
        "SELECT 1; DELETE FROM events",
    ],
)
def test_sql_cannot_change_a_ledger(work: Work, statement: str) -> None:
    """A writing statement is refused with one line and exit 2; the ledger's bytes stay."""
    before = fingerprint(work.ok)
    listing = set(os.listdir(work.ok.parent))
    assert_one_line_error(run("sql", work.ok, statement))
    assert fingerprint(work.ok) == before
    # At most SQLite's empty WAL index files appear beside a ledger opened read-only.
    assert set(os.listdir(work.ok.parent)) - listing <= {
        f"{work.ok.name}-shm",
        f"{work.ok.name}-wal",
    }


def test_sql_syntax_error_is_one_line(work: Work) -> None:
    """A query SQLite cannot parse is bad input: one line, exit 2."""
    assert "syntax error" in assert_one_line_error(run("sql", work.ok, "SELEC 1"))


# --- upgrade -------------------------------------------------------------------------------


def downgrade_copy(ledger: Path, target: Path, revision: str) -> Path:
    """A copy of ``ledger`` at an older schema revision."""
    shutil.copy(ledger, target)
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{target}")
    with engine.begin() as conn:
        migrate.downgrade(conn, revision)
    engine.dispose()
    return target


def test_upgrade_brings_an_old_ledger_to_this_schema(work: Work, tmp_path: Path) -> None:
    """An older ledger is refused with the way out; upgrade fixes it, then it is a no-op."""
    revisions = sorted(migrate.known_revisions())
    if len(revisions) < 2:
        pytest.skip("only one schema revision ships; nothing to upgrade from")
    old = downgrade_copy(work.ok, tmp_path / "old.ledger", revisions[0])
    message = assert_one_line_error(run("show", old))
    assert f"qledger upgrade {old}" in message
    result = run("upgrade", old)
    assert result.exit_code == 0, result.output
    assert f"from schema {revisions[0]} to {migrate.HEAD_REVISION}" in result.stdout
    assert run("show", old).exit_code == 0
    assert run("verify", old).exit_code == 0
    assert "nothing to do" in run("upgrade", old).stdout


def test_upgrade_refuses_what_is_not_a_ledger(tmp_path: Path) -> None:
    """upgrade never creates a ledger: a missing file or a foreign database is one error line."""
    missing = tmp_path / "missing.ledger"
    assert "no ledger at" in assert_one_line_error(run("upgrade", missing))
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert "not a ledger" in assert_one_line_error(run("upgrade", other))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello " * 1000)
    assert "not a SQLite database" in assert_one_line_error(run("upgrade", text_file))


# --- export ----------------------------------------------------------------------------------


def test_export_writes_jsonl_and_prov_json(work: Work, tmp_path: Path) -> None:
    """export prints JSON lines by default and writes PROV-JSON with -o."""
    lines = run("export", work.ok).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["record"] == "ledger"
    assert {r["record"] for r in records} == {"ledger", "quantum", "dataset", "event"}
    out = tmp_path / "q.prov.json"
    result = run("export", work.ok, "--format", "prov-json", "-o", out)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert {"activity", "entity", "agent", "used", "wasGeneratedBy"} <= set(
        json.loads(out.read_text())
    )


# --- bad input (SPEC §8) -------------------------------------------------------------------


def _bad_ledgers(work: Work, tmp_path: Path) -> dict[str, Path]:
    not_sqlite = tmp_path / "notes.ledger"
    not_sqlite.write_text("these are not the bytes of a database\n" * 200)
    foreign = tmp_path / "foreign.ledger"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    truncated = tmp_path / "truncated.ledger"
    shutil.copy(work.ok, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    too_new = tmp_path / "new.ledger"
    shutil.copy(work.ok, too_new)
    conn = sqlite3.connect(too_new)
    conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.commit()
    conn.close()
    return {
        "missing": tmp_path / "missing.ledger",
        "not sqlite": not_sqlite,
        "not a ledger": foreign,
        "truncated": truncated,
        "too new": too_new,
    }


_EXPECTED = {
    "missing": "no ledger at",
    "not sqlite": "not a SQLite database",
    "not a ledger": "not a ledger",
    "truncated": "damaged",
    "too new": "newer quantum-ledger",
}

_INSPECTING = [
    ("show",),
    ("events",),
    ("replay",),
    ("head",),
    ("verify",),
    ("export",),
    ("export", "--format", "prov-json"),
    ("sql", "SELECT count(*) FROM events"),
    ("recover", "--datastore", "repo"),
]


@pytest.mark.parametrize("case", list(_EXPECTED))
def test_bad_input_is_one_line_and_exit_2_for_every_command(
    work: Work, tmp_path: Path, case: str
) -> None:
    """Every command meets each §8 bad file with one stderr line naming it, and exit 2."""
    bad = _bad_ledgers(work, tmp_path)[case]
    for command in _INSPECTING:
        args = [command[0], str(bad), *command[1:]]
        message = assert_one_line_error(run(*args))
        assert _EXPECTED[case] in message, (args, message)
        assert bad.name in message, (args, message)
    if case == "missing":
        assert not bad.exists()


def test_malformed_detail_is_reported_not_crashed_on(work: Work) -> None:
    """An appended event whose detail is not JSON: events/replay exit 2, verify exit 1."""
    conn = sqlite3.connect(work.ok)
    qid = work.qid(work.ok)
    last = conn.execute("SELECT MAX(quantum_seq), hash FROM events").fetchone()
    conn.execute(
        "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
        "outcome, detail, recorded_at, prev_hash, hash) VALUES (?, ?, ?, 1, 'put', ?, 'ok', "
        "'{not json', '2030-01-01T00:00:00.000000+00:00', ?, ?)",
        (qid, last[0] + 1, last[0] + 1, str(work.fixture.outputs[0].id), last[1], "f" * 64),
    )
    conn.commit()
    conn.close()
    assert "detail is not a JSON object (it is not valid JSON" in assert_one_line_error(
        run("events", work.ok)
    )
    assert "quantum_seq" in assert_one_line_error(run("replay", work.ok))
    result = run("verify", work.ok)
    assert result.exit_code == 1
    assert "quantum_seq" in result.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """With --debug the library error's traceback is shown too; the exit code stays 2."""
    result = CliRunner().invoke(main, ["--debug", "show", str(tmp_path / "missing.ledger")])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "LedgerNotFoundError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("qledger: error: no ledger at ")


def test_an_unexpected_error_is_one_line_with_exit_3(
    work: Work, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (an exception that is not a LedgerError) is one line, exit 3 (--debug too)."""

    def broken(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("ledger.cli._admin.export_prov", broken)
    message = assert_one_line_error(run("export", work.ok, "-f", "prov-json"), code=3)
    assert "ZeroDivisionError" in message
    assert "--debug" in message
    debugged = run("--debug", "export", work.ok, "-f", "prov-json")
    assert debugged.exit_code == 3
    assert "Traceback" in debugged.stderr


# --- read-only guarantees ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("show",),
        ("show", "--json"),
        ("events",),
        ("events", "--json", "--kind", "put"),
        ("replay",),
        ("head",),
        ("verify",),
        ("verify", "--datastore", "{root}"),
        ("sql", "SELECT * FROM provenance"),
        ("export",),
        ("export", "--format", "prov-json"),
        ("recover", "--datastore", "{root}"),
    ],
)
def test_inspecting_never_changes_a_ledger(work: Work, command: tuple[str, ...]) -> None:
    """Inspecting commands leave the ledger's bytes identical (and write nothing to a WAL)."""
    for ledger in (work.ok, work.failed):
        before = fingerprint(ledger)
        args = [command[0], ledger, *(a.format(root=work.root) for a in command[1:])]
        result = run(*args)
        assert result.exit_code in (0, 1), result.output
        assert fingerprint(ledger) == before, args


# --- logging ---------------------------------------------------------------------------------


def test_logging_goes_to_stderr_at_warning_or_info_with_v(
    work: Work, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Library logs reach stderr: warnings always, info only with -v; the config is put back."""
    from ledger.cli import _inspect

    original = _inspect._status_rows

    def logging_rows(led: Ledger) -> list[dict[str, object]]:
        log = get_logger("ledger.probe")
        log.info("probe_info", ledger=led.target)
        log.warning("probe_warning")
        return original(led)

    monkeypatch.setattr(_inspect, "_status_rows", logging_rows)
    config = structlog.get_config()
    level = logging.getLogger("ledger").level
    handlers = list(logging.getLogger("ledger").handlers)
    quiet = run("show", work.ok)
    assert quiet.exit_code == 0
    assert "probe_warning" in quiet.stderr
    assert "probe_info" not in quiet.stderr
    assert "probe" not in quiet.stdout
    loud = run("-v", "show", work.ok)
    assert "probe_info" in loud.stderr
    assert structlog.get_config() == config
    assert logging.getLogger("ledger").level == level
    assert logging.getLogger("ledger").handlers == handlers


# --- the demo ----------------------------------------------------------------------------------


def test_demo_runs_from_the_command_line(tmp_path: Path) -> None:
    """qledger demo DIR (a real process) builds the pipeline, recovers, retries, exits 0."""
    qledger = Path(sys.executable).with_name("qledger")
    command = [str(qledger)] if qledger.exists() else [sys.executable, "-m", "ledger"]
    where = tmp_path / "demo"
    result = subprocess.run(
        [*command, "demo", str(where)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in (
        "$ qledger show ledgers/*.ledger",
        "18 quanta: 1 failed, 1 interrupted (dead), 16 succeeded",
        "failed: ValueError: PSF fit did not converge",
        "interrupted (dead)",
        "adopted 840d8a27 as quantum_seq 3",
        "attempt 2 succeeded",
        "2 artifacts match their records",
    ):
        assert text in out, text
    assert result.stderr == ""
    ledgers = sorted((where / "ledgers").glob("*.ledger"))
    assert len(ledgers) == 20
    final = [json.loads(line) for line in run("show", *ledgers, "--json").stdout.splitlines()]
    assert {row["status"] for row in final} == {"succeeded"}
    assert sorted(row["attempts"] for row in final)[-2:] == [2, 2]
    for ledger in ledgers:
        assert run("verify", ledger, "--datastore", where / "repo").exit_code == 0


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    """demo DIR with something in DIR is one error line, and touches nothing."""
    (tmp_path / "keep.txt").write_text("mine")
    assert "not an empty folder" in assert_one_line_error(run("demo", tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


@pytest.fixture(autouse=True)
def _no_leaked_cwd() -> Iterator[None]:
    """Every test ends in the directory it started in (the demo changes into its folder)."""
    before = os.getcwd()
    yield
    assert os.getcwd() == before


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_commands_read_a_ledger_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """show, events, replay, verify, export and sql take a PostgreSQL URL; sql stays read-only."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=2)
    run_quantum(fixture, postgres_url, fail=True)
    assert "failed" in run("show", postgres_url).stdout
    assert run("events", postgres_url, "--kind", "put", "--json").stdout.count("\n") == 1
    assert run("replay", postgres_url).exit_code == 0
    assert run("verify", postgres_url, "--datastore", fixture.root).exit_code == 0
    assert run("export", postgres_url, "-f", "prov-json").exit_code == 0
    query = "SELECT status FROM quantum_status WHERE task_label = :task"
    rows = run("sql", postgres_url, query, "-p", "task=task", "--json").stdout.splitlines()
    assert [json.loads(r) for r in rows] == [{"status": "failed"}]
    assert "read-only" in assert_one_line_error(run("sql", postgres_url, "DELETE FROM events"))
    assert run("sql", postgres_url, "SELECT count(*) AS n FROM events").exit_code == 0
    assert run("recover", postgres_url, "--datastore", fixture.root).exit_code == 1


# --- the README's sessions ------------------------------------------------------------------

#: What changes from run to run, replaced before comparing a session with the README.
_VOLATILE = [
    (re.compile(r'File "[^"]+", line \d+'), 'File "<file>", line <n>'),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]?"), "<date>"),
    (re.compile(r"\d\d:\d\d:\d\d(\.\d+)?(\+00:00)?"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)?m?s\b"), "<duration>"),
    (re.compile(r"pid \d+ on [^\s)]+"), "pid <pid> on <host>"),
    (re.compile(r"\b[0-9a-f]{8}\b"), "<id>"),
    (re.compile(r"─+"), "─"),
]


def _normalized(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        if line.strip():
            lines.append(" ".join(line.split()))
    return lines


def _sessions(section: str) -> list[str]:
    """The console blocks of a README section that start from the demo."""
    return [b for b in blocks("console", section_text(section)) if b.startswith("$ qledger demo")]


def _run_session(block: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "qledger").exists():
        pytest.skip("qledger is not installed in this environment")
    # The sessions show what a person sees: a terminal 100 columns wide.
    env = {
        **os.environ,
        "COLUMNS": "100",
        "QLEDGER_TERMINAL": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    cwd = tmp_path
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, expected in steps:
        real = re.sub(r"/tmp/(qledger-[\w-]+)", lambda m: str(tmp_path / m.group(1)), command)
        if real.startswith("cd "):
            cwd = Path(real[3:].strip())
            continue
        result = subprocess.run(
            ["bash", "-c", real],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=120,
        )
        output = result.stdout.replace(str(tmp_path), "/tmp")
        assert _normalized(output) == _normalized("\n".join(expected)), command


@pytest.mark.parametrize("section", ["cli", "recovery"])
def test_readme_sessions_match_real_output(section: str, tmp_path: Path) -> None:
    """A README console session, run for real, prints what the README shows (ids, times aside)."""
    sessions = _sessions(section)
    if section == "cli":
        assert sessions, "the command-line section has no session"
    for block in sessions:
        _run_session(block, tmp_path)
