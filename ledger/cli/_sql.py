"""``qledger sql``: one query on a ledger through a session that cannot write.

The checks live in the library (`ledger.store.query`): this parses the
options, runs the query and prints the rows.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..store.query import DEFAULT_QUERY_TIMEOUT_S, read_only_query
from ._common import ledger_argument, make_console

# --- sql --------------------------------------------------------------------------------


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
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_QUERY_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Stop the query after this long (0: no limit).",
)
@click.option(
    "--role",
    envvar="QLEDGER_SQL_ROLE",
    metavar="NAME",
    help="PostgreSQL: run the query as this role (e.g. a read-only one; "
    "docs: threat model). Also $QLEDGER_SQL_ROLE.",
)
def sql(
    ledger: str,
    query: str,
    params: tuple[str, ...],
    as_json: bool,
    timeout: float,
    role: str | None,
) -> None:
    """Run one read-only SQL query on a ledger; print a table, or JSON lines.

    Only one statement that reads is run (SELECT, WITH ... SELECT, VALUES,
    EXPLAIN; PRAGMA table_info on SQLite, SHOW on PostgreSQL), calling only
    functions of a safe list, in a session that cannot write: UPDATE, DELETE,
    DROP, ATTACH, COMMIT, SET, COPY, pg_read_file... are refused. Ctrl-C or
    --timeout stops it.

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
    with read_only_query(ledger, query, bound, timeout=timeout or None, role=role) as result:
        columns = result.columns
        if as_json:
            for row in result:
                values = (_json_value(v) for v in row)
                click.echo(json.dumps(dict(zip(columns, values, strict=True))))
            return
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for name in columns:
            table.add_column(name)
        count = 0
        for row in result:
            count += 1
            table.add_row(*(Text("NULL", style="dim") if v is None else Text(str(v)) for v in row))
        console = make_console()
        if columns:
            console.print(table)
        console.print(f"{count} row{'' if count == 1 else 's'}")
