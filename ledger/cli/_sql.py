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
from ._common import complete_path, make_console
from ._many import one_ledger

# --- sql --------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)


class _QueryCommand(click.Command):
    """A command whose QUERY may start with ``--`` (an SQL comment) without being an option.

    An argument that starts with a dash and holds a space or a line break is
    no option name: it is taken as it is (``qledger sql q.ledger "-- why\\nSELECT 1"``).
    An unknown option without one (``--jsn``) is still refused.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a.startswith("-") and any(c.isspace() for c in a) for a in args):
            ctx.ignore_unknown_options = True
            try:
                return super().parse_args(ctx, args)
            finally:
                ctx.ignore_unknown_options = False
        return super().parse_args(ctx, args)


@click.command(cls=_QueryCommand)
@click.argument("ledger", metavar="LEDGER|DIR", shell_complete=complete_path)
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
    --timeout stops it. The query may start with a comment (-- ...). A folder
    must hold one ledger: to query many, ingest them into one first.

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
    ledger = one_ledger(ledger, "sql")
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
