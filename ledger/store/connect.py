"""Connecting to a ledger's database server: the URL checked, its password hidden, timeouts.

Every server connection the library makes goes through `server_engine`, so a
URL with an unknown database or driver, or one that does not parse, is a named
`LedgerUrlError` before anything connects, and a server that accepts a
connection and never answers fails after `connect_timeout` seconds instead of
hanging the command. `display_target` is the one way a target is shown in a
message, a log line or a file: a URL's password never appears.

SQLAlchemy is imported only where a URL is parsed or a server reached: a
command that reads a SQLite file never imports it (its import is most of a
short command's start-up).
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

from ..errors import LedgerUrlError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

__all__ = [
    "CONNECT_TIMEOUT_ENV",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "connect_timeout",
    "connection_lost",
    "display_target",
    "driver_error",
    "is_sqlite_target",
    "server_engine",
    "server_url",
    "sqlite_path",
]

#: Environment variable: seconds to wait for a server to answer a new connection.
CONNECT_TIMEOUT_ENV = "QLEDGER_CONNECT_TIMEOUT"
#: Seconds to wait for a server to answer a new connection, unless told otherwise.
DEFAULT_CONNECT_TIMEOUT_S = 10
#: libpq's smallest useful timeout: it counts whole seconds and treats 1 as 2.
_MIN_CONNECT_TIMEOUT_S = 2

#: ``://user:password@`` in a URL (the password may hold ``@``: up to the last one).
_URL_PASSWORD = re.compile(r"(://[^:/?#@]*:)[^/?#]*@")
#: ``password=...`` in a URL's query string or a keyword/value connection string.
_KEYWORD_PASSWORD = re.compile(r"(?i)((?:^|[?&;\s])password\s*=\s*)('[^']*'|[^&;\s]*)")
#: SQLSTATE classes and codes of a connection that is gone or was never made:
#: 08 connection exception; 57P01-57P05 admin/crash shutdown, cannot connect now,
#: database dropped, idle session timeout (the server ended the session).
_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03", "57P04", "57P05")


def is_sqlite_target(target: str | os.PathLike[str]) -> bool:
    """True for a file path, ``:memory:`` or a ``sqlite://`` URL."""
    value = os.fspath(target)
    return "://" not in value or value.startswith("sqlite")


def sqlite_path(target: str | os.PathLike[str]) -> str:
    """The filesystem path (or ``:memory:``) of a SQLite target."""
    value = os.fspath(target)
    if value.startswith("sqlite"):
        _, _, rest = value.partition(":///")
        return rest or ":memory:"
    return value


def driver_error(e: BaseException) -> BaseException:
    """The driver's own exception: ``e`` itself, or the one SQLAlchemy wrapped in it."""
    exc = sys.modules.get("sqlalchemy.exc")  # not imported: nothing can have been wrapped
    if exc is not None and isinstance(e, exc.DBAPIError) and e.orig is not None:
        orig: BaseException = e.orig
        return orig
    return e


def display_target(target: str | os.PathLike[str]) -> str:
    """A ledger target as messages, logs and files show it: any password replaced by ``***``.

    A path is shown as it is; a URL that SQLAlchemy can parse is rendered by
    it with the password hidden, and one it cannot parse is masked by pattern.
    """
    value = os.fspath(target)
    if "://" in value:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            value = make_url(value).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            value = _URL_PASSWORD.sub(r"\1***@", value)
    return _KEYWORD_PASSWORD.sub(r"\1***", value)


def server_url(target: str) -> URL:
    """The parsed URL of a server database whose dialect and driver are installed.

    Raises:
        LedgerUrlError: the URL does not parse, names a database SQLAlchemy does
            not know (``postgres://``, ``foo://``), or its driver is not installed.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = display_target(target)
    try:
        url = make_url(target)
    except (ArgumentError, ValueError) as e:
        raise LedgerUrlError(
            f"{shown} is not a database URL ({e}); give a SQLite file path or a URL "
            "such as postgresql+psycopg://USER@HOST:5432/DATABASE"
        ) from e
    try:
        dialect = url.get_dialect()
    except ArgumentError as e:  # NoSuchModuleError: no such dialect
        hint = (
            "for PostgreSQL write postgresql+psycopg://USER@HOST:5432/DATABASE"
            if url.get_backend_name() in ("postgres", "pg", "psql", "pgsql")
            else "give a SQLite file path or a URL such as "
            "postgresql+psycopg://USER@HOST:5432/DATABASE"
        )
        raise LedgerUrlError(
            f"{shown}: {url.drivername!r} is not a database URL scheme this library "
            f"can use (SQLAlchemy has no such dialect); {hint}"
        ) from e
    try:
        dialect.import_dbapi()
    except ImportError as e:
        extra = (
            ' (pip install "quantum-ledger[postgres]" for postgresql+psycopg)'
            if url.get_backend_name() == "postgresql"
            else ""
        )
        raise LedgerUrlError(
            f"{shown}: the driver for {url.drivername} is not installed ({e}); install it"
            f"{extra}, or name an installed driver in the URL"
        ) from e
    return url


def connect_timeout() -> int:
    """Seconds a new server connection may take: ``$QLEDGER_CONNECT_TIMEOUT`` or 10.

    Raises:
        LedgerUrlError: the variable is set to something that is not a whole number.
    """
    value = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        seconds = int(value)
    except ValueError:
        raise LedgerUrlError(
            f"{CONNECT_TIMEOUT_ENV}={value!r} is not a whole number of seconds"
        ) from None
    return max(seconds, _MIN_CONNECT_TIMEOUT_S)


def server_engine(target: str, **options: Any) -> Engine:
    """An engine on a server database whose connections time out instead of hanging.

    On PostgreSQL each connection gets ``connect_timeout`` (unless the URL sets
    one) and ``application_name=qledger`` (unless set), so an operator sees in
    ``pg_stat_activity`` what a session is. ``options`` go to `create_engine`.

    Raises:
        LedgerUrlError: as for `server_url`.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError

    url = server_url(target)
    if url.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = dict(options.pop("connect_args", {}))
        if "connect_timeout" not in url.query:
            connect_args.setdefault("connect_timeout", connect_timeout())
        if "application_name" not in url.query:
            connect_args.setdefault("application_name", "qledger")
        options["connect_args"] = connect_args
    try:
        return create_engine(url, **options)
    except (ArgumentError, ValueError, TypeError) as e:
        raise LedgerUrlError(f"{display_target(target)}: cannot connect with this URL ({e})") from e


def connection_lost(e: BaseException) -> bool:
    """Whether a driver error says the connection is gone (or was never made).

    True for a connection SQLAlchemy invalidated (the server closed it, the
    backend was terminated), and for SQLSTATE class 08 and 57P01-57P05.
    """
    original = driver_error(e)
    if original is not e and getattr(e, "connection_invalidated", False):
        return True
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return isinstance(state, str) and state.startswith(_LOST_SQLSTATES)
