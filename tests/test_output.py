"""What commands print: full values off a terminal, rows that stream, one JSON form, CSV.

Off a terminal (CliRunner, a pipe) tables are tab-separated values with the
summary on stderr; on a terminal (`as_on_terminal`, ``QLEDGER_TERMINAL=1``)
they are aligned. Speed is measured in benchmarks/, never here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import select
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger import Ledger, QuantumBackedButler
from ledger.cli import main
from ledger.cli._output import as_on_terminal
from ledger.testing import make_quantum

QLEDGER = [sys.executable, "-m", "ledger"]
#: A guard against a hang only (a broken stream never prints), not a measure of speed.
HANG_GUARD_S = 120


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process; stdout is not a terminal."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def run_tty(*args: str | Path) -> Result:
    """Invoke qledger in-process, printing as on a terminal."""
    with as_on_terminal():
        return run(*args)


@pytest.fixture(scope="module")
def retried(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger whose quantum failed once (a traceback) and then succeeded."""
    where = tmp_path_factory.mktemp("retried")
    long_value = "x" * 120  # a data ID far wider than 80 columns
    fixture = make_quantum(where / "repo", n_inputs=1, n_outputs=1, task_label=long_value)
    path = where / "q.ledger"
    with (
        pytest.raises(RuntimeError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
    ):
        raise RuntimeError("the fit did not converge")
    with QuantumBackedButler.resume(fixture.root, path) as butler:
        butler.put({"flux": 1.0}, fixture.outputs[0])
    return path


# --- off a terminal: full values, tab-separated ----------------------------------------


def test_piped_sql_keeps_a_value_wider_than_80_columns(retried: Path) -> None:
    """sql | cat prints a 200-character value whole: a header line, then the row."""
    value = "v" * 200
    done = subprocess.run(
        [*QLEDGER, "sql", str(retried), f"SELECT '{value}' AS wide, 1 AS n"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.stdout == f"wide\tn\n{value}\t1\n"
    assert done.stderr == "1 row\n"


def test_piped_show_and_events_print_every_value_in_full(retried: Path) -> None:
    """show and events off a terminal: full ids, task, data ID JSON and times, nothing cut."""
    with Ledger.open(retried) as led:
        qid = str(led.quantum_ids()[0])
        events = list(led.events())
    shown = run("show", retried)
    header, row = shown.stdout.splitlines()
    values = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert values["quantum_id"] == qid
    assert values["task_label"] == "x" * 120
    assert json.loads(values["data_id"]) == {"detector": 0, "instrument": "DemoCam", "visit": 1}
    assert values["status"] == "succeeded"
    assert shown.stderr == "1 quantum: 1 succeeded\n"
    listed = run("events", retried).stdout.splitlines()
    assert listed[0].split("\t")[:3] == ["seq", "quantum_id", "quantum_seq"]
    assert len(listed) == 1 + len(events)
    for line, event in zip(listed[1:], events, strict=True):
        cells = line.split("\t")
        assert cells[1] == qid
        assert cells[7] == event.recorded_at.isoformat(timespec="microseconds")


def test_tsv_escapes_tabs_newlines_and_backslashes(retried: Path) -> None:
    """A value with a tab, a newline and a backslash stays on its line, escaped."""
    query = "SELECT 'a' || char(9) || 'b' || char(10) || 'c\\d' AS v"
    assert run("sql", retried, query).stdout == "v\na\\tb\\nc\\\\d\n"


# --- streaming ---------------------------------------------------------------------------

_ENDLESS = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT i, 'row ' || i AS label FROM n"
)


def _first_lines(args: list[str], count: int) -> tuple[list[str], subprocess.Popen[str]]:
    """Start qledger and read ``count`` lines of its stdout while it still runs."""
    proc = subprocess.Popen(
        [*QLEDGER, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    lines = []
    for _ in range(count):
        ready, _, _ = select.select([proc.stdout], [], [], HANG_GUARD_S)
        assert ready, "no row reached the pipe: the output does not stream"
        lines.append(proc.stdout.readline())
    return lines, proc


@pytest.mark.parametrize("how", [[], ["--json"], ["--csv"]])
def test_rows_reach_a_pipe_while_the_query_still_runs(retried: Path, how: list[str]) -> None:
    """sql on an endless query: the first rows reach the pipe; the command never ends by itself."""
    lines, proc = _first_lines(["sql", str(retried), _ENDLESS, "--timeout", "0", *how], 3)
    try:
        assert proc.poll() is None  # still reading: the rows came before the end
        if how == ["--json"]:
            assert json.loads(lines[0]) == {"i": 1, "label": "row 1"}
        else:
            sep = "," if how else "\t"
            assert lines[:2] == [f"i{sep}label\n", f"1{sep}row 1\n"]
    finally:
        proc.kill()
        proc.wait()


def test_events_reach_a_pipe_before_the_ledger_is_read(tmp_path: Path) -> None:
    """events on a big ledger: the first event arrives while the command is still running."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "big.ledger"
    with QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=path, durability="batch"
    ) as butler:
        for _ in range(20_000):  # ~3 MB of lines: more than a pipe holds
            butler.stored(fixture.predicted_inputs[0])
    lines, proc = _first_lines(["events", str(path)], 2)
    try:
        assert lines[0].startswith("seq\tquantum_id\t")
        assert lines[1].split("\t")[4] == "quantum_started"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


# --- JSON: one form --------------------------------------------------------------------


def _is_stored_time(value: object) -> bool:
    return isinstance(value, str) and value.endswith("+00:00") and "T" in value


def test_json_values_are_objects_and_times_one_format(retried: Path) -> None:
    """show, events and sql --json: data_id, detail, caveats as JSON; times end in +00:00."""
    (status,) = [json.loads(line) for line in run("show", retried, "--json").stdout.splitlines()]
    assert status["data_id"] == {"detector": 0, "instrument": "DemoCam", "visit": 1}
    assert status["caveats"] == []
    assert _is_stored_time(status["started_at"])
    assert _is_stored_time(status["ended_at"])
    events = [json.loads(line) for line in run("events", retried, "--json").stdout.splitlines()]
    failed = next(e for e in events if e["kind"] == "quantum_failed")
    assert isinstance(failed["detail"], dict)
    assert all(_is_stored_time(e["recorded_at"]) for e in events)
    query = (
        "SELECT data_id, detail, recorded_at, task_label FROM events JOIN quanta USING (quantum_id)"
    )
    rows = [json.loads(line) for line in run("sql", retried, query, "--json").stdout.splitlines()]
    assert rows[0]["data_id"] == status["data_id"]
    assert [r["detail"] for r in rows] == [e["detail"] for e in events]
    assert [r["recorded_at"] for r in rows] == [e["recorded_at"] for e in events]
    assert rows[0]["task_label"] == "x" * 120  # text columns stay text


def test_ledger_status_caveats_is_a_list(retried: Path) -> None:
    """Ledger.status() gives a success's caveats as a list, not JSON text."""
    with Ledger.open(retried) as led:
        (row,) = led.status()
    assert row["caveats"] == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(value="\r\n")  # once lost by the test helper, not by qledger
@given(value=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))
def test_csv_and_json_round_trip_any_text(retried: Path, value: str) -> None:
    """sql --csv read by the csv module, and --json, give back a value exactly."""
    query = "SELECT :v AS v, 'a,b' AS comma, 'say \"hi\"' AS quote"
    out = run("sql", retried, query, "-p", f"v={value}", "--csv")
    assert out.exit_code == 0, out.output
    # The bytes: click's Result.stdout turns every "\r\n" into "\n", inside quoted values too.
    rows = list(csv.reader(io.StringIO(out.stdout_bytes.decode(), newline="")))
    assert rows == [["v", "comma", "quote"], [value, "a,b", 'say "hi"']]
    out = run("sql", retried, query, "-p", f"v={value}", "--json")
    (line,) = out.stdout.removesuffix("\n").split("\n")  # JSON lines end at "\n" only
    assert json.loads(line)["v"] == value


def test_csv_and_json_exclude_each_other(retried: Path) -> None:
    """sql --json --csv is a usage error."""
    assert run("sql", retried, "SELECT 1", "--json", "--csv").exit_code == 2


# --- on a terminal ----------------------------------------------------------------------


def test_terminal_detail_prints_a_traceback_as_lines(retried: Path) -> None:
    """events --detail on a terminal: the traceback's lines, not JSON's \\n escapes."""
    out = run_tty("events", retried, "--detail").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert any(line.endswith("Traceback (most recent call last):") for line in lines)
    assert "RuntimeError: the fit did not converge" in lines
    assert "\\n" not in out


def test_terminal_took_is_the_last_attempts(retried: Path) -> None:
    """show's took is the last attempt's time, without the wait before the retry."""
    with Ledger.open(retried) as led:
        (row,) = led.status()
        starts = [e.recorded_at for e in led.events(kind="quantum_started")]
    assert row["attempt_started_at"] == starts[-1].isoformat(timespec="microseconds")
    ms = (datetime.fromisoformat(row["ended_at"]) - starts[-1]).total_seconds() * 1000
    took = run("show", retried).stdout.splitlines()[1].split("\t")[11]
    assert took == f"{ms:.0f}ms" if ms < 1000 else took.endswith("s")
    assert "took: the last attempt's" in run_tty("show", retried).stdout


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["show"], "1 quantum: 1 succeeded"),
        (["sql", "SELECT 1 AS one"], "1 row"),
    ],
)
def test_counts_take_the_right_noun(retried: Path, args: list[str], text: str) -> None:
    """One of a thing is singular: '1 quantum', '1 row'."""
    command, *rest = args
    result = run_tty(command, retried, *rest)
    assert text in result.stdout


