"""``qledger sql``: one query on a ledger through a session that cannot write.

The checks live in the library (`ledger.store.query`): this parses the
options, runs the query and prints the rows.
"""

from __future__ import annotations

import csv
import json
from typing import Any

import click

from ..store.query import DEFAULT_QUERY_TIMEOUT_S, read_only_query
from ._common import complete_path
from ._many import one_ledger
from ._output import Column, Lines, TableWriter, count, is_terminal, jsonable, summary

# --- sql --------------------------------------------------------------------------------

#: Result columns printed as JSON values by ``--json`` when their text holds JSON: the
#: names of the schema's JSON columns (data IDs, dimensions, records, details) and the
#: ``caveats`` of the ``quantum_status`` view. Written out, not derived from the schema's
#: tables (building those imports SQLAlchemy at every start); a test holds them equal.
JSON_COLUMNS = frozenset(
    {"caveats", "data_id", "datastore_records", "detail", "dimensions", "records"}
)


def _json_value(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # not JSON after all: as it is
    return jsonable(value)


def _text(value: Any) -> str:
    """A value as a table or CSV shows it (bytes in hex, like --json)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return "" if value is None else str(value)


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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per row (JSON columns as JSON values).",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: a header row, then the rows.")
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
    as_csv: bool,
    timeout: float,
    role: str | None,
) -> None:
    """Run one read-only SQL query on a ledger; print a table, JSON lines or CSV.

    Only one statement that reads is run (SELECT, WITH ... SELECT, VALUES,
    EXPLAIN; PRAGMA table_info on SQLite, SHOW on PostgreSQL), calling only
    functions of a safe list, in a session that cannot write: UPDATE, DELETE,
    DROP, ATTACH, COMMIT, SET, COPY, pg_read_file... are refused. Ctrl-C or
    --timeout stops it. The query may start with a comment (-- ...). A folder
    must hold one ledger: to query many, ingest them into one first. The table
    streams: aligned on a terminal (NULL shown as NULL), tab-separated values
    elsewhere (NULL as an empty value; --json tells NULL from ''). --json prints
    the schema's JSON columns (data_id, dimensions, datastore_records, detail,
    caveats) as JSON values.

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
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    ledger = one_ledger(ledger, "sql")
    with read_only_query(ledger, query, bound, timeout=timeout or None, role=role) as result:
        columns = result.columns
        if as_json:
            lines = Lines()
            for row in result:
                values = {name: _json_value(name, v) for name, v in zip(columns, row, strict=True)}
                lines.write(json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n")
            lines.close()
            return
        if as_csv:
            writer = csv.writer(Lines())  # RFC 4180: CRLF, so a lone CR in a value is quoted
            writer.writerow(columns)
            for row in result:
                writer.writerow([_text(v) for v in row])
            return
        terminal = is_terminal()
        if not columns:
            summary(count(0, "row"), terminal=terminal)
            return
        table = TableWriter([Column(name) for name in columns], terminal=terminal)
        if terminal:
            for row in result:
                table.add([("NULL", "dim") if v is None else _text(v) for v in row])
        else:
            for row in result:
                table.add([_text(v) for v in row])
        table.close()
    summary(count(table.rows, "row"), terminal=terminal)
