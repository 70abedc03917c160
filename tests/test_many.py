"""Many ledgers at once: files and folders, each bad ledger one line, a summary, the worst code."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_cli import run_quantum, tamper

from ledger import Ledger
from ledger.central import expand_sources
from ledger.cli import main
from ledger.cli._output import as_on_terminal
from ledger.sources import expand_ledgers
from ledger.testing import make_quantum


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process, as a user would from a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def run_tty(*args: str | Path) -> Result:
    """Invoke qledger in-process, printing as on a terminal (tables aligned, summary on stdout)."""
    with as_on_terminal():
        return run(*args)


@dataclass
class Folder:
    """A folder of ledgers: two good ones (one in a subfolder), one bad, and other files."""

    path: Path
    root: Path
    ok: Path
    failed: Path
    bad: Path
    how: str

    def qid(self, ledger: Path) -> str:
        with Ledger.open(ledger) as led:
            return str(led.quantum_ids()[0])


def _make_bad(how: str, good: Path, bad: Path) -> None:
    if how == "garbage":
        bad.write_text("this is not a ledger\n")
    elif how == "truncated":
        bad.write_bytes(good.read_bytes()[:3000])
    else:
        shutil.copyfile(good, bad)
        tamper(bad, "UPDATE events SET outcome = 'missing' WHERE quantum_seq = 2")


@pytest.fixture(params=["truncated", "garbage", "tampered"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Folder:
    """ledgers/ with ok.ledger, sub/failed.ledger, a bad ledger, a WAL leftover and notes."""
    root = tmp_path / "repo"
    ledgers = tmp_path / "ledgers"
    (ledgers / "sub").mkdir(parents=True)
    ok, failed = ledgers / "ok.ledger", ledgers / "sub" / "failed.ledger"
    run_quantum(make_quantum(root, visit=1, n_inputs=2, n_outputs=2), ok)
    second = make_quantum(root, visit=2, n_inputs=1, n_outputs=2, output_type="calexp2")
    run_quantum(second, failed, fail=True)
    spare = tmp_path / "spare.ledger"
    third = make_quantum(root, visit=3, n_inputs=1, n_outputs=1, output_type="calexp3")
    run_quantum(third, spare)
    bad = ledgers / "bad.ledger"
    _make_bad(request.param, spare, bad)
    (ledgers / "notes.txt").write_text("not a ledger\n")
    (ledgers / "old.ledger-journal").write_bytes(b"")
    for path in (ok, failed, bad):  # readers must neither trip over nor count these
        Path(f"{path}-wal").touch()
        Path(f"{path}-shm").touch()
    return Folder(ledgers, root, ok, failed, bad, request.param)


def _problem_lines(result: Result) -> list[str]:
    return result.stderr.splitlines()


def assert_bad_reported(result: Result, folder: Folder, total: int = 3) -> None:
    """stderr: one line naming the bad ledger, then the summary; exit code 2."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = _problem_lines(result)
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"qledger: {folder.bad}: "), lines[0]
    assert lines[1] == f"qledger: 1 of {total} ledgers could not be read"
    assert "Traceback" not in result.stderr


# --- the expansion ---------------------------------------------------------------------


def test_a_folder_expands_to_its_ledgers_recursively(tmp_path: Path) -> None:
    """Folders give their ledger files, sorted and recursive; companions and others skipped."""
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ("z.ledger", "a.sqlite", "b/deep/c.db", "b/x.sqlite3"):
        (tmp_path / name).touch()
    for name in ("z.ledger-wal", "z.ledger-shm", "a.sqlite-journal", "notes.txt", "b/log"):
        (tmp_path / name).touch()
    found = expand_ledgers([str(tmp_path)])
    names = [str(Path(p).relative_to(tmp_path)) for p in found.ledgers]
    assert names == ["a.sqlite", "z.ledger", "b/x.sqlite3", "b/deep/c.db"]
    assert found.skipped == 2
    assert found.folders == 1
    assert not found.problems


def test_named_files_urls_and_repeats(tmp_path: Path) -> None:
    """A named file is kept whatever its name; a URL as is; the same file twice is read once."""
    (tmp_path / "q.ledger").touch()
    url = "postgresql+psycopg://u@h/db"
    found = expand_ledgers(
        [str(tmp_path / "notes.txt"), url, str(tmp_path / "q.ledger"), str(tmp_path)]
    )
    assert found.ledgers == [str(tmp_path / "notes.txt"), url, str(tmp_path / "q.ledger")]


