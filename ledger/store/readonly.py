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
   creating it: `LedgerNotReadableError`.
2. The header says rollback journal (a finished ledger): the same locking open.
   It takes a read lock only while a query runs and creates nothing; a writer
   that starts waits for that query, switches the file to WAL, and the
   connection's next query reads through the WAL. A rollback journal beside it
   means a write is under way (the locks wait for it) or was cut off: SQLite
   cannot roll that back read-only, and `LedgerNotReadableError` says who can.
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
queries, and each snapshot, to one moment.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from ..errors import LedgerChangedError, LedgerError, LedgerNotReadableError
from .migrate import translate_db_error

__all__ = ["ReadMode", "SQLiteReader", "read_mode"]

ReadMode = Literal["locking", "immutable"]

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


def _size(path: str) -> int | None:
    """The size of ``path``, or None when there is no such file."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _identity(path: str) -> _Identity:
    """The file's identity, read through a read-only descriptor (a clear error if unreadable).

    Raises:
        LedgerNotReadableError: this user may not read the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError as e:
        raise LedgerNotReadableError(
            f"cannot read {path}: permission denied (ask its owner for read access)"
        ) from e
    try:
        return _Identity.of(os.fstat(fd))
    finally:
        os.close(fd)


def _header_switch_only(path: str) -> bool:
    """Whether ``X-journal`` holds nothing but a journal-mode switch of ``X`` (or nothing).

    Our writers write in rollback-journal mode only to switch WAL on (at open) and
    off (at close): one page, page 1, whose content beyond the bytes of the switch
    stays the same. A writer killed in that moment leaves a hot journal that a
    reader cannot roll back, but need not: ``X`` reads the same either way.
    """
    try:
        with open(path + "-journal", "rb") as journal, open(path, "rb") as db:
            head = journal.read(28)
            if len(head) < 28 or head[:8] != _JOURNAL_MAGIC:
                return True  # no valid header: SQLite treats it as no journal at all
            sector = int.from_bytes(head[20:24], "big")
            page_size = int.from_bytes(head[24:28], "big")
            if not 512 <= sector <= 65536 or not 512 <= page_size <= 65536:
                return False
            current = db.read(page_size)
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


def _says_wal(path: str) -> bool:
    """Whether the file's header marks it as in WAL mode (bytes 18 and 19 are 2)."""
    try:
        with open(path, "rb") as f:
            return f.read(20)[18:19] == b"\x02"
    except OSError:
        return False


def read_mode(path: str) -> ReadMode:
    """How to open ``path`` for reading, by the rule in this module's docstring."""
    if _size(path + "-wal"):
        return "locking"
    if _says_wal(path):
        wal_there = os.path.lexists(path + "-wal") and os.path.lexists(path + "-shm")
        return "locking" if wal_there else "immutable"
    if os.path.lexists(path + "-journal") and _header_switch_only(path):
        return "immutable"
    return "locking"


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
        self.conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        self._identity = _identity(path)
        self.mode = read_mode(path)
        if _size(path + "-wal") and not os.path.lexists(path + "-shm"):
            raise LedgerNotReadableError(
                f"{path}: its write-ahead log {path}-wal holds events, but {path}-shm is not "
                "beside it, and reading the log without it would create it: copy it along "
                f'with the ledger, or have someone who can write the folder run "qledger '
                f'upgrade {path}", which folds the log into the file'
            )
        uri = f"file:{quote(os.path.abspath(path))}?{_URI_QUERY[self.mode]}"
        try:
            conn: sqlite3.Connection = sqlite3.connect(uri, uri=True, **self._options)
        except sqlite3.Error as e:
            raise self._translate(e) from e
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA schema_version").fetchone()  # reads page 1: opens the WAL now
        except sqlite3.Error as e:
            conn.close()
            raise self._translate(e) from e
        return conn

    def _translate(self, e: sqlite3.Error) -> LedgerError:
        """A driver error at open, naming what could not be read and the way out."""
        path = self.path
        code = str(getattr(e, "sqlite_errorname", ""))
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
        return read_mode(self.path) != self.mode

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
        """Release the connection."""
        self.conn.close()
