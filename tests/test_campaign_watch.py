"""qledger watch: the campaign fold, a central ledger followed live, a folder polled, Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
from campaign_fixture import (
    FAILED,
    RETRIED,
    Campaign,
    add_raw_rows,
    folder_counts,
    last_json,
    make_campaign,
    snapshot_counts,
    status_counts,
)
from click.testing import CliRunner, Result

from ledger import Ledger
from ledger.campaign import CampaignState, FolderSource, open_source
from ledger.campaign.watch import QuantumInfo
from ledger.central import ingest
from ledger.cli import main
from ledger.events import EventRow
from ledger.testing import run_pipeline

QLEDGER = [sys.executable, "-m", "ledger"]


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    """The test campaign: two failures (one retried), a hostile interrupted quantum."""
    return make_campaign(tmp_path_factory.mktemp("campaign"))


@pytest.fixture(scope="module")
def central(campaign: Campaign, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The campaign ingested into a central SQLite ledger."""
    target = str(tmp_path_factory.mktemp("central") / "central.sqlite")
    assert ingest(target, campaign.sources).ok
    return target


# --- the fold ---------------------------------------------------------------------------


def _row(seq: int, qid: str, qseq: int, kind: str, *, attempt: int = 1, at: str = "") -> EventRow:
    recorded = at or f"2026-01-01T00:{seq:02d}:00.000000+00:00"
    error = ("ValueError", "bad\nsecond line") if kind == "quantum_failed" else (None, None)
    return EventRow(
        seq, qid, qseq, qseq, attempt, kind, None, "ok", *error, None, recorded, None, "h"
    )


def test_fold_moves_a_retried_quantum_between_statuses() -> None:
    """A quantum that failed, restarted and succeeded counts once: succeeded, retried."""
    state = CampaignState()
    info = {"q1": QuantumInfo("calibrate", '{"visit": 1}')}
    state.apply([_row(1, "q1", 1, "quantum_started"), _row(2, "q1", 2, "quantum_failed")], info)
    assert state.counts() == {"calibrate": {"succeeded": 0, "failed": 1, "interrupted": 0}}
    assert [f.error_line() for f in state.failures] == ["ValueError: bad"]
    state.apply([_row(3, "q1", 3, "quantum_started", attempt=2)], {})
    assert state.counts()["calibrate"] == {"succeeded": 0, "failed": 0, "interrupted": 1}
    state.apply([_row(4, "q1", 4, "quantum_succeeded", attempt=2)], {})
    assert state.counts()["calibrate"] == {"succeeded": 1, "failed": 0, "interrupted": 0}
    assert state.retried() == {"calibrate": 1}
    assert state.snapshot()["failures"][0]["data_id"] == {"visit": 1}


def test_fold_is_idempotent_and_keeps_the_last_lifecycle_event() -> None:
    """Folding events again, or an older one late, does not change the counts."""
    rows = [
        _row(1, "q1", 1, "quantum_started"),
        _row(2, "q1", 2, "quantum_succeeded"),
        _row(3, "q2", 1, "quantum_started"),
    ]
    info = {"q1": QuantumInfo("isr", "{}"), "q2": QuantumInfo("isr", "{}")}
    state = CampaignState()
    state.apply(rows, info)
    state.apply(rows, info)
    state.apply([rows[0]], info)  # a start older than the end that decided
    assert state.counts() == {"isr": {"succeeded": 1, "failed": 0, "interrupted": 1}}
    assert state.retried() == {"isr": 0}


def test_fold_rate_counts_ends_per_minute_of_recorded_time() -> None:
    """Six quanta ending over the 3 minutes since the first start: 2 per minute."""
    state = CampaignState()
    rows = [_row(1, "a", 1, "quantum_started", at="2026-01-01T00:00:00+00:00")]
    for i in range(6):
        rows.append(
            _row(2 + i, f"q{i}", 1, "quantum_succeeded", at=f"2026-01-01T00:0{i // 2 + 1}:00+00:00")
        )
    state.apply(rows, {})
    assert state.rate_per_minute() == pytest.approx(2.0)
    assert state.snapshot()["finished"] == 6


# --- --once ----------------------------------------------------------------------------


