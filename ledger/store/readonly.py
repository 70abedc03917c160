"""Reading a SQLite ledger without writing anything: the reader's rule.

Inspection must need no write access to a ledger or its folder, and must leave
the folder as it found it: the same files, the same bytes, the same times.
SQLite's plain read-only open (``mode=ro``) of a file in WAL mode does neither:
it creates ``X-wal`` and ``X-shm`` when it can (and cannot remove them again,
being read-only), and fails with "attempt to write a readonly database" when it
cannot. Our writers leave a finished ledger out of WAL mode (`finish_sqlite`),
and every reader opens a ledger file here, by its header and what lies beside it:

1. ``X-wal`` holds frames, or the header says WAL and ``X-wal`` and ``X-shm``
   are both there: a writer may be appending, or one left events in its WAL.
   Read with SQLite's locks, ``mode=ro&readonly_shm=1``: SQLite maps ``X-shm``
   read-only (or, when no other connection is open, reads the WAL into private
   memory), sees every committed event, waits for no one and writes nothing,
   not even ``X-shm``. A WAL with frames but no ``X-shm`` cannot be read without
   creating it: `LedgerNotReadableError`, unless every page it holds is already
   in ``X`` (a writer killed while closing, between removing ``-shm`` and
   ``-wal``): then ``X`` alone is read, as in 3.
2. The header says rollback journal (a finished ledger): the same locking open.
   It takes a read lock only while a query runs and creates nothing; a writer
   that starts waits for that query, switches the file to WAL, and the
   connection's next query reads through the WAL. A rollback journal beside it
   means a write is under way (the locks wait for it) or was cut off: SQLite
   cannot roll that back read-only, and `LedgerNotReadableError` says who can
   (unless the journal records only our header switch: see 3).
3. The header says WAL but there is no WAL to read (a WAL ledger closed by an
   older version, or by writers that closed together): every committed event
   is in ``X`` and no writer is connected. A locking open would have to create
   ``X-wal`` and ``X-shm``, so the file is opened ``immutable=1``: no locks, no
   files. So is a file whose journal records only our writers' header switch
   (WAL on at open, off at close, cut off by a kill): it reads the same as the
   file rolled back.

An immutable connection reads ``X`` as it was when it was opened. A writer that
starts afterwards appends to its own ``X-wal``, which that connection does not
see; it changes ``X`` itself only when it checkpoints (after ~4 MB of WAL, and
at its close). `SQLiteReader` therefore keeps the file's identity (inode, size,
times) from the open: `Ledger` re-opens by the rule before a query once the file
or what lies beside it changed, and a query or snapshot during which ``X``
changed ends in `LedgerChangedError` rather than return rows that could mix two
moments. (A locking reader needs no such check: SQLite's locks keep each of its
queries, and each snapshot, to one moment.) The reader reads the header through
one descriptor it keeps open: opening and closing the file again while its
connection lives would drop every POSIX lock the process holds on the file,
SQLite's read locks included, and let a writer checkpoint under its reads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from ..errors import LedgerBusyError, LedgerChangedError, LedgerError, LedgerNotReadableError
from .migrate import translate_db_error

__all__ = ["ReadMode", "SQLiteReader", "read_mode"]

ReadMode = Literal["locking", "immutable"]

#: Opens tried when a writer switches WAL on or off between the look and the open.
_ATTEMPTS = 5

#: How each mode is spelt in the URI SQLite opens.
_URI_QUERY: dict[ReadMode, str] = {
    "locking": "mode=ro&readonly_shm=1",
    "immutable": "immutable=1",
}
#: A rollback journal's header starts with these bytes (sqlite3's pager.c: aJournalMagic).
_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
#: Page 1 less the header bytes a journal-mode switch rewrites: the file format
#: versions (18, 19), the change counter (24-27), version-valid-for and the SQLite
#: version number (92-99). These spans are the ledger's content on that page.
_CONTENT_SPANS = ((0, 18), (20, 24), (28, 92), (100, None))


@dataclass(frozen=True, slots=True)
class _Identity:
    """What changes when anything writes a file: inode, size and times."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _wal_has_frames(path: str) -> bool:
    """Whether ``X-wal`` is long enough to hold a frame (32-byte header, 24-byte frame header
    and a page): a WAL of its header alone, or none, holds no event."""
    try:
        with open(path + "-wal", "rb") as wal:
            head = wal.read(32)
            size = os.fstat(wal.fileno()).st_size
    except FileNotFoundError:
        return False
    if len(head) < 32:
        return False
    page_size = int.from_bytes(head[8:12], "big") or 65536
    return size >= 32 + 24 + page_size


def _open_fd(path: str) -> int:
    """A read-only descriptor of the file, kept while a reader is open (an error if unreadable).

    The reader reads the header through it and never opens and closes the file
    again while its connection lives: closing any descriptor of a file drops
    every POSIX lock the process holds on it, SQLite's read locks included.

    Raises:
        LedgerNotReadableError: this user may not read the file.
    """
    try:
        return os.open(path, os.O_RDONLY)
    except PermissionError as e:
        raise LedgerNotReadableError(
            f"cannot read {path}: permission denied (ask its owner for read access)"
        ) from e


