"""Schema versions: upgrade with the shipped Alembic scripts, and check a ledger's revision.

Tables are only ever created by these migrations. The programmatic path runs
the scripts directly through an `EnvironmentContext` (no ``env.py``, no
logging configuration) with a cached `ScriptDirectory`, so creating a ledger
file costs milliseconds. Alembic is imported only to migrate or to list the
revisions: opening a ledger at `HEAD_REVISION` (every read) does without it, and
reading a SQLite file does without SQLAlchemy too (`check_revision`): a command
that reads one ledger starts in a fraction of SQLAlchemy's import time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import (
    LedgerBusyError,
    LedgerCorruptError,
    LedgerDiskFullError,
    LedgerError,
    LedgerReadOnlyError,
    LedgerUnavailableError,
    MalformedRowError,
    NotALedgerError,
    SchemaTooNewError,
    SchemaTooOldError,
)
from .connect import connection_lost, display_target, driver_error

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, Engine

__all__ = [
    "HEAD_REVISION",
    "alembic_config",
    "check_revision",
    "check_schema",
    "current_revision",
    "display_target",
    "downgrade",
    "head_revision",
    "known_revisions",
    "one_line",
    "script_directory",
    "translate_db_error",
    "upgrade",
]

SCRIPT_LOCATION = "ledger:migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The shipped migration scripts (cached)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this library knows."""
    head = script_directory().get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this library ships."""
    return frozenset(s.revision for s in script_directory().walk_revisions())


#: The newest revision shipped, written out so that reading a ledger needs no Alembic;
#: a test holds it equal to `head_revision` (update it with each new migration).
HEAD_REVISION = "0004"


@contextmanager
def _connection(target: Connection | Engine) -> Iterator[Connection]:
    from sqlalchemy import Engine

    if isinstance(target, Engine):
        with target.begin() as conn:
            yield conn
    else:
        yield target


def _run(target: Connection | Engine, revision: str, *, up: bool) -> None:
    from alembic.runtime.environment import EnvironmentContext

    from .schema import metadata

    script = script_directory()

    def step(rev: Any, context: Any) -> Any:
        if up:
            return script._upgrade_revs(revision, rev)
        return script._downgrade_revs(revision, rev)

    with _connection(target) as conn:
        env = EnvironmentContext(alembic_config(), script, fn=step)
        env.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=conn.dialect.name == "sqlite",
            compare_type=True,
        )
        with env.begin_transaction():
            env.run_migrations()
            _stamp_info(conn)


def _stamp_info(conn: Connection) -> None:
    """Keep ``ledger_info.schema_version`` equal to the revision the schema is at."""
    from sqlalchemy import inspect, text

    if inspect(conn).has_table("ledger_info"):
        revision = current_revision(conn)
        conn.execute(
            text("UPDATE ledger_info SET value = :v WHERE key = 'schema_version'"),
            {"v": revision},
        )


def upgrade(target: Connection | Engine, revision: str = "head") -> None:
    """Upgrade a database (empty or older) to ``revision``."""
    _run(target, revision, up=True)


def downgrade(target: Connection | Engine, revision: str) -> None:
    """Downgrade a database to ``revision`` (``"base"`` removes everything)."""
    _run(target, revision, up=False)


def current_revision(conn: Connection) -> str | None:
    """The revision stamped in ``alembic_version``, or None when there is none."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def one_line(text: str) -> str:
    """A message on one line (driver messages span several; an error line must not)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def translate_db_error(e: BaseException, where: str) -> LedgerError:
    """Map a driver error (raw or wrapped by SQLAlchemy) to the library's errors."""
    original = driver_error(e)
    message = str(original)
    if connection_lost(e) and not message.lower().startswith("connection "):
        # Not a connection that failed to open ("connection failed: ...",
        # "connection timeout expired"): one that was open and is gone.
        return LedgerUnavailableError(
            f"lost the connection to {where} ({one_line(message)}): the server ended the "
            "session (restarted, or the backend was terminated); run the command again"
        )
    # SQLite's SQLITE_FULL; PostgreSQL's disk_full (53100, "No space left on device").
    if "database or disk is full" in message or "No space left on device" in message:
        return LedgerDiskFullError(
            f"{where}: the disk is full ({one_line(message)}); nothing recorded is lost: free "
            "space on the filesystem that holds the ledger, then retry (a batch-mode writer "
            "keeps its buffered events and writes them on its next flush or close)"
        )
    code = str(getattr(original, "sqlite_errorname", ""))  # e.g. SQLITE_IOERR_WRITE
    if code.startswith("SQLITE_IOERR"):  # EFBIG (a file size limit), EDQUOT, EIO...
        return LedgerDiskFullError(
            f"{where}: the disk refused a read or write ({message}, {code}): it may be full, "
            "over a quota or a file size limit, or failing; the transaction that failed left "
            "nothing behind: make room, then retry"
        )
    if "file is not a database" in message:
        return NotALedgerError(f"{where} is not a SQLite database, so not a ledger")
    if "malformed JSON" in message or "invalid input syntax for type json" in message:
        return MalformedRowError(
            f"{where} holds a JSON column that is not valid JSON ({one_line(message)}); the "
            f'ledger was damaged or edited (run "qledger verify {where}")'
        )
    if "malformed" in message or "disk image" in message:
        return LedgerCorruptError(
            f"{where} is damaged ({message}); it may be truncated or overwritten: "
            "restore it from a copy (sqlite3's .recover salvages readable rows)"
        )
    if "connection" in message.lower() and any(
        word in message for word in ("refused", "failed", "could not", "timeout", "resolve")
    ):
        return LedgerUnavailableError(
            f"cannot reach {where} ({one_line(message)}): is the server up, and the URL right?"
        )
    if "readonly database" in message:  # SQLITE_READONLY: a writer without permission
        return LedgerReadOnlyError(
            f"{where}: cannot write it ({message}): this user may not write the file or its "
            "folder (readers need no write access; writers do): write as a user who may"
        )
    if "locked" in message or "busy" in message:
        return LedgerBusyError(f"{where} stayed locked by another writer for too long ({message})")
    return LedgerCorruptError(f"{where}: {message}")