# --- --json on every command that prints results ---------------------------------------

#: Commands whose results are JSON already (or a choice of formats that includes it).
_JSON_ALREADY = {"demo": "a story for people", "export": "jsonl", "replay": "JSON",
                 "head": "JSON lines", "lineage": "--format json"}  # fmt: skip


def test_every_command_that_prints_results_has_json() -> None:
    """Each command either prints JSON already or has --json."""
    import click

    from ledger.cli import COMMANDS

    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        options = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert name in _JSON_ALREADY or "--json" in options, name


def test_verify_json_is_one_object_per_ledger(retried: Path, tmp_path: Path) -> None:
    """verify --json: ok, counts and problems per ledger; exit 1 when one does not verify."""
    (one,) = [json.loads(line) for line in run("verify", retried, "--json").stdout.splitlines()]
    assert one["ok"] is True
    assert one["problems"] == []
    with Ledger.open(retried) as led:
        assert one["events"] == sum(1 for _ in led.events())
    copy = tmp_path / "copy.ledger"
    copy.write_bytes(retried.read_bytes())
    bad = '{"quantum_id": "00000000-0000-0000-0000-000000000000", "quantum_seq": 1, "hash": "0"}'
    result = run("verify", retried, copy, "--head", bad, "--json")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["ok"] for line in lines] == [True, True, False]
    assert lines[-1]["ledger"] is None


