"""``qledger``: the command line. It parses, calls the library and renders; only it prints.

Exit codes: 0 ok; 1 a check found a problem (``verify``, ``recover``); 2 bad
usage or bad input (every `LedgerError` becomes one line on stderr); 3 an
unexpected error (a bug: ``--debug`` shows its traceback). Inspecting commands
open ledgers read-only and never change a byte of them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, TextIO

import click
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from .._logging import LOGGER_NAME
from .._version import __version__
from ..errors import (
    LedgerError,
    LedgerNotFoundError,
    LedgerUnavailableError,
    NotALedgerError,
    SettingsError,
)
from ..export import export_jsonl, export_prov
from ..store import connect, migrate
from ..store.ledger import Ledger
from ..store.log import is_sqlite_target, sqlite_path
from ._campaign import report_command, watch_command
from ._central import ingest_command, lineage_command
from ._checks import recover_command, verify
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Bug,
    Failure,
    ledger_argument,
    make_console,
    silence_stdout,
    stdout_reader_gone,
    write_output,
)
from ._config import load_settings, remember, set_envvars
from ._inspect import events, head, replay, show
from ._sql import sql

__all__ = ["main"]


class _Group(click.Group):
    """The command group: library errors become one line and exit code 2.

    ``--debug`` prints the traceback too, and keeps the exit code. A reader of
    stdout that leaves early (``qledger events L --json | head -1``) ends the
    command quietly with exit code 0, as ripgrep does. Option defaults come
    from the environment and the config file (see `ledger.cli._config`).
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            settings = load_settings(self)
        except SettingsError as e:
            raise Failure(str(e)) from e
        if settings.default_map:
            extra.setdefault("default_map", settings.default_map)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        remember(ctx, settings)
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader gone shows here, not at interpreter exit
            return result
        except click.exceptions.Exit:
            _flush_stdout()
            raise
        except click.exceptions.Abort:
            raise
        except BrokenPipeError as e:
            if stdout_reader_gone():
                silence_stdout()
                raise click.exceptions.Exit(EXIT_OK) from None
            raise _shown(ctx, Failure(str(e))) from e
        except Failure as e:
            raise _shown(ctx, e) from None
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            # Ctrl-C: the shell's code for SIGINT, not click's "Aborted!" with code 1
            # (which here means that a check found a problem).
            click.echo("qledger: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except (LedgerError, OSError) as e:
            raise _shown(ctx, Failure(str(e) or type(e).__name__)) from e
        except DBAPIError as e:
            # A session the server ended, or a server gone: the environment, not a bug.
            lost = migrate.translate_db_error(e, "the database server")
            if connect.connection_lost(e) or isinstance(lost, LedgerUnavailableError):
                raise _shown(ctx, Failure(str(lost))) from e
            raise _shown(ctx, _bug(e)) from e
        except Exception as e:
            raise _shown(ctx, _bug(e)) from e


def _bug(e: Exception) -> Bug:
    return Bug(f"unexpected {type(e).__name__}: {e} (a bug; rerun with --debug for the traceback)")


def _shown(ctx: click.Context, failure: Failure) -> Failure:
    """``failure``, after the traceback of the error being handled when ``--debug`` is on."""
    if ctx.params.get("debug"):
        traceback.print_exc(file=sys.stderr)
    return failure


def _flush_stdout() -> None:
    """Flush stdout before an exit; a reader gone early is no error (the exit code stays)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        silence_stdout()


# --- logging (configured here only) -----------------------------------------------


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the ``sys.stderr`` of the moment (CliRunner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(ctx: click.Context, verbose: int) -> None:
    """Send the library's log records to stderr: warnings, or more with ``-v``/``-vv``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _StderrHandler()
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger = logging.getLogger(LOGGER_NAME)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:  # put the caller's configuration back (tests call main often)
        logger.removeHandler(handler)
        logger.setLevel(previous)

    ctx.call_on_close(restore)


# --- the group ------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v info, -vv debug).")
@click.version_option(__version__, "--version", prog_name="qledger")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Inspect, verify, export and recover quantum ledgers.

    A ledger is the SQLite file (or database URL) in which a QuantumBackedButler
    recorded every call of a quantum. Inspecting commands never change it.
    Exit codes: 0 ok, 1 a check found a problem, 2 bad usage or input, 3 a bug.

    Settings: the command line, else the environment (QLEDGER_CENTRAL: the
    central ledger for ingest, lineage, watch and report when given none;
    QLEDGER_<COMMAND>_<OPTION>, e.g. QLEDGER_INGEST_JOBS=4), else the config
    file ($QLEDGER_CONFIG, or ~/.config/qledger/config.toml), else defaults.
    Shell completion: eval "$(_QLEDGER_COMPLETE=bash_source qledger)".

    \b
    Example:
        qledger demo
    """
    _configure_logging(ctx, verbose)


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
        engine.dispose()
    return before, after


@main.command()
@ledger_argument
def upgrade(ledger: str) -> None:
    """Upgrade a ledger's schema to this library's (with the shipped migrations).

    Migrations only add: recorded events are never rewritten.

    \b
    Example:
        qledger upgrade old.ledger
    """
    before, after = _upgrade(ledger)
    where = connect.display_target(ledger)
    if before == after:
        click.echo(f"{where} is at schema {after} already; nothing to do")
    else:
        click.echo(f"upgraded {where} from schema {before} to {after}")


# --- export -----------------------------------------------------------------------------


@main.command()
@ledger_argument
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["jsonl", "prov-json"]),
    default="jsonl",
    show_default=True,
    help="jsonl: every row as stored, one per line; prov-json: W3C PROV-JSON.",
)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
def export(ledger: str, fmt: str, output: str | None) -> None:
    """Export a ledger as JSON lines (its rows) or as W3C PROV-JSON.

    \b
    Example:
        qledger export q.ledger --format prov-json -o q.prov.json
    """
    with Ledger.open(ledger) as led:
        if fmt == "jsonl":
            write_output(output, lambda f: export_jsonl(led, f), inputs=[ledger])
        else:
            document = export_prov(led)
            write_output(
                output,
                lambda f: f.write(json.dumps(document, indent=2) + "\n"),
                inputs=[ledger],
            )


# --- demo -------------------------------------------------------------------------------


@main.command()
@click.argument("directory", required=False, metavar="[DIR]")
@click.option(
    "--no-recovery",
    is_flag=True,
    help="Stop after running the pipeline: leave the failed and killed quanta to recover.",
)
def demo(directory: str | None, no_recovery: bool) -> None:
    """Run a small pipeline with a failure and a killed quantum; recover and retry.

    Twenty quanta of three tasks (isr, calibrate, coadd) write real files into
    a FileDatastore, each recorded in its own ledger; one fails with an
    exception and one is killed with SIGKILL mid-way. The demo then shows
    status, provenance, the recovery report and a successful retry (or, with
    --no-recovery, stops after the status for you to try recovery yourself).
    DIR must be new or empty; without it a temporary folder is used (and printed).

    \b
    Example:
        qledger demo /tmp/qledger-demo
    """
    from .._demo import run_demo

    run_demo(directory, make_console(), invoke=_invoke, recovery=not no_recovery)


def _invoke(args: Sequence[str]) -> int:
    """Run a qledger command in this process (for the demo); its exit code."""
    code = main.main(args=list(args), prog_name="qledger", standalone_mode=False)
    return int(code or 0)


for _command in (
    show,
    events,
    replay,
    head,
    verify,
    recover_command,
    sql,
    ingest_command,
    lineage_command,
    watch_command,
    report_command,
):
    main.add_command(_command)
set_envvars(main)
