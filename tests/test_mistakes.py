"""Ordinary mistakes that would destroy data, and a failing environment: refused, named, exit 2.

A forgotten ingest target, an output path that names a ledger, a full disk, a
huge number, a hostile head file, a reader of stdout that leaves early, a
killed ingest whose readers must not linger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, QuantumBackedButler
from ledger.central import ingest
from ledger.cli import main
from ledger.errors import (
    InvalidHeadError,
    LedgerDiskFullError,
    NotACentralLedgerError,
    NotALedgerError,
    OutOfRangeError,
)
from ledger.store.verify import parse_heads
from ledger.testing import PipelineRun, make_quantum, run_pipeline

QLEDGER = [sys.executable, "-m", "ledger"]


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process, as a user would from a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def one_line_error(result: Result, code: int = 2) -> str:
    """The command failed with ``code`` and exactly one ``qledger: error:`` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qledger: error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def fingerprint(path: Path) -> tuple[str, int]:
    """The file's sha256, and the size of the WAL beside it (0 when none)."""
    wal = Path(f"{path}-wal")
    return hashlib.sha256(path.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """isr -> calibrate -> coadd: one ledger file per quantum."""
    where = tmp_path_factory.mktemp("pipeline")
    return run_pipeline(where / "repo", where / "ledgers")


@pytest.fixture
def two(pipeline: PipelineRun, tmp_path: Path) -> tuple[Path, Path]:
    """Copies of two per-quantum ledgers (a.ledger, b.ledger) to make mistakes with."""
    a, b = tmp_path / "a.ledger", tmp_path / "b.ledger"
    shutil.copy(pipeline.ledgers[0], a)
    shutil.copy(pipeline.ledgers[1], b)
    return a, b


@pytest.fixture
def central(pipeline: PipelineRun, tmp_path: Path) -> Path:
    """A central ledger made by ingest from the pipeline's ledgers."""
    target = tmp_path / "central.sqlite"
    assert ingest(target, [str(p) for p in pipeline.ledgers]).ok
    return target


# --- 4. the ingest target forgotten ----------------------------------------------------------


def test_ingest_refuses_a_butler_ledger_as_target_and_leaves_it_untouched(
    two: tuple[Path, Path],
) -> None:
    """`qledger ingest a.ledger b.ledger`: exit 2, one line naming a.ledger and the way out."""
    a, b = two
    before = fingerprint(a), fingerprint(b)
    result = subprocess.run(
        [*QLEDGER, "ingest", "--no-progress", str(a), str(b)], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(a) in lines[0]
    assert "--into-existing" in lines[0]
    assert "qledger ingest" in lines[0]
    assert (fingerprint(a), fingerprint(b)) == before
    with Ledger.open(a) as led:
        assert len(led.quantum_ids()) == 1
        assert led.verify().ok


def test_ingest_api_refuses_a_butler_ledger_unless_asked(two: tuple[Path, Path]) -> None:
    """ingest() raises NotACentralLedgerError; into_existing=True merges as asked."""
    a, b = two
    with pytest.raises(NotACentralLedgerError, match="into_existing"):
        ingest(a, [str(b)])
    report = ingest(a, [str(b)], into_existing=True)
    assert report.ok
    assert report.ingested == 1
    with Ledger.open(a) as led:
        assert len(led.quantum_ids()) == 2


def test_into_existing_on_the_command_line_merges(two: tuple[Path, Path]) -> None:
    """--into-existing merges into a butler's ledger, and it verifies after."""
    a, b = two
    result = run("ingest", "--no-progress", "--into-existing", a, b)
    assert result.exit_code == 0, result.output
    with Ledger.open(a) as led:
        assert len(led.quantum_ids()) == 2
        assert led.verify().ok


def test_a_target_ingest_creates_is_marked_central_and_accepted_again(
    two: tuple[Path, Path], tmp_path: Path
) -> None:
    """A new target gets ledger_info role=central; the next ingest into it goes through."""
    a, b = two
    target = tmp_path / "new.sqlite"
    assert ingest(target, [str(a)]).ok
    with Ledger.open(target) as led:
        assert dict(led.rows("SELECT key, value FROM ledger_info"))["role"] == "central"
    assert ingest(target, [str(b)]).ingested == 1


def test_a_central_ledger_from_before_the_mark_is_accepted(
    two: tuple[Path, Path], tmp_path: Path
) -> None:
    """A target with ingests rows but no role row (made by an older ingest) is still central."""
    a, b = two
    target = tmp_path / "old.sqlite"
    assert ingest(target, [str(a)]).ok
    conn = sqlite3.connect(target)
    with conn:
        conn.execute("DELETE FROM ledger_info WHERE key = 'role'")
    conn.close()
    assert ingest(target, [str(b)]).ingested == 1


def test_an_empty_ledger_is_accepted_as_target(two: tuple[Path, Path], tmp_path: Path) -> None:
    """A ledger without quanta (nothing to spoil) may be filled by ingest."""
    from ledger.store.log import create_ledger_file

    a, _ = two
    target = tmp_path / "empty.sqlite"
    create_ledger_file(str(target))
    assert ingest(target, [str(a)]).ingested == 1


def test_a_server_database_a_butler_wrote_into_is_accepted(
    two: tuple[Path, Path], postgres_url: str, tmp_path: Path
) -> None:
    """Butlers may record straight into PostgreSQL: ingest into that database goes through."""
    _, b = two
    fixture = make_quantum(tmp_path / "repo", visit=9, n_inputs=1, n_outputs=1)
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=postgres_url) as q:
        q.stored_many(fixture.predicted_inputs)
    assert ingest(postgres_url, [str(b)]).ingested == 1


# --- 5. an output that names a ledger or an input -------------------------------------------


def _dataset(central: Path) -> str:
    with Ledger.open(central) as led:
        return str(next(iter(led.rows("SELECT dataset_id FROM datasets LIMIT 1")))[0])


@pytest.mark.parametrize(
    "command",
    [
        ("export", "{in}", "-o", "{out}"),
        ("export", "{in}", "--format", "prov-json", "--output", "{out}"),
        ("replay", "{in}", "-o", "{out}"),
        ("lineage", "{in}", "{dataset}", "-o", "{out}"),
        ("report", "{in}", "-o", "{out}"),
    ],
    ids=["export", "export-prov", "replay", "lineage", "report"],
)
@pytest.mark.parametrize("name", ["same", "symlink", "hardlink", "wal", "other-ledger"])
def test_an_output_over_a_ledger_or_an_input_is_refused(
    central: Path, pipeline: PipelineRun, tmp_path: Path, command: tuple[str, ...], name: str
) -> None:
    """-o naming the input (any name for it, or its WAL) or another ledger: exit 2, bytes kept."""
    source = tmp_path / "q.sqlite"
    if command[0] in ("lineage", "report"):
        shutil.copy(central, source)
    else:
        shutil.copy(pipeline.ledgers[0], source)
    out = source
    if name == "symlink":
        out = tmp_path / "link.json"
        out.symlink_to(source)
    elif name == "hardlink":
        out = tmp_path / "hard.json"
        os.link(source, out)
    elif name == "wal":
        conn = sqlite3.connect(source)  # keep a WAL beside the ledger, as a live writer does
        conn.execute("PRAGMA journal_mode = WAL")  # a writer turns it on (finished: off)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        with conn:
            conn.execute("INSERT INTO ledger_info (key, value) VALUES ('note', 'x')")
        out = Path(f"{source}-wal")
        assert out.stat().st_size > 0
    elif name == "other-ledger":
        out = tmp_path / "other.ledger"
        shutil.copy(pipeline.ledgers[1], out)
    guarded = [source, out]
    before = [fingerprint(p) for p in guarded]
    args = [a.format(**{"in": source, "out": out, "dataset": _dataset(central)}) for a in command]
    line = one_line_error(run(*args))
    assert str(out) in line
    assert [fingerprint(p) for p in guarded] == before
    if name == "wal":
        conn.close()


def test_an_output_that_is_a_directory_is_refused(pipeline: PipelineRun, tmp_path: Path) -> None:
    """replay -o DIR: exit 2 with one line, the directory untouched."""
    line = one_line_error(run("replay", pipeline.ledgers[0], "-o", tmp_path))
    assert "directory" in line


def test_an_existing_json_output_is_replaced(pipeline: PipelineRun, tmp_path: Path) -> None:
    """An output that is neither a ledger nor an input is written over, as before."""
    out = tmp_path / "p.json"
    out.write_text("old")
    assert run("replay", pipeline.ledgers[0], "-o", out).exit_code == 0
    assert json.loads(out.read_text())["predicted_inputs"]


def test_an_output_that_is_a_fifo_is_written_into_not_replaced(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """-o FIFO (or /dev/null): the data goes into it; renaming over it would replace it."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    try:
        result = run("export", pipeline.ledgers[0], "-o", fifo)
    finally:
        if reader.is_alive():  # unblock the reader if nothing opened the FIFO for writing
            with contextlib.suppress(OSError), open(fifo, "wb"):
                pass
        reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got
    assert got[0].startswith(b'{"record":"ledger"')


# --- 17. environment failures and hostile arguments: named, exit 2 ---------------------------


def test_a_folder_as_ingest_target_is_named(pipeline: PipelineRun, tmp_path: Path) -> None:
    """A directory given as TARGET: NotALedgerError, exit 2 with a line naming it."""
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(NotALedgerError, match="directory"):
        ingest(folder, [str(pipeline.ledgers[0])])
    line = one_line_error(run("ingest", "--no-progress", folder, pipeline.ledgers[0]))
    assert str(folder) in line
    assert list(folder.iterdir()) == []


def test_a_text_file_as_ingest_target_is_named(pipeline: PipelineRun, tmp_path: Path) -> None:
    """A text file given as TARGET: NotALedgerError, exit 2, the file unchanged."""
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n" * 100)
    with pytest.raises(NotALedgerError):
        ingest(text, [str(pipeline.ledgers[0])])
    line = one_line_error(run("ingest", "--no-progress", text, pipeline.ledgers[0]))
    assert str(text) in line
    assert text.read_text() == "my notes\n" * 100


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "{L}", "--until", "99999999999999999999999"),
        ("replay", "{L}", "--attempt", "99999999999999999999999"),
        ("events", "{L}", "--attempt", "99999999999999999999999"),
        ("lineage", "{C}", "{D}", "--depth", "99999999999999999999999"),
    ],
    ids=["replay-until", "replay-attempt", "events-attempt", "lineage-depth"],
)
def test_a_huge_number_is_bad_input_not_a_bug(
    central: Path, pipeline: PipelineRun, args: tuple[str, ...]
) -> None:
    """A number past 2**63 - 1 is refused in one line, exit 2 (was OverflowError, exit 3)."""
    values = {"L": pipeline.ledgers[0], "C": central, "D": _dataset(central)}
    line = one_line_error(run(*(a.format(**values) for a in args)))
    assert "99999999999999999999999" in line


def test_replay_until_past_any_seq_raises_out_of_range(pipeline: PipelineRun) -> None:
    """Ledger.replay/events with an until no SQL integer holds raise OutOfRangeError."""
    with Ledger.open(pipeline.ledgers[0]) as led:
        with pytest.raises(OutOfRangeError, match="until"):
            led.replay(until=10**30)
        with pytest.raises(OutOfRangeError, match="after_seq"):
            list(led.events(after_seq=-(10**30)))
        assert led.replay(until=2**63 - 1) == led.replay()


_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (_DEEP, "nested deeper"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested deeper"),
        ("not json at all", "Expecting value"),
        ("[1, 2]", "valid dictionary"),
        ('{"quantum_id": "abc", "quantum_seq": 1, "hash": "x"}', "quantum_id"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
    ids=["deep-array", "deep-object", "not-json", "wrong-shape", "bad-id", "not-utf8"],
)
def test_a_bad_head_file_is_named(
    pipeline: PipelineRun, tmp_path: Path, content: str | bytes, words: str
) -> None:
    """verify --head FILE that is not a head: InvalidHeadError, one line, exit 2."""
    head = tmp_path / "q.head.json"
    if isinstance(content, bytes):
        head.write_bytes(content)
    else:
        head.write_text(content)
    with pytest.raises(InvalidHeadError, match=words):
        parse_heads(head.read_bytes(), str(head))
    line = one_line_error(run("verify", pipeline.ledgers[0], "--head", head))
    assert str(head) in line
    assert words in line


def test_a_deeply_nested_inline_head_is_named(pipeline: PipelineRun) -> None:
    """verify --head '[[[...]]]' (100,000 deep, inline): one line, exit 2."""
    line = one_line_error(run("verify", pipeline.ledgers[0], "--head", _DEEP))
    assert "nested deeper" in line


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = where / "probe"
    probe.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if done.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


@contextlib.contextmanager
def _tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (unmounted after)."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)
        where.rmdir()


def test_a_full_disk_during_ingest_is_named_and_keeps_committed_batches(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """A full tmpfs: LedgerDiskFullError; the target verifies or is absent; a rerun ends it."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs root to mount a small tmpfs")
    sources = [str(p) for p in pipeline.ledgers]
    failed_midway = 0
    for i, size in enumerate(range(96 * 1024, 640 * 1024, 48 * 1024)):
        with _tmpfs(tmp_path / f"disk{i}", size) as disk:
            target = disk / "central.sqlite"
            try:
                ingest(target, sources, batch_events=10)
                continue  # it fitted
            except LedgerDiskFullError as e:
                message = str(e)
            assert "disk is full" in message
            if not target.exists():
                continue  # full while creating: nothing linked into place
            failed_midway += 1
            with Ledger.open(target) as led:
                assert led.verify().ok
                some = len(led.quantum_ids())
            assert some < len(sources)
            subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
            assert ingest(target, sources).ok
            with Ledger.open(target) as led:
                assert led.verify().ok
                assert len(led.quantum_ids()) == len(sources)
                (n,) = next(iter(led.rows("SELECT COUNT(*) FROM events")))
            assert n == sum(_n_events(p) for p in sources)
    assert failed_midway, "no size made ingest fail after its first batch"


def _n_events(path: str) -> int:
    with Ledger.open(path) as led:
        return int(next(iter(led.rows("SELECT COUNT(*) FROM events")))[0])


def test_a_file_size_limit_during_ingest_exits_2(pipeline: PipelineRun, tmp_path: Path) -> None:
    """Under RLIMIT_FSIZE (writes fail with EFBIG): one line naming the disk, exit 2, not 3."""
    target = tmp_path / "central.sqlite"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))

    done = subprocess.run(
        [*QLEDGER, "ingest", "--no-progress", "--batch-size", "10", str(target),
         *map(str, pipeline.ledgers)],
        capture_output=True, text=True, preexec_fn=limit,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "disk" in lines[0]
    if target.exists():
        with Ledger.open(target) as led:
            assert led.verify().ok


# --- --debug adds a traceback and keeps the exit code ------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("show", "{tmp}/missing.ledger"),
        ("ingest", "--no-progress", "{tmp}", "{L}"),
        ("replay", "{L}", "--until", "99999999999999999999999"),
        ("replay", "{L}", "-o", "{L}"),
    ],
    ids=["missing", "folder-target", "huge-until", "output-is-input"],
)
def test_debug_prints_a_traceback_and_keeps_exit_code_2(
    pipeline: PipelineRun, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """--debug: the same exit code 2, the one line, and a traceback on stderr."""
    values = {"tmp": tmp_path, "L": pipeline.ledgers[0]}
    result = run("--debug", *(a.format(**values) for a in args))
    assert result.exit_code == 2, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("qledger: error: ")


def test_debug_keeps_exit_code_3_for_a_bug(
    pipeline: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug under --debug: exit 3 still, with the traceback."""

    def broken(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("ledger.cli._admin.export_prov", broken)
    result = run("--debug", "export", pipeline.ledgers[0], "-f", "prov-json")
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "ZeroDivisionError" in result.stderr


# --- 19. a reader of stdout that leaves early; readers that outlive a killed ingest ------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger of 300 events: its ``events --json`` is larger than a pipe's buffer."""
    where = tmp_path_factory.mktemp("big")
    fixture = make_quantum(where / "repo", n_inputs=20, n_outputs=1)
    ledger = where / "big.ledger"
    with QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=ledger, durability="batch"
    ) as butler:
        for _ in range(15):
            butler.stored_many(fixture.predicted_inputs)
    return ledger


def test_events_piped_to_head_ends_quietly(big: Path) -> None:
    """`qledger events L --json | head -1`: one line out, exit 0, nothing on stderr."""
    done = subprocess.run(
        f"{' '.join(QLEDGER)} events {big} --json 2>err.txt | head -1; "
        'echo "status=${PIPESTATUS[0]}"; cat err.txt',
        shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=big.parent,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert json.loads(lines[0])["kind"] == "quantum_started"
    assert lines[1:] == ["status=0"], done.stdout


# Runs qledger commands one after the other in one process (one interpreter start for
# all), each with fd 1 a pipe whose reader is gone and fd 2 a file; prints their exit
# codes and stderr as JSON.
_CLOSED_STDOUT = """
import json, os, sys, tempfile
from ledger.cli import main
out = []
for args in json.loads(sys.argv[1]):
    saved_out, saved_err = os.dup(1), os.dup(2)
    read, write = os.pipe()
    os.close(read)
    os.dup2(write, 1)
    os.close(write)
    err = tempfile.TemporaryFile()
    os.dup2(err.fileno(), 2)
    try:
        main(args, prog_name="qledger")
        code = 0
    except SystemExit as e:
        code = e.code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError as e:
            print(f"flush failed: {e!r}", file=sys.__stderr__)
    os.dup2(saved_out, 1)
    os.dup2(saved_err, 2)
    err.seek(0)
    out.append([args, code, err.read().decode()])
print(json.dumps(out))
"""

_PRINTING = [
    ("show", "{L}"),
    ("show", "--json", "{L}"),
    ("events", "{L}"),
    ("events", "--json", "{L}"),
    ("replay", "{L}"),
    ("head", "{L}"),
    ("verify", "{L}"),
    ("sql", "{L}", "SELECT * FROM events"),
    ("sql", "--json", "{L}", "SELECT * FROM events"),
    ("export", "{L}"),
    ("export", "--format", "prov-json", "{L}"),
    ("lineage", "{C}", "{D}"),
    ("lineage", "--format", "json", "{C}", "{D}"),
    ("ingest", "--no-progress", "{T}", "{L}"),
    ("report", "{C}"),
    ("watch", "--once", "{C}"),
]


def test_every_printing_command_ends_quietly_when_stdout_is_closed(
    big: Path, central: Path, tmp_path: Path
) -> None:
    """Stdout a pipe whose reader is gone: each command exits 0, no message, no traceback."""
    values = {"L": big, "C": central, "D": _dataset(central), "T": tmp_path / "t.sqlite"}
    commands = [[a.format(**values) for a in args] for args in _PRINTING]
    done = subprocess.run(
        [sys.executable, "-c", _CLOSED_STDOUT, json.dumps(commands)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    results = json.loads(done.stdout)
    assert len(results) == len(commands)
    for args, code, err in results:
        assert (args, code, err) == (args, 0, "")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not yet reaped


_FALLBACK = (
    "import sys; import ledger.central; "
    "sys.modules['ledger.central.ingest']._PR_SET_PDEATHSIG = 0; "  # no prctl: the thread's job
    "from ledger.cli import main; main(sys.argv[1:], prog_name='qledger')"
)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc to find children")
@pytest.mark.parametrize("how", ["pdeathsig", "watcher-thread"])
def test_killing_ingest_leaves_no_reader_running(
    pipeline: PipelineRun, tmp_path: Path, how: str
) -> None:
    """SIGKILL of `qledger ingest --jobs 2` mid-run: its reading processes end within seconds."""
    sources = tmp_path / "sources"
    sources.mkdir()
    for i in range(3000):  # hard links: many sources, no copying
        os.link(pipeline.ledgers[i % len(pipeline.ledgers)], sources / f"l{i:04}.ledger")
    command = QLEDGER if how == "pdeathsig" else [sys.executable, "-c", _FALLBACK]
    proc = subprocess.Popen(
        [*command, "ingest", "--no-progress", "--jobs", "2", str(tmp_path / "c.sqlite"),
         str(sources)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        readers: list[int] = []
        while len(readers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            readers = _children(proc.pid)
            time.sleep(0.02)
        assert len(readers) == 2, "the readers did not start"
        time.sleep(0.3)  # let them read
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in readers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in readers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "reader processes outlived the killed ingest"
