"""``qledger sql``: one query on a ledger through a connection that cannot write.

A SQLite ledger is opened ``mode=ro`` with ``query_only`` and an authorizer
that allows reading only, so UPDATE, DELETE, DROP, ATTACH, VACUUM or a pragma
that sets something are refused before they run. A server database runs the
query in a ``READ ONLY`` transaction that is rolled back.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table
from rich.text import Text
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from ..store.ledger import Ledger
from ..store.log import is_sqlite_target, sqlite_path
from ..store.migrate import one_line
from ._common import Failure, ledger_argument, make_console

# --- sql --------------------------------------------------------------------------------

#: Authorizer actions a read-only query needs (sqlite3 module constants).
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
#: Pragmas that only describe the database (allowed when they set nothing).
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "user_version",
        "schema_version",
        "page_count",
        "page_size",
        "encoding",
        "compile_options",
        "function_list",
    }
)


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    pragma = (arg1 or "").lower()
    # table_info(x) passes x as arg2; the two version pragmas with a value would set it.
    if (
        action == sqlite3.SQLITE_PRAGMA
        and pragma in _READ_PRAGMAS
        and (arg2 is None or pragma not in ("user_version", "schema_version"))
    ):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_query(
    path: str, query: str, params: Mapping[str, str]
) -> tuple[list[str], Iterator[tuple[Any, ...]], Callable[[], None]]:
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorize)
    try:
        cursor = conn.execute(query, dict(params))
    except sqlite3.Error as e:
        conn.close()
        if "not authorized" in str(e) or "readonly" in str(e) or "query_only" in str(e):
            raise Failure(
                "qledger sql only reads (SELECT, WITH, PRAGMA table_info ...); "
                f"SQLite refused this statement: {e}"
            ) from e
        raise Failure(f"{path}: {e}") from e
    except sqlite3.Warning as e:  # e.g. several statements at once
        conn.close()
        raise Failure(f"{path}: {e}; give one statement") from e
    columns = [d[0] for d in cursor.description or ()]
    return columns, iter(cursor), conn.close


def _server_query(
    url: str, query: str, params: Mapping[str, str]
) -> tuple[list[str], Iterator[tuple[Any, ...]], Callable[[], None]]:
    engine = create_engine(url)
    conn = engine.connect()
    try:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        result = conn.execute(text(query), dict(params))
    except DBAPIError as e:
        conn.close()
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise Failure(f"{where}: {one_line(str(e.orig))}") from e
    columns = list(result.keys()) if result.returns_rows else []

    def close() -> None:
        conn.rollback()
        conn.close()
        engine.dispose()

    return columns, (tuple(r) for r in result) if result.returns_rows else iter(()), close


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)


@click.command()
@ledger_argument
@click.argument("query")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind :NAME in the query (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per row.")
def sql(ledger: str, query: str, params: tuple[str, ...], as_json: bool) -> None:
    """Run one read-only SQL query on a ledger; print a table, or JSON lines.

    The ledger is opened read-only and only reading statements are allowed, so
    no statement can change it (UPDATE, DELETE, DROP, ATTACH... are refused).

    \b
    Example:
        qledger sql q.ledger "SELECT status, count(*) FROM quantum_status GROUP BY status"
    """
    bound: dict[str, str] = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        bound[name.lstrip(":")] = value
    with Ledger.open(ledger):  # the same checks as every command: a ledger, this schema
        pass
    if is_sqlite_target(ledger):
        columns, rows, close = _sqlite_query(sqlite_path(ledger), query, bound)
    else:
        columns, rows, close = _server_query(ledger, query, bound)
    try:
        if as_json:
            for row in rows:
                values = (_json_value(v) for v in row)
                click.echo(json.dumps(dict(zip(columns, values, strict=True))))
            return
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for name in columns:
            table.add_column(name)
        count = 0
        for row in rows:
            count += 1
            table.add_row(*(Text("NULL", style="dim") if v is None else Text(str(v)) for v in row))
        console = make_console()
        if columns:
            console.print(table)
        console.print(f"{count} row{'' if count == 1 else 's'}")
    except sqlite3.Error as e:
        raise Failure(f"{ledger}: {e}") from e
    finally:
        close()
