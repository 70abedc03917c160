"""How commands print results: the console, tables that stream, JSON and CSV values."""

from __future__ import annotations

import errno
import os

from rich.console import Console

__all__ = ["make_console"]


class _Console(Console):
    """A rich console that lets a closed stdout reach the command group (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def make_console() -> Console:
    """A console on the current stdout, without markup.

    Ids, data IDs and error messages are data and may contain brackets.
    """
    return _Console(markup=False, highlight=False, emoji=False)
