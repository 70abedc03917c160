"""Readable by anyone who can read it: readers never write, need no write access, leave nothing.

The reader's rule is in ``ledger/store/readonly.py`` and docs/explanation/durability.md.
The unprivileged cases run ``qledger`` as the user ``nobody`` on a copy whose
files and folders have no write bit (skipped, with the reason, where no such user
or no interpreter it may run exists).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import shutil
import site
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger import (
    LedgerChangedError,
    LedgerNotReadableError,
    QuantumBackedButler,
)
from ledger.cli import main
from ledger.store.ledger import Ledger
from ledger.store.log import EventLog, PendingCall
from ledger.store.readonly import read_mode
from ledger.testing import make_quantum

REPO = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "workers.py"
QLEDGER = [sys.executable, "-m", "ledger"]

Listing = dict[str, tuple[int, int, str]]


# --- helpers -------------------------------------------------------------------------


def listing(root: Path) -> Listing:
    """Every file under ``root``: size, mtime and a digest of its bytes."""
    found: Listing = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return found


def make_read_only(root: Path) -> None:
    """Take every write bit off ``root``'s files and folders (readable and searchable by all)."""
    for path in [root, *root.rglob("*")]:
        mode = 0o555 if path.is_dir() else 0o444
        path.chmod(mode)


