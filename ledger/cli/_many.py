"""Many ledgers for one command: arguments expanded once, each bad ledger one line, a summary.

Every inspecting command reads its ``LEDGER|DIR...`` arguments through a
`Ledgers`: folders are expanded by `ledger.sources.expand_ledgers`, each ledger
is read in turn, a ledger that cannot be read is one stderr line
``qledger: <ledger>: <what>`` and the command goes on with the next; at the end
a summary line counts them, and the exit code is the worst seen (2 for a ledger
that could not be read, 1 for a check that failed).

One file named alone is read as before: a problem is the command's one
``qledger: error:`` line.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

import click

from ..errors import LedgerError
from ..sources import expand_ledgers
from ..store.connect import display_target
from ._common import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEM, Failure, complete_path
from ._output import count

__all__ = ["Ledgers", "count", "ledgers_argument", "one_ledger"]

#: The ``LEDGER|DIR...`` argument of the inspecting commands.
ledgers_argument = click.argument(
    "ledgers", nargs=-1, required=True, metavar="LEDGER|DIR...", shell_complete=complete_path
)


def _what(target: str, message: str) -> str:
    """``message`` without the ledger's name in front (the line names it already)."""
    shown = display_target(target)
    for prefix in (f"{shown}: ", f"{shown} is ", f"{shown} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


class Ledgers:
    """The ledgers a command's arguments name, read one by one with problems counted.

    Raises:
        Failure: one argument alone, a folder that holds no ledger.
    """

    def __init__(self, arguments: Sequence[str]) -> None:
        expansion = expand_ledgers(arguments)
        #: The ledgers to read (paths and URLs), in order.
        self.targets = expansion.ledgers
        #: Several ledgers (or a folder): a problem is a line, not the command's error.
        self.several = len(arguments) > 1 or expansion.folders > 0
        #: Ledgers that could not be read.
        self.unreadable = 0
        #: Ledgers whose check found a problem.
        self.failed = 0
        #: The worst exit code so far.
        self.code = EXIT_OK
        if len(arguments) == 1 and expansion.problems:
            argument, what = expansion.problems[0]
            raise Failure(f"{argument}: {what}")
        for argument, what in expansion.problems:
            click.echo(f"qledger: {argument}: {what}", err=True)
            self.code = EXIT_BAD_INPUT

    def __iter__(self) -> Iterator[str]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def problem(self, target: str, message: str) -> None:
        """Report a ledger that could not be read: one stderr line; exit code 2."""
        click.echo(f"qledger: {display_target(target)}: {_what(target, message)}", err=True)
        self.unreadable += 1
        self.code = max(self.code, EXIT_BAD_INPUT)

    def check_failed(self) -> None:
        """Count a ledger whose check (verify, recover) found a problem: exit code 1."""
        self.failed += 1
        self.code = max(self.code, EXIT_PROBLEM)

    @contextlib.contextmanager
    def reading(self, target: str) -> Iterator[None]:
        """Report a `LedgerError` (or an unreadable file) raised while reading ``target``.

        With one ledger named alone, the error is the command's and propagates
        (one ``qledger: error:`` line). A closed stdout is never the ledger's
        fault, and propagates too.
        """
        try:
            yield
        except BrokenPipeError:
            raise
        except (LedgerError, OSError) as e:
            if not self.several:
                raise
            self.problem(target, str(e) or type(e).__name__)

    def summary(self) -> str | None:
        """``3 of 20 ledgers could not be read``, or None when every one could."""
        if not self.unreadable:
            return None
        return f"{self.unreadable:,} of {count(len(self.targets), 'ledger')} could not be read"

    def finish(self, ctx: click.Context) -> None:
        """Print the summary line on stderr (if a ledger could not be read); exit, worst code."""
        summary = self.summary()
        if summary is not None:
            sys.stdout.flush()  # the results first, then the summary, even through a pipe
            click.echo(f"qledger: {summary}", err=True)
        if self.code != EXIT_OK:
            ctx.exit(self.code)


def one_ledger(argument: str, command: str) -> str:
    """The one ledger a command that reads exactly one is given: a file, or a folder of one.

    Raises:
        Failure: a folder without a ledger, or with several.
    """
    many = Ledgers([argument])
    if len(many) != 1:
        raise Failure(
            f"qledger {command} reads one ledger, and {argument} holds {len(many):,}: "
            f"ingest them into one (qledger ingest central.sqlite {argument}) and "
            f"run qledger {command} on that"
        )
    return many.targets[0]