def test_watch_once_json_on_central_matches_quantum_status(central: str) -> None:
    """watch CENTRAL --once --json counts, per task and status, what quantum_status says."""
    result = run("watch", central, "--once", "--json")
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)
    assert snapshot_counts(snapshot) == status_counts(central)
    assert snapshot["quanta"] == 16
    assert snapshot["totals"] == {"succeeded": 13, "failed": 2, "interrupted": 1}
    failed = {(f["task_label"], f["data_id"]["visit"], f["data_id"]["detector"]) for f in
              snapshot["failures"] if f["task_label"] == "calibrate"}  # fmt: skip
    assert failed == {RETRIED, FAILED}  # both failures, the retried one too (as it happened)


def test_watch_once_json_on_postgresql_matches_quantum_status(
    campaign: Campaign, postgres_url: str
) -> None:
    """watch follows a PostgreSQL central ledger the same way."""
    assert ingest(postgres_url, campaign.sources).ok
    result = run("watch", postgres_url, "--once", "--json")
    assert result.exit_code == 0, result.output
    assert snapshot_counts(json.loads(result.stdout)) == status_counts(postgres_url)


def test_watch_once_on_a_folder_reads_every_ledger_and_writes_none(campaign: Campaign) -> None:
    """watch DIR --once counts each file's quanta, leaving every file's bytes as they were."""
    # The ledgers' own bytes (a read-only open leaving empty -wal/-shm files beside
    # them is Ledger.open's business, and tested with it).
    before = {p: p.read_bytes() for p in campaign.ledgers.glob("*.ledger")}
    result = run("watch", campaign.ledgers, "--once", "--json")
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)
    assert snapshot_counts(snapshot) == folder_counts(campaign.ledgers)
    assert snapshot["unreadable"] == []
    assert (snapshot["seq"], snapshot["ledgers"]) == (None, len(campaign.sources))  # no global seq
    assert {p: p.read_bytes() for p in campaign.ledgers.glob("*.ledger")} == before


def test_watch_once_table_shows_counts_and_failures(central: str) -> None:
    """Without --json, --once prints the table per task and the last failures' error lines."""
    result = run("watch", central, "--once")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.split()[:5] == ["calibrate", "5", "1", "0", "1"] for line in lines), lines
    assert "_InjectedFailureError: calibrate failed on purpose" in " ".join(result.stdout.split())


def test_watch_a_missing_ledger_is_one_line_exit_2(tmp_path: Path) -> None:
    """A CENTRAL that does not exist is one error line and exit code 2."""
    result = run("watch", tmp_path / "nope.sqlite", "--once")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"qledger: error: no ledger at {tmp_path / 'nope.sqlite'}"
    ]


def test_watch_names_a_malformed_row_in_one_line(central: str, tmp_path: Path) -> None:
    """An edited central ledger (a time no recorder writes) is one error line, exit 2."""
    target = tmp_path / "edited.sqlite"
    shutil.copy(central, target)
    (qid,) = next(iter(Ledger.open(target).rows("SELECT quantum_id FROM quanta LIMIT 1")))
    add_raw_rows(target, [], [(qid, 99, 99, 1, "quantum_started", None, "ok", None, None, None,
                               "yesterday", "0" * 64, "1" * 64)])  # fmt: skip
    result = run("watch", target, "--once", "--json")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qledger: error: {target}: quantum {qid} quantum_seq 99: recorded_at")


def test_folder_source_reads_a_file_once_it_is_a_ledger(tmp_path: Path) -> None:
    """A file that is not a ledger yet is reported, then read once it is one; a copy counts once."""
    made = run_pipeline(tmp_path / "repo", tmp_path / "made", visits=1, detectors=1)
    folder = tmp_path / "ledgers"
    folder.mkdir()
    early = folder / "early.ledger"
    early.write_bytes(b"")
    source, state = open_source(str(folder)), CampaignState()
    source.poll(state)
    assert state.n_quanta == 0
    assert [p.split(":")[0] for p in source.problems()] == [str(early)]
    for path in made.ledgers:
        shutil.copy(path, folder / path.name)
    early.write_bytes(made.ledgers[0].read_bytes())  # the same quantum as isr-v1-d0.ledger
    source.poll(state)
    assert source.problems() == []
    assert state.totals() == {"succeeded": 3, "failed": 0, "interrupted": 0}
    (folder / "early.ledger").unlink()
    source.poll(state)
    assert source.problems() == []


