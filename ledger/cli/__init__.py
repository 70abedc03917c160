"""``qledger``: the command line. It parses, calls the library and renders; only it prints.

Exit codes: 0 ok; 1 a check found a problem (``verify``, ``recover``); 2 bad
usage or bad input (every `LedgerError` becomes one line on stderr); 3 an
unexpected error (a bug: ``--debug`` shows its traceback). Inspecting commands
open ledgers read-only and never change a byte of them.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from typing import Any, TextIO

import click

from .._logging import LOGGER_NAME
from .._version import __version__
from ..errors import LedgerError, SettingsError
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Bug,
    Failure,
    silence_stdout,
    stdout_reader_gone,
)
from ._config import load_settings, remember, set_command_envvars, set_envvars

__all__ = ["main"]

#: Every command: the module that defines it (in this package), the function, and its
#: one-line summary. ``qledger --help`` lists the summaries without importing any module
#: (a test holds each equal to the command's own); a command's module (SQLAlchemy,
#: pydantic, rich ...) is imported only when that command runs or shows its help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "_admin",
        "demo",
        "Run a small pipeline with a failure and a killed quantum; recover and retry.",
    ),
    "events": (
        "_inspect",
        "events",
        "List events in order; filter by kind, dataset, outcome, attempt.",
    ),
    "export": (
        "_admin",
        "export",
        "Export ledgers as JSON lines (their rows) or as W3C PROV-JSON.",
    ),
    "head": (
        "_inspect",
        "head",
        "Print each quantum's chain head (JSON), to keep elsewhere for verify --head.",
    ),
    "ingest": (
        "_central",
        "ingest_command",
        "Copy ledger files into a central ledger (a SQLite file or a PostgreSQL URL).",
    ),
    "lineage": (
        "_central",
        "lineage_command",
        "Show the quanta that made a dataset, and what they read, up the chain.",
    ),
    "recover": (
        "_checks",
        "recover_command",
        "Report failed and interrupted quanta: ending, outputs, orphans; exit 1 if any.",
    ),
    "replay": (
        "_inspect",
        "replay",
        "Replay a quantum's events into its provenance (QuantumProvenanceData JSON).",
    ),
    "report": (
        "_campaign",
        "report_command",
        "Write a campaign report as one self-contained HTML file.",
    ),
    "run-qbb": (
        "_lsst",
        "run_qbb_command",
        "Run a quantum graph as pipetask run-qbb does, each quantum in a ledger.",
    ),
    "show": (
        "_inspect",
        "show",
        "Show the quanta of ledgers or folders: status, attempts, counts and times.",
    ),
    "sql": (
        "_sql",
        "sql",
        "Run one read-only SQL query on a ledger; print a table, JSON lines or CSV.",
    ),
    "upgrade": (
        "_admin",
        "upgrade",
        "Upgrade a ledger's schema to this library's (with the shipped migrations).",
    ),
    "verify": (
        "_checks",
        "verify",
        "Verify hash chains, recorded heads and artifacts; exit 1 on any problem.",
    ),
    "watch": (
        "_campaign",
        "watch_command",
        "Watch a campaign live: quanta per task and status, failures, rate.",
    ),
}


class _Group(click.Group):
    """The command group: library errors become one line and exit code 2.

    ``--debug`` prints the traceback too, and keeps the exit code. A reader of
    stdout that leaves early (``qledger events L --json | head -1``) ends the
    command quietly with exit code 0, as ripgrep does. Option defaults come
    from the environment and the config file (see `ledger.cli._config`).
    Commands are imported when first asked for (see `COMMANDS`).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            module_name, attribute, _ = COMMANDS[cmd_name]
            module = importlib.import_module(f"{__name__}.{module_name}")
            command = getattr(module, attribute)
            assert isinstance(command, click.Command)
            set_command_envvars(cmd_name, command)
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, from `COMMANDS`: no command module is imported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if not loaded.hidden:
                    rows.append((name, loaded.get_short_help_str(limit)))
            else:
                stand_in = click.Command(name, help=COMMANDS[name][2])  # click shortens it
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
        except Exception as e:
            raise _shown(ctx, _environment_failure(e) or _bug(e)) from e


def _environment_failure(e: Exception) -> Failure | None:
    """A session the server ended, or a server gone: the environment, not a bug."""
    exc = sys.modules.get("sqlalchemy.exc")  # not imported: no database error can be raised
    if exc is None or not isinstance(e, exc.DBAPIError):
        return None
    from ..errors import LedgerUnavailableError
    from ..store import connect, migrate

    lost = migrate.translate_db_error(e, "the database server")
    if connect.connection_lost(e) or isinstance(lost, LedgerUnavailableError):
        return Failure(str(lost))
    return None


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


@click.group(
    cls=_Group,
    invoke_without_command=True,  # bare ``qledger``: the help and exit code 0, as git does
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        return
    _configure_logging(ctx, verbose)


set_envvars(main)
