"""Shared by the commands: the one-line error, console and output helpers, id resolution."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console

from ..store.ledger import Ledger
from ..store.migrate import one_line  # Failure's message on one line

#: Exit code when a check (verify, recover) found a problem.
EXIT_PROBLEM = 1
#: Exit code for bad usage or bad input (click uses it for usage errors too).
EXIT_BAD_INPUT = 2
#: Exit code for an unexpected error: a bug.
EXIT_BUG = 3

STATUS_STYLE = {"succeeded": "green", "failed": "red", "interrupted": "yellow"}


# --- errors and output ------------------------------------------------------------


class Failure(click.ClickException):
    """An error shown as one line, ``qledger: error: ...``, with exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"qledger: error: {self.format_message()}", err=True)


class Bug(Failure):
    """An unexpected error (a bug), shown as one line with exit code 3."""

    exit_code = EXIT_BUG


def make_console() -> Console:
    """A console on the current stdout, without markup.

    Ids, data IDs and error messages are data and may contain brackets.
    """
    return Console(markup=False, highlight=False, emoji=False)


def write_output(path: str | None, write: Callable[[IO[str]], object]) -> None:
    """Write to ``path`` atomically (temp file, then rename), or to stdout."""
    if path is None or path == "-":
        write(sys.stdout)
        return
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fmt_time(value: str | None, *, date: bool = True) -> str:
    """An ISO-8601 time as ``YYYY-MM-DD HH:MM:SS`` (or the time of day only)."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def fmt_data_id(value: str | Mapping[str, Any]) -> str:
    """A data ID (JSON text or a mapping) as ``key=value key=value``."""
    values = json.loads(value) if isinstance(value, str) else value
    return " ".join(f"{k}={v}" for k, v in values.items())


def short_id(value: object) -> str:
    """The first 8 characters of an id, as tables show it (commands accept it back)."""
    return str(value)[:8] if value is not None else ""


# --- parameters ---------------------------------------------------------------------


def parse_until(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> int | datetime | None:
    """``--until``: a quantum_seq (an integer) or an ISO-8601 time."""
    if value is None:
        return None
    text_value = value.strip()
    if text_value.isdigit():
        return int(text_value)
    try:
        return datetime.fromisoformat(text_value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a quantum_seq (an integer) nor an ISO-8601 time "
            "(e.g. 2026-01-31T12:00:00+00:00)"
        ) from None


def resolve_id(led: Ledger, value: str | None, table: str, column: str, what: str) -> str | None:
    """A full id from a full id or a unique prefix of at least 4 characters."""
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    prefix = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f][0-9a-f-]{3,35}", prefix):
        raise Failure(f"{value!r} is not a {what} id (a UUID, or its first 4 or more characters)")
    found = [
        row[0]
        for row in led.rows(
            f"SELECT DISTINCT CAST({column} AS TEXT) FROM {table} "
            f"WHERE CAST({column} AS TEXT) LIKE ? LIMIT 2",
            [prefix + "%"],
        )
    ]
    if not found:
        raise Failure(f"{led.target} holds no {what} whose id starts with {prefix}")
    if len(found) > 1:
        raise Failure(f"{what} id prefix {prefix} is ambiguous in {led.target}: give more of it")
    return str(found[0])


def resolve_quantum(led: Ledger, value: str | None) -> str | None:
    """The quantum id named by ``--quantum`` (full or a prefix), or None."""
    return resolve_id(led, value, "quanta", "quantum_id", "quantum")


ledger_argument = click.argument("ledger", metavar="LEDGER")
quantum_option = click.option(
    "--quantum",
    "-q",
    metavar="ID",
    help="The quantum (its id, or the first characters of it); "
    "needed when the ledger holds several.",
)