def test_folder_source_reads_only_changed_files_a_few_at_a_time(tmp_path: Path) -> None:
    """A poll opens at most files_per_poll files; a file whose stamp is unchanged is not reread."""
    made = run_pipeline(tmp_path / "repo", tmp_path / "ledgers", visits=2, detectors=1)
    source, state = FolderSource(str(tmp_path / "ledgers"), files_per_poll=2), CampaignState()
    pending = []
    for _ in range(5):
        source.poll(state)
        pending.append(source.pending)
    assert pending == [True, True, False, False, False]  # 5 files, 2 a poll, then none changed
    assert state.totals() == {"succeeded": 5, "failed": 0, "interrupted": 0}
    # Same size and time, other bytes: not reread (it would not even open now).
    victim = made.ledgers[0]
    st = victim.stat()
    victim.write_bytes(b"x" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    source.poll(state)
    assert source.problems() == []
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # now it changed
    source.poll(state)
    assert [p.split(":")[0] for p in source.problems()] == [str(victim)]
    assert state.totals() == {"succeeded": 5, "failed": 0, "interrupted": 0}


# --- live --------------------------------------------------------------------------------


def _start_watch(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*QLEDGER, "watch", *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(stream: IO[str]) -> str:
    line = stream.readline()
    assert line, "watch ended before printing"
    return line


def test_watch_follows_a_central_ledger_while_it_is_ingested(
    campaign: Campaign, tmp_path: Path
) -> None:
    """watch --json, started on a partial central ledger, ends with the final ledger's counts."""
    target = str(tmp_path / "central.sqlite")
    sources = campaign.sources
    assert ingest(target, sources[:3]).ok
    watch = _start_watch(target, "--json", "--interval", "0.1", "--until-idle", "5")
    assert watch.stdout is not None
    first = json.loads(_read_line(watch.stdout))  # watch is running and has read the start
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for start in range(3, len(sources), 4):
                assert ingest(target, sources[start : start + 4]).ok
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    feeder = threading.Thread(target=feed)
    feeder.start()
    rest, stderr = watch.communicate(timeout=120)
    feeder.join()
    assert not errors, errors
    assert watch.returncode == 0, stderr
    final = last_json(rest)
    assert first["quanta"] < final["quanta"] == 16
    assert snapshot_counts(final) == status_counts(target)
    assert final["seq"] == final["events"] == 100  # every event folded once, none skipped


def test_watch_follows_a_folder_while_the_pipeline_runs(tmp_path: Path) -> None:
    """watch DIR in plain-line mode sees quanta appear, and ends with every file's counts."""
    folder = tmp_path / "ledgers"
    folder.mkdir()
    watch = _start_watch(folder, "--interval", "0.1", "--until-idle", "5")
    assert watch.stdout is not None
    assert "0 quanta" in _read_line(watch.stdout)
    run_pipeline(tmp_path / "repo", folder, fail={("calibrate", 1, 0)})
    rest, stderr = watch.communicate(timeout=120)
    assert watch.returncode == 0, stderr
    lines = rest.splitlines()
    assert any(" FAILED calibrate " in line and "attempt 1:" in line for line in lines), lines
    assert lines[-1].startswith("watch ended: nothing new for 5 s; ")
    counts = folder_counts(folder)
    totals = {s: sum(c[s] for c in counts.values()) for s in ("succeeded", "failed")}
    assert f"14 quanta: {totals['succeeded']} succeeded, {totals['failed']} failed, " in lines[-1]
    assert totals == {"succeeded": 13, "failed": 1}


def test_watch_exits_0_on_ctrl_c(central: str) -> None:
    """SIGINT (Ctrl-C) ends a live watch with exit code 0 and a last summary line."""
    watch = _start_watch(central, "--interval", "0.1")
    assert watch.stdout is not None
    _read_line(watch.stdout)
    watch.send_signal(signal.SIGINT)
    rest, stderr = watch.communicate(timeout=60)
    assert watch.returncode == 0, stderr
    assert rest.splitlines()[-1].startswith("watch ended: stopped (Ctrl-C); seq 100: 16 quanta")
    assert "Traceback" not in stderr


def test_watch_on_a_terminal_draws_the_live_table(central: str) -> None:
    """On a TTY, watch draws the table in place (rich Live) and ends cleanly."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    watch = subprocess.Popen(
        [*QLEDGER, "watch", central, "--interval", "0.1", "--until-idle", "0.5"],
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert watch.wait(timeout=60) == 0
    text = output.decode("utf-8", "replace")
    assert "\x1b[" in text  # drawn with terminal control codes, not plain lines
    for shown in ("watching ", "succeeded", "last failures"):
        assert shown in text
    assert "watch ended: nothing new for 0.5 s" in text