def check_schema(conn: Connection, where: str) -> None:
    """Refuse a database that is not a ledger at this library's schema revision.

    Raises:
        NotALedgerError: no ledger tables (or not a database at all).
        SchemaTooOldError: an older known revision; ``qledger upgrade`` fixes it.
        SchemaTooNewError: a revision this library does not know (written by a newer one).
        LedgerCorruptError: the file cannot be read.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        revision = current_revision(conn)
    except DBAPIError as e:
        raise translate_db_error(e, where) from e
    check_revision(revision, where)


def check_revision(revision: str | None, where: str) -> None:
    """Refuse a schema revision (None: no ledger schema at all) that is not this library's.

    Raises:
        NotALedgerError: ``revision`` is None.
        SchemaTooOldError: an older known revision; ``qledger upgrade`` fixes it.
        SchemaTooNewError: a revision this library does not know (written by a newer one).
    """
    if revision is None:
        raise NotALedgerError(
            f"{where} is a database but not a ledger (no quantum-ledger schema in it)"
        )
    if revision == HEAD_REVISION:
        return
    if revision in known_revisions():
        raise SchemaTooOldError(
            f"{where} has schema revision {revision}, older than this library's "
            f'{HEAD_REVISION}; run "qledger upgrade {where}"'
        )
    raise SchemaTooNewError(
        f"{where} has schema revision {revision}, unknown to this library (newest known: "
        f"{HEAD_REVISION}); it was written by a newer quantum-ledger: upgrade the library "
        '("pip install -U quantum-ledger")'
    )
