"""Commands that change or produce files: ``upgrade`` a schema, ``export`` a ledger, ``demo``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import IO

import click
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from ..errors import LedgerNotFoundError, NotALedgerError
from ..export import export_jsonl, export_prov, merge_prov
from ..store import connect, migrate
from ..store.ledger import Ledger
from ..store.log import finish_sqlite_file, is_sqlite_target, sqlite_path
from ._common import ledger_argument, make_console, write_output
from ._many import Ledgers, ledgers_argument
from ._output import as_on_terminal, json_line

__all__ = ["demo", "export", "upgrade"]

# --- upgrade ---------------------------------------------------------------------------


def _upgrade(target: str) -> tuple[str, str]:
    """Upgrade a ledger's schema with the shipped migrations: (revision before, after)."""
    engine: Engine
    if is_sqlite_target(target):
        path = sqlite_path(target)
        if path == ":memory:" or not os.path.isfile(path):
            raise LedgerNotFoundError(f"no ledger at {path}")
        engine = create_engine("sqlite:///" + os.path.abspath(path))
    else:
        engine = connect.server_engine(target)
    where = connect.display_target(target)
    try:
        with engine.begin() as conn:
            before = migrate.current_revision(conn)
            if before is None:
                raise NotALedgerError(
                    f"{where} is a database but not a ledger (no quantum-ledger schema in it); "
                    "upgrade only upgrades ledgers"
                )
            if before == migrate.HEAD_REVISION:
                return before, before
            if before not in migrate.known_revisions():
                migrate.check_schema(conn, where)  # raises SchemaTooNewError
            migrate.upgrade(conn)
            after = migrate.current_revision(conn) or ""
    except DBAPIError as e:
        raise migrate.translate_db_error(e, where) from e
    finally:
        if is_sqlite_target(target):  # left self-contained: readable by anyone
            finish_sqlite_file(sqlite_path(target), engine.dispose)
        else:
            engine.dispose()
    return before, after


@click.command()
@ledger_argument
@click.option(
    "--json", "as_json", is_flag=True, help="Print {ledger, before, after} as one JSON object."
)
def upgrade(ledger: str, as_json: bool) -> None:
    """Upgrade a ledger's schema to this library's (with the shipped migrations).

    Migrations only add: recorded events are never rewritten.

    \b
    Example:
        qledger upgrade old.ledger
    """
    before, after = _upgrade(ledger)
    where = connect.display_target(ledger)
    if as_json:
        click.echo(json_line({"ledger": where, "before": before, "after": after}))
    elif before == after:
        click.echo(f"{where} is at schema {after} already; nothing to do")
    else:
        click.echo(f"upgraded {where} from schema {before} to {after}")


# --- export -----------------------------------------------------------------------------


#: --format's values; ``prov`` is short for ``prov-json``.
_EXPORT_FORMATS = {"jsonl": "jsonl", "prov-json": "prov-json", "prov": "prov-json"}


def _export_jsonl(many: Ledgers, out: IO[str]) -> None:
    """Each ledger's JSON lines in turn (with several, a ledger's once it was read whole)."""
    if not many.several:
        with Ledger.open(many.targets[0]) as led:
            export_jsonl(led, out)
        return
    for target in many:
        with (
            tempfile.SpooledTemporaryFile(16 << 20, "w+", encoding="utf-8") as lines,
            many.reading(target),
            Ledger.open(target) as led,
        ):
            export_jsonl(led, lines)
            lines.seek(0)
            shutil.copyfileobj(lines, out)


@click.command()
@ledgers_argument
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(list(_EXPORT_FORMATS), case_sensitive=False),
    default="jsonl",
    show_default=True,
    help="jsonl: every row as stored, one per line; prov-json (or prov): W3C PROV-JSON.",
)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@click.pass_context
def export(ctx: click.Context, ledgers: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Export ledgers as JSON lines (their rows) or as W3C PROV-JSON.

    Given several ledgers or a folder, jsonl holds each ledger's lines in
    turn, each ledger's starting with its "ledger" record (which names its
    source); prov-json is one document with every ledger's quanta (a dataset
    one wrote and another read is one entity). A ledger that cannot be read
    is one line on stderr, and left out.

    \b
    Example:
        qledger export q.ledger --format prov-json -o q.prov.json
        qledger export ledgers/ -o campaign.jsonl
    """
    many = Ledgers(ledgers)
    if _EXPORT_FORMATS[fmt.lower()] == "jsonl":
        write_output(output, lambda f: _export_jsonl(many, f), inputs=many.targets)
    else:
        documents = []
        for target in many:
            with many.reading(target), Ledger.open(target) as led:
                documents.append(export_prov(led))
        if documents:
            document = merge_prov(documents) if many.several else documents[0]
            write_output(
                output,
                lambda f: f.write(json.dumps(document, indent=2) + "\n"),
                inputs=many.targets,
            )
    many.finish(ctx)


# --- demo -------------------------------------------------------------------------------


@click.command()
@click.argument("directory", required=False, metavar="[DIR]")
@click.option(
    "--no-recovery",
    is_flag=True,
    help="Stop after running the pipeline: leave the failed and killed quanta to recover.",
)
def demo(directory: str | None, no_recovery: bool) -> None:
    """Run a small pipeline with a failure and a killed quantum; recover and retry.

    A pipeline of 20 quanta of three tasks (isr, calibrate, coadd) writes real
    files into a FileDatastore, each quantum recorded in its own ledger; one
    fails with an exception and one is killed with SIGKILL mid-way, so 18 run
    at first and the last two coadds wait for their inputs. The demo then
    shows status, provenance, the recovery report, a successful retry and the
    two coadds (or, with --no-recovery, stops after the status for you to try
    recovery yourself).
    DIR must be new or empty; without it a temporary folder is used (and printed).

    \b
    Example:
        qledger demo /tmp/qledger-demo
    """
    from .._demo import run_demo

    run_demo(directory, make_console(), invoke=_invoke, recovery=not no_recovery)


def _invoke(args: Sequence[str]) -> int:
    """Run a qledger command in this process (for the demo); its exit code."""
    from . import main  # the group, which imports this module lazily

    with as_on_terminal():  # the demo is told to people, even when piped
        code = main.main(args=list(args), prog_name="qledger", standalone_mode=False)
    return int(code or 0)