def _header_switch_only(path: str, db: int) -> bool:
    """Whether ``X-journal`` holds nothing but a journal-mode switch of ``X`` (or nothing).

    Our writers write in rollback-journal mode only to switch WAL on (at open) and
    off (at close): one page, page 1, whose content beyond the bytes of the switch
    stays the same. A writer killed in that moment leaves a hot journal that a
    reader cannot roll back, but need not: ``X`` reads the same either way.
    ``db`` is a descriptor of ``X``.
    """
    try:
        with open(path + "-journal", "rb") as journal:
            head = journal.read(28)
            if len(head) < 28 or head[:8] != _JOURNAL_MAGIC:
                return True  # no valid header: SQLite treats it as no journal at all
            sector = int.from_bytes(head[20:24], "big")
            page_size = int.from_bytes(head[24:28], "big")
            if not 512 <= sector <= 65536 or not 512 <= page_size <= 65536:
                return False
            current = os.pread(db, page_size, 0)
            journal.seek(sector)
            while record := journal.read(4 + page_size + 4):
                if len(record) < 4 + page_size + 4:
                    return True  # a record not yet written whole: the file was not touched
                if int.from_bytes(record[:4], "big") != 1:
                    return False
                old = record[4 : 4 + page_size]
                if len(current) != page_size or any(
                    old[start:end] != current[start:end] for start, end in _CONTENT_SPANS
                ):
                    return False
            return True
    except FileNotFoundError:
        return True  # the journal is gone: the write it belonged to ended
    except OSError:
        return False