def test_ingest_and_upgrade_json(retried: Path, tmp_path: Path) -> None:
    """ingest --json prints the report as one object; upgrade --json its revisions."""
    central = tmp_path / "central.sqlite"
    result = run("ingest", central, retried, "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["sources"], report["quanta"]) == (True, 1, 1)
    again = run("ingest", central, retried, "--no-progress").stdout
    assert again.startswith("1 ledger read in ")  # one ledger: singular
    assert "0 added 0 events of 0 quanta and 0 dataset rows, 1 was there already" in again
    upgraded = json.loads(run("upgrade", retried, "--json").stdout)
    assert upgraded["before"] == upgraded["after"]


def test_piped_recover_report_is_not_folded(tmp_path: Path) -> None:
    """recover | cat: a long error message and the heading stay whole, without trailing blanks."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "failed.ledger"
    message = "the fit did not converge " * 8  # ~200 characters
    with (
        pytest.raises(RuntimeError),
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
    ):
        raise RuntimeError(message.strip())
    out = run("recover", path, "--datastore", fixture.root).stdout
    lines = out.splitlines()
    assert any(line.startswith("error ") and line.endswith(message.strip()) for line in lines)
    assert lines[0].startswith("quantum ")
    assert "instrument=DemoCam" in lines[0]
    assert all(line == line.rstrip() for line in lines)


def test_count_is_singular_for_one_and_separates_thousands() -> None:
    """count() is the one way commands say how many: right noun, thousands separated."""
    from ledger.cli._output import count

    assert count(1, "quantum", "quanta") == "1 quantum"
    assert count(0, "quantum", "quanta") == "0 quanta"
    assert count(1_000_000, "event") == "1,000,000 events"