def make_writable(root: Path) -> None:
    """Give the owner write access back (to clean up)."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def header_mode(path: Path) -> int:
    """Byte 18 of a SQLite header: 1 for a rollback journal, 2 for WAL."""
    return path.read_bytes()[18]


def qledger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run qledger as this user."""
    return subprocess.run(
        [*QLEDGER, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


class Unprivileged:
    """Runs Python as a user without privileges (``nobody`` when the tests run as root)."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.env = dict(os.environ)
        if os.geteuid() != 0:
            self.python = sys.executable  # already a user without privileges
            return
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user 'nobody' to read the copy as an unprivileged user")
        self.kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        # The venv's interpreter may live where that user cannot go (a pyenv under
        # /root): then the system's Python of the same version, with our paths.
        paths = [str(REPO), *site.getsitepackages()]
        self.env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONDONTWRITEBYTECODE="1")
        self.env["HOME"] = "/"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        candidates = (
            sys.executable,
            f"/usr/bin/python{version}",
            f"/usr/local/bin/python{version}",
        )
        for python in candidates:
            if self._works(python):
                self.python = python
                return
        pytest.skip(f"no Python {version} that user 'nobody' may run (the venv's is not)")

    def _works(self, python: str) -> bool:
        try:
            probe = subprocess.run(
                [python, "-c", "import ledger.cli"],
                capture_output=True,
                env=self.env,
                cwd="/",
                timeout=60,
                check=False,
                **self.kwargs,
            )
        except OSError:
            return False
        return probe.returncode == 0

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run ``python ARGS`` as that user in ``cwd``."""
        return subprocess.run(
            [self.python, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self.kwargs,
        )

    def qledger(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run qledger as that user in ``cwd``."""
        return self.run(["-m", "ledger", *args], cwd)


@pytest.fixture(scope="module")
def unprivileged() -> Unprivileged:
    """The way to run as a user without privileges."""
    return Unprivileged()


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    """A folder every user may enter (pytest's own is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="qledger-readonly-"))
    root.chmod(0o755)
    yield root
    make_writable(root)
    shutil.rmtree(root)


class Campaign:
    """The demo campaign (one failed and one killed quantum left) and its central ledger."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ledgers = sorted((root / "ledgers").glob("*.ledger"))
        by_status: dict[str, Path] = {}
        for path in self.ledgers:
            with Ledger.open(path) as led:
                for row in led.status():
                    by_status.setdefault(str(row["status"]), path)
        self.succeeded = by_status["succeeded"]
        self.failed = by_status["failed"]
        self.killed = by_status.get("interrupted") or by_status["running"]
        with Ledger.open(root / "central.sqlite") as led:
            rows = led.rows("SELECT dataset_id FROM events WHERE kind = 'put' ORDER BY seq DESC")
            self.dataset = str(next(rows)[0])
            rows.close()

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    """A campaign as the demo leaves it without recovery, ingested into central.sqlite."""
    root = tmp_path_factory.mktemp("campaign") / "demo"
    done = qledger("demo", "--no-recovery", str(root), cwd=tmp_path_factory.getbasetemp())
    assert done.returncode == 0, done.stderr
    ledgers = sorted(str(p.relative_to(root)) for p in (root / "ledgers").glob("*.ledger"))
    done = qledger("ingest", "--no-progress", "central.sqlite", *ledgers, cwd=root)
    assert done.returncode == 0, done.stderr
    return Campaign(root)


def _reloaded(campaign: Campaign, where: Path) -> Campaign:
    copy = Campaign.__new__(Campaign)
    copy.root = where
    copy.ledgers = [where / p.relative_to(campaign.root) for p in campaign.ledgers]
    copy.succeeded = where / campaign.succeeded.relative_to(campaign.root)
    copy.failed = where / campaign.failed.relative_to(campaign.root)
    copy.killed = where / campaign.killed.relative_to(campaign.root)
    copy.dataset = campaign.dataset
    return copy


def commands(c: Campaign, out: Path) -> dict[str, list[str]]:
    """Every inspecting command, as run on the campaign ``c`` (outputs under ``out``)."""
    ok, failed = c.rel(c.succeeded), c.rel(c.failed)
    return {
        "show": ["show", ok],
        "events": ["events", failed],
        "replay": ["replay", ok],
        "verify": ["verify", failed],
        "export": ["export", failed, "--format", "prov-json"],
        "head": ["head", ok],
        "sql": ["sql", failed, "SELECT kind, outcome FROM events ORDER BY seq"],
        "recover-report": ["recover", failed, "--datastore", "repo"],
        "lineage": ["lineage", "central.sqlite", c.dataset],
        "watch-central": ["watch", "central.sqlite", "--once", "--json"],
        "watch-folder": ["watch", "ledgers", "--once", "--json"],
        "report": ["report", "central.sqlite", "-o", str(out / "report.html")],
        "ingest-sources": [
            "ingest",
            "--no-progress",
            str(out / "central.sqlite"),
            *(c.rel(p) for p in c.ledgers),
        ],
        "sql-central": ["sql", "central.sqlite", "SELECT count(*) FROM events"],
    }


#: Commands that exit 1 on this campaign: they report a failed quantum.
EXIT_1 = {"recover-report"}
#: Commands whose output is the same whoever runs them, wherever the copy lies.
SAME_OUTPUT = {"replay", "head", "sql", "sql-central", "export", "events", "verify"}
COMMANDS = [
    "show",
    "events",
    "replay",
    "verify",
    "export",
    "head",
    "sql",
    "recover-report",
    "lineage",
    "watch-central",
    "watch-folder",
    "report",
    "ingest-sources",
    "sql-central",
]


@pytest.fixture(scope="module")
def read_only_copy(campaign: Campaign, shared_tmp: Path) -> Campaign:
    """The campaign copied where anyone may read it and no one may write it.

    Copied as an archive keeps it: the ledgers, and a WAL only where it holds
    events (the empty -wal and its -shm that readers of earlier versions left
    beside every ledger they read are not part of a ledger).
    """
    copy = _reloaded(campaign, shared_tmp / "read-only")
    shutil.copytree(campaign.root, copy.root, copy_function=shutil.copy2, ignore=_reader_litter)
    make_read_only(copy.root)
    return copy


def _reader_litter(folder: str, names: list[str]) -> set[str]:
    """An empty -wal and the -shm beside it: left by a reader, holding nothing."""
    litter = set()
    for name in names:
        if name.endswith("-wal") and os.path.getsize(os.path.join(folder, name)) == 0:
            litter |= {name, name[:-4] + "-shm"}
    return litter


# --- unprivileged reads of a read-only copy --------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_every_inspecting_command_reads_a_read_only_copy_as_an_unprivileged_user(
    name: str,
    campaign: Campaign,
    read_only_copy: Campaign,
    unprivileged: Unprivileged,
    shared_tmp: Path,
) -> None:
    """A user who may write neither the files nor their folder sees what the owner sees."""
    out = shared_tmp / f"out-{name}"
    out.mkdir()
    out.chmod(0o777)  # where that user may write a report or a new central ledger
    before = listing(read_only_copy.root)
    seen = unprivileged.qledger(*commands(read_only_copy, out)[name], cwd=read_only_copy.root)
    assert seen.returncode == (1 if name in EXIT_1 else 0), seen.stderr
    assert "readonly" not in seen.stderr
    assert listing(read_only_copy.root) == before
    if name in SAME_OUTPUT:
        mine = shared_tmp / f"mine-{name}"
        mine.mkdir()
        owner = qledger(*commands(campaign, mine)[name], cwd=campaign.root)
        assert owner.returncode == seen.returncode, owner.stderr
        assert seen.stdout == owner.stdout
    if name == "ingest-sources":
        assert (out / "central.sqlite").exists()
        with Ledger.open(out / "central.sqlite") as led:
            assert len(led.quantum_ids()) == len(read_only_copy.ledgers)


def test_a_writer_without_write_access_is_one_line_naming_the_permission(
    read_only_copy: Campaign, unprivileged: Unprivileged
) -> None:
    """Ingest into a central ledger that user may not write: exit 2, one line, not "corrupt"."""
    c = read_only_copy
    before = listing(c.root)
    seen = unprivileged.qledger(
        "ingest", "--no-progress", "central.sqlite", c.rel(c.succeeded), cwd=c.root
    )
    assert seen.returncode == 2, seen.stderr
    assert len(seen.stderr.strip().splitlines()) == 1
    assert "may not write" in seen.stderr
    assert listing(c.root) == before


def test_a_killed_writers_wal_is_read_through_a_read_only_shm(
    campaign: Campaign, read_only_copy: Campaign, unprivileged: Unprivileged, tmp_path: Path
) -> None:
    """A killed writer's events are in its -wal: another user reads them all, and no reader
    writes to -shm."""
    killed = read_only_copy.killed
    assert Path(f"{killed}-wal").stat().st_size > 0  # the events are in the WAL
    script = (
        "import sys\nfrom ledger.store.ledger import Ledger\n"
        "with Ledger.open(sys.argv[1]) as led:\n"
        "    print(sum(1 for _ in led.events()), led.verify().ok)\n"
    )
    seen = unprivileged.run(["-c", script, str(killed)], cwd=read_only_copy.root)
    assert seen.returncode == 0, seen.stderr
    private = Path(tempfile.mkdtemp())  # the events counted from a private copy
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(f"{killed}{suffix}", private / f"l{suffix}")
        (private / f"l{suffix}").chmod(0o644)
    conn = sqlite3.connect(private / "l")
    n = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    shutil.rmtree(private)
    assert seen.stdout.split() == [str(n), "True"]
    mine = tmp_path / "mine"  # its owner reads it too, and -wal and -shm stay as they are
    mine.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy2(f"{campaign.killed}{suffix}", mine / f"k.ledger{suffix}")
    before = listing(mine)
    assert _content(mine / "k.ledger")[2] is True
    assert listing(mine) == before


# --- the folder as it was found ------------------------------------------------------------


@pytest.fixture
def writable_copy(campaign: Campaign, tmp_path: Path) -> Campaign:
    """A copy of the campaign its owner may write."""
    copy = _reloaded(campaign, tmp_path / "campaign")
    shutil.copytree(campaign.root, copy.root, copy_function=shutil.copy2)
    return copy


@pytest.mark.parametrize("name", COMMANDS)
def test_inspecting_leaves_a_writable_folder_file_for_file_as_it_was(
    name: str, writable_copy: Campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by the owner, who could write, a command adds, removes and touches no file."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(writable_copy.root)
    before = listing(writable_copy.root)
    names = sorted(os.listdir(writable_copy.root / "ledgers"))
    result = CliRunner().invoke(main, commands(writable_copy, out)[name], prog_name="qledger")
    assert result.exit_code == (1 if name in EXIT_1 else 0), result.output
    assert sorted(os.listdir(writable_copy.root / "ledgers")) == names
    assert listing(writable_copy.root) == before


# --- ledgers written by earlier versions ----------------------------------------------------


def old_style(source: Path, where: Path, kind: str) -> Path:
    """A copy of a finished ledger as earlier versions left it.

    ``closed``: WAL mode, closed cleanly, never read (no sidecars); ``read``:
    then read as earlier readers did (``mode=ro``), which left an empty -wal and
    a -shm; ``unfolded``: events still in its -wal (a writer that was killed).
    """
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{kind}.ledger"
    shutil.copy(source, path)
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    if kind == "unfolded":
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("INSERT INTO ledger_info (key, value) VALUES ('old_style', 'unfolded')")
        for suffix in ("", "-wal", "-shm"):  # the files as a kill leaves them
            shutil.copy(f"{path}{suffix}", f"{path}{suffix}.kept")
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            os.replace(f"{path}{suffix}.kept", f"{path}{suffix}")
        return path
    conn.close()
    if kind == "read":
        old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        old.execute("SELECT count(*) FROM events").fetchone()
        old.close()
        assert Path(f"{path}-wal").exists()
        assert Path(f"{path}-shm").exists()
    return path


OLD_STYLES = ["closed", "read", "unfolded"]


def _content(path: Path) -> tuple[Any, ...]:
    with Ledger.open(path) as led:
        qid = led.resolve_quantum(None)
        return (
            led.replay(qid).model_dump_json(),
            [e.hash for e in led.events()],
            led.verify().ok,
            led.head(qid),
        )


@pytest.mark.parametrize("kind", OLD_STYLES)
def test_a_ledger_left_in_wal_mode_by_an_earlier_version_is_read_and_left_as_it_was(
    kind: str, campaign: Campaign, tmp_path: Path
) -> None:
    """Its owner reads it correctly, and no sidecar is created, removed or touched."""
    expected = _content(campaign.succeeded)
    path = old_style(campaign.succeeded, tmp_path / "old", kind)
    before = listing(path.parent)
    assert _content(path) == expected
    for args in (["show", str(path)], ["verify", str(path)], ["events", str(path)]):
        assert CliRunner().invoke(main, args).exit_code == 0
    assert listing(path.parent) == before


def test_a_ledger_left_in_wal_mode_is_read_from_a_read_only_copy_by_another_user(
    campaign: Campaign, tmp_path: Path, shared_tmp: Path, unprivileged: Unprivileged
) -> None:
    """Another user reads a read-only ledger an earlier version closed in WAL mode."""
    owner = qledger("replay", str(old_style(campaign.succeeded, tmp_path, "closed")), cwd=tmp_path)
    path = old_style(campaign.succeeded, shared_tmp / "old-closed", "closed")
    make_read_only(path.parent)
    before = listing(path.parent)
    seen = unprivileged.qledger("replay", str(path), cwd=path.parent)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout == owner.stdout
    assert listing(path.parent) == before


def test_a_wal_without_its_shm_is_one_named_line_and_nothing_is_created(
    campaign: Campaign, tmp_path: Path
) -> None:
    """Events in a -wal cannot be read without a -shm to lock: the error says what to do."""
    path = old_style(campaign.succeeded, tmp_path, "unfolded")
    Path(f"{path}-shm").unlink()
    before = listing(tmp_path)
    with pytest.raises(LedgerNotReadableError, match="-shm"):
        Ledger.open(path)
    result = qledger("show", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "upgrade" in result.stderr
    assert listing(tmp_path) == before


def test_a_wal_already_folded_in_without_its_shm_is_read_from_the_file(
    campaign: Campaign, tmp_path: Path
) -> None:
    """A writer killed between removing -shm and -wal at its close: the file alone is read."""
    path = tmp_path / "q.ledger"
    shutil.copy(campaign.succeeded, path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("INSERT INTO ledger_info (key, value) VALUES ('note', 'in the WAL')")
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # every frame into the file
    for suffix in ("", "-wal"):  # the files as that kill leaves them
        shutil.copy(f"{path}{suffix}", f"{path}{suffix}.kept")
    conn.close()
    for suffix in ("", "-wal"):
        os.replace(f"{path}{suffix}.kept", f"{path}{suffix}")
    assert Path(f"{path}-wal").stat().st_size > 0
    assert read_mode(str(path)) == "immutable"
    before = listing(tmp_path)
    with Ledger.open(path) as led:
        rows = list(led.rows("SELECT value FROM ledger_info WHERE key = 'note'"))
    assert rows == [("in the WAL",)]
    assert listing(tmp_path) == before


# --- writers leave a finished ledger self-contained ------------------------------------------


def test_a_finished_ledger_is_one_file_that_is_not_in_wal_mode(
    campaign: Campaign, tmp_path: Path
) -> None:
    """After a clean close no -wal or -shm is left, and the header no longer says WAL."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        butler.stored(fixture.inputs[0])
        butler.put({"x": 1}, fixture.outputs[0])
    assert sorted(os.listdir(tmp_path)) == ["q.ledger", "repo"]
    assert header_mode(path) == 1
    central = campaign.root / "central.sqlite"
    assert header_mode(central) == 1
    assert not Path(f"{central}-wal").exists()
    # a retry turns WAL on while it writes and off again at its close
    with QuantumBackedButler.resume(fixture.root, path) as retry:
        assert header_mode(path) == 2
        assert Path(f"{path}-wal").exists()
        retry.stored(fixture.inputs[0])
    assert sorted(os.listdir(tmp_path)) == ["q.ledger", "repo"]
    assert header_mode(path) == 1
    assert _content(path)[2] is True


def test_while_another_writer_is_open_the_last_to_close_finishes_the_file(tmp_path: Path) -> None:
    """Two writers of one file: the first leaves WAL on for the second, which turns it off."""
    path = tmp_path / "shared.ledger"
    first = EventLog(path)
    second = EventLog(path)
    for log, qid in ((first, "a" * 8), (second, "b" * 8)):
        entry = (None, "ok", None, None, None)
        log.append(PendingCall(f"{qid}-0000-4000-8000-000000000000", 1, "get", [entry]))
    first.close()
    assert header_mode(path) == 2
    assert Path(f"{path}-wal").exists()
    second.close()
    assert sorted(os.listdir(tmp_path)) == ["shared.ledger"]
    assert header_mode(path) == 1


def test_upgrade_folds_an_earlier_versions_wal_into_the_file(
    campaign: Campaign, tmp_path: Path
) -> None:
    """``qledger upgrade`` on a ledger left in WAL mode leaves it one self-contained file."""
    path = old_style(campaign.succeeded, tmp_path, "unfolded")
    result = CliRunner().invoke(main, ["upgrade", str(path)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ["unfolded.ledger"]
    assert header_mode(path) == 1


# --- readers and a writer at the same time --------------------------------------------------


def _append(path: Path, n: int) -> EventLog:
    """A writer that appended ``n`` events to the ledger's quantum and is still open."""
    with Ledger.open(path) as led:
        qid = led.resolve_quantum(None)
    log = EventLog(path, create=False)
    for _ in range(n):
        log.append(PendingCall(qid, 1, "stored", [(str(uuid.uuid4()), "ok", None, None, None)]))
    return log


@pytest.mark.parametrize("kind", ["finished", "closed"])
def test_a_reader_sees_what_a_writer_commits_after_it_opened(
    kind: str, campaign: Campaign, tmp_path: Path
) -> None:
    """A long-lived reader's next query sees the events a writer committed since."""
    if kind == "finished":
        path = tmp_path / "q.ledger"
        shutil.copy(campaign.succeeded, path)
    else:
        path = old_style(campaign.succeeded, tmp_path, kind)
    with Ledger.open(path) as led:
        n = sum(1 for _ in led.events())
        assert sorted(os.listdir(tmp_path)) == [path.name]  # the reader created nothing
        writer = _append(path, 3)
        try:
            assert sum(1 for _ in led.events()) == n + 3
        finally:
            writer.close()
        assert sum(1 for _ in led.events()) == n + 3


@pytest.mark.parametrize("how", ["snapshot", "stream"])
def test_an_immutable_read_a_checkpoint_overlaps_is_refused_not_torn(
    how: str, campaign: Campaign, tmp_path: Path
) -> None:
    """A snapshot or a stream during which a writer checkpoints into the file is
    LedgerChangedError; the next read sees every event."""
    path = old_style(campaign.succeeded, tmp_path, "closed")
    assert read_mode(str(path)) == "immutable"
    with Ledger.open(path) as led:
        n = sum(1 for _ in led.events())

        def overlapped() -> None:
            if how == "snapshot":
                with led.snapshot():
                    assert sum(1 for _ in led.events()) == n
                    _append(path, 2).close()  # appends, then folds its WAL into the file
                    list(led.events())
            else:
                stream = led.events()
                next(stream)
                _append(path, 2).close()
                list(stream)

        with pytest.raises(LedgerChangedError, match="read it again"):
            overlapped()
        assert sum(1 for _ in led.events()) == n + 2


def test_a_reader_sees_what_it_saw_while_a_writer_starts_and_appends(
    campaign: Campaign, tmp_path: Path
) -> None:
    """An immutable snapshot stays the moment it was opened while a writer appends to its WAL."""
    path = old_style(campaign.succeeded, tmp_path, "closed")
    with Ledger.open(path) as led:
        with led.snapshot():
            n = sum(1 for _ in led.events())
            assert sorted(os.listdir(tmp_path)) == [path.name]  # the reader created nothing
            writer = _append(path, 4)  # into its own -wal: the file itself is unchanged
            assert sum(1 for _ in led.events()) == n
        try:
            assert sum(1 for _ in led.events()) == n + 4  # the next read opens the WAL
        finally:
            writer.close()


def test_another_user_reads_a_ledger_while_it_is_being_written(
    tmp_path: Path, shared_tmp: Path, unprivileged: Unprivileged
) -> None:
    """A user who cannot write the folder verifies a ledger that its owner is appending to."""
    folder = shared_tmp / "live"
    folder.mkdir()
    path = folder / "shared.ledger"
    first = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    with QuantumBackedButler.initialize(first.root, first.quantum, ledger=path) as butler:
        butler.stored(first.inputs[0])
    writer = subprocess.Popen(
        [sys.executable, str(WORKERS), "append", str(path), "200", "1", "w"],
        stdout=subprocess.PIPE,
        text=True,
    )
    script = (
        "import sys\nfrom ledger import LedgerChangedError\n"
        "from ledger.store.ledger import Ledger\n"
        "ok = changed = 0\n"
        "for _ in range(30):\n"
        "    try:\n"
        "        with Ledger.open(sys.argv[1]) as led:\n"
        "            report = led.verify()\n"
        "    except LedgerChangedError:\n"
        "        changed += 1\n"
        "        continue\n"
        "    assert report.ok, report.problems\n"
        "    ok += 1\n"
        "print(ok, changed)\n"
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().startswith("QUANTUM")  # it is writing now
        seen = unprivileged.run(["-c", script, str(path)], cwd=folder)
    finally:
        writer.kill()
        writer.wait()
    assert seen.returncode == 0, seen.stderr
    ok, changed = map(int, seen.stdout.split())
    assert ok >= 25, f"{changed} of 30 reads were refused as changed"


# --- a kill while a writer switches the header ----------------------------------------------


def hot_header_journal(path: Path, page: int = 1) -> None:
    """Leave beside ``path`` the journal a writer killed while turning WAL off leaves.

    The journal holds page 1 as it was before the switch (the header saying WAL);
    ``page`` other than 1 records another page instead (not a header switch).
    """
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big") or 65536
    old = bytearray(data[(page - 1) * page_size : page * page_size])
    if page == 1:
        old[18] = old[19] = 2
    nonce = 0x1234_5678
    checksum = nonce
    i = page_size - 200
    while i > 0:
        checksum += old[i]
        i -= 200
    sector = 512
    head = bytes.fromhex("d9d505f920a163d7") + b"".join(
        n.to_bytes(4, "big") for n in (1, nonce, len(data) // page_size, sector, page_size)
    )
    record = page.to_bytes(4, "big") + bytes(old) + (checksum & 0xFFFF_FFFF).to_bytes(4, "big")
    Path(f"{path}-journal").write_bytes(head.ljust(sector, b"\0") + record)


def test_a_hot_journal_of_a_header_switch_reads_as_the_ledger(
    campaign: Campaign, tmp_path: Path, shared_tmp: Path, unprivileged: Unprivileged
) -> None:
    """A writer killed while switching WAL off leaves a journal that readers need not roll back."""
    path = tmp_path / "q.ledger"
    shutil.copy(campaign.succeeded, path)
    hot_header_journal(path)
    check = tmp_path / "check"  # SQLite itself takes it for a hot journal and rolls it back
    check.mkdir()
    shutil.copy(path, check / "q.ledger")
    shutil.copy(f"{path}-journal", check / "q.ledger-journal")
    conn = sqlite3.connect(check / "q.ledger")
    conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    assert header_mode(check / "q.ledger") == 2
    assert not (check / "q.ledger-journal").exists()
    assert _content(check / "q.ledger") == _content(campaign.succeeded)

    before = listing(tmp_path)
    assert _content(path) == _content(campaign.succeeded)
    assert listing(tmp_path) == before
    folder = shared_tmp / "hot"
    shutil.copytree(tmp_path, folder, ignore=shutil.ignore_patterns("check"))
    make_read_only(folder)
    seen = unprivileged.qledger("verify", "q.ledger", cwd=folder)
    assert seen.returncode == 0, seen.stderr


def test_a_hot_journal_of_another_write_is_one_named_line(
    campaign: Campaign, tmp_path: Path
) -> None:
    """A dead writer's journal of content pages: who can roll it back, in one line, exit 2."""
    path = tmp_path / "q.ledger"
    shutil.copy(campaign.succeeded, path)
    hot_header_journal(path, page=2)
    path.chmod(0o444)  # read-only: SQLite cannot roll it back
    tmp_path.chmod(0o555)
    try:
        before = listing(tmp_path)
        if os.geteuid() == 0:  # root writes anyway: read as a file opened read-only would be
            with pytest.raises(LedgerNotReadableError, match="journal"):
                Ledger.open(path)
        result = qledger("show", str(path), cwd=tmp_path)
        assert listing(tmp_path) == before
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode == 2
    assert "q.ledger-journal" in result.stderr
    assert "upgrade" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_writer_killed_at_any_moment_leaves_a_ledger_that_readers_read(tmp_path: Path) -> None:
    """SIGKILL of a writer that opens and closes (WAL on, WAL off) all the time: every reader
    reads the ledger, with every quantum the writer finished, and leaves the folder as it was."""
    rng = random.Random(11)
    path = tmp_path / "shared.ledger"
    finished: set[str] = set()
    for _ in range(12):
        writer = subprocess.Popen(
            [sys.executable, str(WORKERS), "append", str(path), "1000", "1", "k"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        finished.add(writer.stdout.readline().split()[1])  # it is writing now
        time.sleep(rng.uniform(0.0, 0.3))
        writer.kill()
        out, _ = writer.communicate()
        finished |= {line.split()[1] for line in out.splitlines() if line.startswith("QUANTUM")}
        before = listing(tmp_path)
        with Ledger.open(path) as led:
            assert led.verify().ok
            assert finished <= {str(q) for q in led.quantum_ids()}
        assert listing(tmp_path) == before