def test_a_folder_without_ledgers_is_a_problem(tmp_path: Path) -> None:
    """A folder holding no ledger file is named as a problem, with what it holds."""
    (tmp_path / "notes.txt").touch()
    found = expand_ledgers([str(tmp_path)])
    assert not found.ledgers
    ((argument, what),) = found.problems
    assert argument == str(tmp_path)
    assert "no ledger file" in what
    assert "1 other file" in what


def test_ingest_expands_folders_as_every_command(tmp_path: Path) -> None:
    """ingest's expand_sources is the shared expansion (plus the list's lines)."""
    (tmp_path / "sub").mkdir()
    for name in ("a.ledger", "sub/b.ledger", "a.ledger-wal", "c.txt"):
        (tmp_path / name).touch()
    assert expand_sources([str(tmp_path)]) == expand_ledgers([str(tmp_path)]).ledgers


# --- show -------------------------------------------------------------------------------


def test_show_a_folder_shows_the_good_and_names_the_bad(folder: Folder) -> None:
    """show DIR: every readable ledger's quanta; a bad one is one line; summary; worst code."""
    result = run("show", folder.path, "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    ledgers = {Path(row["ledger"]).name for row in rows}
    if folder.how == "tampered":  # readable: show reports status, verify the tampering
        assert result.exit_code == 0, result.output
        assert ledgers == {"ok.ledger", "failed.ledger", "bad.ledger"}
        return
    assert ledgers == {"ok.ledger", "failed.ledger"}
    assert {row["status"] for row in rows} == {"succeeded", "failed"}
    assert_bad_reported(result, folder)


def test_show_table_of_files_goes_on_past_a_bad_one(folder: Folder) -> None:
    """show A BAD B: the table of A and B, then a line for BAD and the summary."""
    if folder.how == "tampered":
        pytest.skip("a tampered ledger is readable")
    result = run_tty("show", folder.ok, folder.bad, folder.failed)
    assert "ok.ledger" in result.stdout
    assert "failed.ledger" in result.stdout
    assert "2 quanta: 1 failed, 1 succeeded" in result.stdout
    assert_bad_reported(result, folder)


def test_a_named_file_that_is_not_a_ledger_is_a_problem_line(folder: Folder) -> None:
    """A named non-ledger file is reported (unlike one found in a folder, which is skipped)."""
    notes = folder.path / "notes.txt"
    result = run_tty("show", folder.ok, notes)
    assert result.exit_code == 2
    assert "ok.ledger" in result.stdout
    lines = _problem_lines(result)
    assert lines[0].startswith(f"qledger: {notes}: "), lines
    assert lines[1] == "qledger: 1 of 2 ledgers could not be read"


def test_an_empty_folder_alone_is_one_error_line(tmp_path: Path) -> None:
    """A folder without ledgers, named alone, is the command's one error line (exit 2)."""
    result = run("show", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"qledger: error: {tmp_path}: folder holds no ledger file "
        "(*.ledger, *.sqlite, *.sqlite3, *.db)"
    ]


# --- verify -----------------------------------------------------------------------------


def test_verify_a_folder(folder: Folder) -> None:
    """verify DIR: tampering is a stdout line and exit 1; unreadable a stderr line and exit 2."""
    result = run("verify", folder.path)
    last = result.stdout.splitlines()[-1]
    if folder.how == "tampered":
        assert result.exit_code == 1, result.output
        (line,) = [x for x in result.stdout.splitlines() if x.startswith(f"{folder.bad}: ")]
        assert "quantum_seq 2" in line
        assert last.startswith("3 ledgers: 2 verify (2 quanta, "), last
        assert "1 does not verify" in last
        assert result.stderr == ""
        return
    assert last.startswith("3 ledgers: 2 verify (2 quanta, "), last
    assert last.endswith("1 could not be read"), last
    assert_bad_reported(result, folder)


def test_verify_a_good_folder_with_heads_and_artifacts(folder: Folder) -> None:
    """Each head goes to the ledger holding its quantum; one ok line sums everything up."""
    heads = folder.path.parent / "heads.jsonl"
    with heads.open("w") as f:
        for ledger in (folder.ok, folder.failed):
            with Ledger.open(ledger) as led:
                f.write(led.head(led.quantum_ids()[0]).model_dump_json() + "\n")
    folder.bad.unlink()
    result = run("verify", folder.path, "--head", heads, "--datastore", folder.root)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 2 ledgers: 2 verify (2 quanta, "), result.stdout
    assert ", 2 heads; " in result.stdout
    assert "artifacts match their records" in result.stdout


def test_verify_a_head_no_ledger_holds_is_a_problem(folder: Folder, tmp_path: Path) -> None:
    """A head for a quantum that none of the ledgers read holds fails the check (exit 1)."""
    other = tmp_path / "other.ledger"
    fourth = make_quantum(folder.root, visit=4, n_inputs=1, n_outputs=1, output_type="calexp4")
    run_quantum(fourth, other)
    with Ledger.open(other) as led:
        head = led.head(led.quantum_ids()[0]).model_dump_json()
    result = run("verify", folder.ok, folder.failed, "--head", head)
    assert result.exit_code == 1, result.output
    assert f"quantum {folder.qid(other)}: a head was given for it, but no ledger" in result.stdout


# --- events, head, replay ----------------------------------------------------------------


def _readable(folder: Folder) -> list[Path]:
    """The ledgers of the folder that can be read (the tampered one can)."""
    return [folder.ok, folder.failed] + ([folder.bad] if folder.how == "tampered" else [])


def _assert_outcome(result: Result, folder: Folder, total: int = 3) -> None:
    if folder.how == "tampered":
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
    else:
        assert_bad_reported(result, folder, total)


def test_events_of_a_folder(folder: Folder) -> None:
    """events DIR --json: each readable ledger's events, each line naming its ledger."""
    result = run("events", folder.path, "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["ledger"] for line in lines} == {str(p) for p in _readable(folder)}
    for path in _readable(folder):
        with Ledger.open(path) as led:
            mine = [line for line in lines if line["ledger"] == str(path)]
            assert [line["seq"] for line in mine] == [e.seq for e in led.events()]
    _assert_outcome(result, folder)


def test_events_table_of_a_folder_has_a_ledger_column(folder: Folder) -> None:
    """events DIR as a table: a ledger column; --quantum picks the ledger that holds it."""
    result = run_tty("events", folder.path, "--quantum", folder.qid(folder.failed)[:8])
    header = result.stdout.splitlines()[0].split()
    assert header[0] == "ledger"
    assert "failed.ledger" in result.stdout
    assert "ok.ledger" not in result.stdout
    _assert_outcome(result, folder)


def test_events_of_a_quantum_no_ledger_holds(folder: Folder) -> None:
    """--quantum that none of the ledgers holds is one error line."""
    result = run("events", folder.ok, folder.failed, "--quantum", "00000000")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "qledger: error: none of the 2 ledgers read holds quantum 00000000"
    ]


def test_head_of_a_folder(folder: Folder) -> None:
    """head DIR: the head of every quantum of every readable ledger, one per line."""
    result = run("head", folder.path)
    found = {json.loads(line)["quantum_id"] for line in result.stdout.splitlines()}
    assert found == {folder.qid(p) for p in _readable(folder)}
    _assert_outcome(result, folder)


def test_replay_a_folder_needs_one_quantum(folder: Folder) -> None:
    """replay DIR: the ledgers hold several quanta, so it asks for --quantum, listing them."""
    result = run("replay", folder.ok, folder.failed)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "give --quantum ID" in line
    assert folder.qid(folder.ok) in line
    assert folder.qid(folder.failed) in line


def test_replay_finds_the_quantum_in_a_folder(folder: Folder, tmp_path: Path) -> None:
    """replay DIR --quantum ID -o FILE: the provenance from the ledger that holds it."""
    out = tmp_path / "p.json"
    result = run("replay", folder.path, "--quantum", folder.qid(folder.failed), "-o", out)
    with Ledger.open(folder.failed) as led:
        expected = led.replay()
    loaded = json.loads(out.read_text())
    assert set(loaded["actual_outputs"]) == {str(i) for i in expected.actual_outputs}
    _assert_outcome(result, folder)


# --- export -------------------------------------------------------------------------------


def test_export_jsonl_of_a_folder(folder: Folder, tmp_path: Path) -> None:
    """export DIR -o F: each readable ledger in turn, starting with its record naming it."""
    out = tmp_path / "all.jsonl"
    result = run("export", folder.path, "-o", out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sources = [r["source"] for r in records if r["record"] == "ledger"]
    assert sorted(sources) == sorted(str(p) for p in _readable(folder))
    quanta = {r["quantum_id"] for r in records if r["record"] == "quantum"}
    assert quanta == {folder.qid(p) for p in _readable(folder)}
    _assert_outcome(result, folder)


def test_export_prov_of_a_folder_is_one_document(folder: Folder) -> None:
    """export DIR --format prov: one PROV-JSON document with every readable ledger's quanta."""
    result = run("export", folder.path, "--format", "prov")
    document = json.loads(result.stdout)
    activities = {key.removeprefix("quantum:") for key in document["activity"]}
    assert activities == {folder.qid(p) for p in _readable(folder)}
    assert len(document["wasAssociatedWith"]) == len(_readable(folder))
    _assert_outcome(result, folder)


# --- recover, sql ------------------------------------------------------------------------


def test_recover_a_folder(folder: Folder) -> None:
    """recover DIR: the failed quantum's report, a summary, exit 1 (2 with an unreadable one)."""
    result = run("recover", folder.path, "--datastore", folder.root)
    assert "failed.ledger" in result.stdout
    assert "RuntimeError: the fit did not converge" in result.stdout
    read = len(_readable(folder))
    assert f"{read} ledgers read: 1 with quanta to recover, {read - 1} with nothing to recover" in (
        result.stdout
    )
    if folder.how == "tampered":
        assert result.exit_code == 1, result.output
    else:
        assert_bad_reported(result, folder)


def test_recover_a_folder_as_json_lines(folder: Folder) -> None:
    """recover DIR --json: one line per ledger with something to recover, naming it."""
    result = run("recover", folder.path, "--datastore", folder.root, "--json")
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    assert report["ledger"] == str(folder.failed)
    assert report["quanta"][0]["status"] == "failed"


def test_sql_refuses_many_ledgers_and_points_to_ingest(folder: Folder) -> None:
    """sql on a folder of several ledgers is one line saying to ingest them first."""
    result = run("sql", folder.path, "SELECT 1")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "qledger sql reads one ledger" in line
    assert "qledger ingest" in line


def test_sql_on_a_folder_of_one_ledger(tmp_path: Path, folder: Folder) -> None:
    """sql on a folder that holds one ledger queries it."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(folder.ok, one / "ok.ledger")
    result = run("sql", one, "SELECT count(*) AS n FROM quanta", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"n": 1}


def test_sql_query_may_start_with_a_comment(folder: Folder) -> None:
    """A query starting with an SQL comment (--) is the query, not an option."""
    query = "-- how many quanta\nSELECT count(*) AS n FROM quanta"
    result = run("sql", folder.ok, query, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"n": 1}
    result = run("sql", folder.ok, "--json", "-- a comment and\nSELECT 2 AS n")
    assert json.loads(result.stdout) == {"n": 2}
    assert run("sql", folder.ok, "--jsn", "SELECT 1").exit_code == 2  # still a bad option


# --- an ambiguous prefix ---------------------------------------------------------------


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path: Path) -> None:
    """An id prefix several datasets share is refused, listing them with type and data ID."""
    ledger = tmp_path / "q.ledger"
    run_quantum(make_quantum(tmp_path / "repo", visit=1, n_inputs=1, n_outputs=1), ledger)
    shared = [f"abcd{n:04x}-0000-5000-8000-000000000000" for n in range(12)]
    conn = sqlite3.connect(ledger)  # rows a recorder could have written, with ids alike
    columns = [row[1] for row in conn.execute("PRAGMA table_info(datasets)")]
    (row,) = conn.execute("SELECT * FROM datasets WHERE role = 'output'").fetchall()
    for one in shared:
        values = [one if c == "dataset_id" else v for c, v in zip(columns, row, strict=True)]
        conn.execute(f"INSERT INTO datasets VALUES ({', '.join('?' * len(values))})", values)
    conn.commit()
    conn.close()
    result = run("events", ledger, "--dataset", "abcd")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "dataset id prefix abcd is ambiguous" in line
    for one in shared[:10]:
        assert f"{one} calexp (" in line
    assert shared[10] not in line
    assert line.endswith(", and more")
    assert "visit=1" in line