def _wal_folded_in(path: str, db: int) -> bool:
    """Whether every page ``X-wal`` holds is already in ``X`` (a WAL left fully checkpointed).

    A writer that closes removes ``-shm`` just before ``-wal``: one killed in
    between leaves a WAL whose frames are all in the file already. Each page's
    last version (frames with the header's salts, up to the last commit frame)
    is compared with the file's page: equal everywhere, the file alone reads as
    file and WAL together. ``db`` is a descriptor of ``X``.
    """
    try:
        with open(path + "-wal", "rb") as wal:
            head = wal.read(32)
            if len(head) < 32 or head[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
                return False
            page_size = int.from_bytes(head[8:12], "big")
            if not 512 <= page_size <= 65536:
                return False
            pages: dict[int, bytes] = {}
            committed: dict[int, bytes] = {}
            while len(frame := wal.read(24 + page_size)) == 24 + page_size:
                if frame[8:16] != head[16:24]:  # another generation's frame: the log ends
                    break
                pages[int.from_bytes(frame[:4], "big")] = frame[24:]
                if int.from_bytes(frame[4:8], "big"):  # a commit frame
                    committed.update(pages)
                    pages.clear()
            return all(
                os.pread(db, page_size, (number - 1) * page_size) == data
                for number, data in committed.items()
            )
    except OSError:
        return False


def read_mode(path: str, db: int | None = None) -> ReadMode:
    """How to open ``path`` for reading, by the rule in this module's docstring.

    ``db``, a descriptor of the file, is read instead of opening it (a reader
    with a live connection must not open and close the file: see `_open_fd`).
    """
    has_frames = _wal_has_frames(path)
    if has_frames and os.path.lexists(path + "-shm"):
        return "locking"
    fd = _open_fd(path) if db is None else db
    try:
        if has_frames:
            return "immutable" if _wal_folded_in(path, fd) else "locking"
        if os.pread(fd, 20, 0)[18:19] == b"\x02":  # the header says WAL
            wal_there = os.path.lexists(path + "-wal") and os.path.lexists(path + "-shm")
            return "locking" if wal_there else "immutable"
        return "locking"  # a journal beside it: the locks wait for its live writer
    finally:
        if db is None:
            os.close(fd)


class SQLiteReader:
    """One read-only connection to a ledger file, opened by the reader's rule.

    ``conn`` is replaced by `reopen`; keep the reader, not the connection, when
    a connection may live across a writer's start.
    """

    def __init__(self, path: str, **options: Any) -> None:
        """Open ``path`` (``options`` go to `sqlite3.connect`).

        Raises:
            LedgerNotReadableError: the file, or the WAL it needs, cannot be read
                without write access.
            LedgerError: as `translate_db_error` maps a driver error.
        """
        self.path = path
        self._options = options
        self.mode: ReadMode = "immutable"
        self._identity: _Identity | None = None
        self._fd = _open_fd(path)
        try:
            self.conn = self._connect()
        except BaseException:
            os.close(self._fd)
            raise

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        for attempt in range(_ATTEMPTS):
            self._identity = _Identity.of(os.stat(path))
            if self._identity.inode != os.fstat(self._fd).st_ino:  # replaced: read the new one
                os.close(self._fd)
                self._fd = _open_fd(path)
            self.mode = read_mode(path, self._fd)
            frames = _wal_has_frames(path)
            if self.mode == "locking" and frames and not os.path.lexists(path + "-shm"):
                raise LedgerNotReadableError(
                    f"{path}: its write-ahead log {path}-wal holds events, but {path}-shm is "
                    "not beside it, and reading the log without it would create it: copy it "
                    "along with the ledger, or have someone who can write the folder run "
                    f'"qledger upgrade {path}", which folds the log into the file'
                )
            try:
                return self._open()
            except sqlite3.Error as e:
                code = str(getattr(e, "sqlite_errorname", ""))
                if self.mode != "locking":
                    raise self._translate(e) from e
                if code == "SQLITE_PROTOCOL" and _wal_folded_in(path, self._fd):
                    # A -shm that a killed writer left mid-update, which read-only
                    # SQLite cannot rebuild; every page the WAL commits is in the file.
                    return self._open_immutable(e)
                refused = code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
                if refused and os.path.lexists(path + "-journal"):
                    if _header_switch_only(path, self._fd):
                        # A writer killed while switching the header: a journal a reader
                        # cannot roll back, and need not (the file reads the same).
                        return self._open_immutable(e)
                    raise self._translate(e) from e
                if not refused or attempt == _ATTEMPTS - 1:
                    raise self._translate(e) from e
                # A writer switched WAL on or off between the look beside the file
                # and the open: look again.
                time.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_immutable(self, cause: sqlite3.Error) -> sqlite3.Connection:
        self.mode = "immutable"
        try:
            return self._open()
        except sqlite3.Error as e:
            raise self._translate(e) from cause

    def _open(self) -> sqlite3.Connection:
        """A connection in ``self.mode``, its first page read (driver errors raised as they are)."""
        uri = f"file:{quote(os.path.abspath(self.path))}?{_URI_QUERY[self.mode]}"
        conn: sqlite3.Connection = sqlite3.connect(uri, uri=True, **self._options)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA schema_version").fetchone()  # reads page 1: opens the WAL now
        except BaseException:
            conn.close()
            raise
        return conn

    def _translate(self, e: sqlite3.Error) -> LedgerError:
        """A driver error at open, naming what could not be read and the way out."""
        path = self.path
        code = str(getattr(e, "sqlite_errorname", ""))
        if code == "SQLITE_PROTOCOL":
            return LedgerBusyError(
                f"{path}: could not read it consistently while writers came and went "
                f"({e}); run the command again"
            )
        if not (code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in str(e)):
            return translate_db_error(e, path)
        if os.path.lexists(path + "-journal"):
            return LedgerNotReadableError(
                f"{path}: a write to it was cut off and left {path}-journal, which only a "
                "user who can write the file and its folder can roll back: have one run "
                f'"qledger upgrade {path}" (any SQLite open does it)'
            )
        if os.path.lexists(path + "-wal"):
            return LedgerNotReadableError(
                f"{path}: cannot read its write-ahead log ({path}-wal, {path}-shm: {e}); "
                "ask its owner for read access to both"
            )
        return LedgerNotReadableError(f"cannot read {path} ({e})")

    # --- freshness ---------------------------------------------------------------

    def stale(self) -> bool:
        """Whether to open again before the next query.

        An immutable connection is stale once ``X`` changed since it was opened,
        or a writer started beside it; a locking one once the rule would no
        longer lock (its WAL went away while the header still says WAL).
        """
        if self.mode == "immutable" and self._changed():
            return True
        try:
            return read_mode(self.path, self._fd) != self.mode
        except OSError:
            return True

    def _changed(self) -> bool:
        try:
            return _Identity.of(os.stat(self.path)) != self._identity
        except OSError:
            return True

    def reopen(self) -> sqlite3.Connection:
        """Close the connection and open a new one by the rule; the new connection."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self.conn = self._connect()
        return self.conn

    def check_unchanged(self) -> None:
        """Refuse what an immutable connection read if ``X`` changed since it was opened.

        Raises:
            LedgerChangedError: a writer changed the file while it was read.
        """
        if self.mode == "immutable" and self._changed():
            raise LedgerChangedError(
                f"{self.path} was changed by a writer while it was read (a writer started "
                "or checkpointed after the read began); nothing is wrong with it: read it "
                "again"
            )

    def translate(self, e: sqlite3.Error) -> LedgerError:
        """A driver error during a read, as the library's error.

        `LedgerChangedError` when a writer changed what this connection reads:
        an immutable file changed, or a writer switched the file into or out of
        WAL between the moment a locking read was planned and made.
        """
        code = str(getattr(e, "sqlite_errorname", ""))
        switched = code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in str(e)
        if (self.mode == "immutable" and self._changed()) or (switched and self.stale()):
            return LedgerChangedError(
                f"{self.path} was changed by a writer while it was read ({e}); nothing is "
                "wrong with it: read it again"
            )
        if switched:
            return self._translate(e)
        return translate_db_error(e, self.path)

    def close(self) -> None:
        """Release the connection, then the descriptor (so SQLite's locks end with it)."""
        try:
            self.conn.close()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
