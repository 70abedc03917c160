"""Shared by the commands: the one-line error, console and output helpers, id resolution."""

from __future__ import annotations

import json
import os
import re
import select
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from ..errors import LedgerError, OverwriteRefusedError

if TYPE_CHECKING:
    from rich.console import Console

    from ..store.ledger import Ledger

#: Exit code when all went well, and when the reader of stdout left early (``| head``).
EXIT_OK = 0
#: Exit code when a check (verify, recover) found a problem.
EXIT_PROBLEM = 1
#: Exit code for bad usage or bad input (click uses it for usage errors too).
EXIT_BAD_INPUT = 2
#: Exit code for an unexpected error: a bug.
EXIT_BUG = 3
#: Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "blue", "interrupted": "yellow"}


# --- errors and output ------------------------------------------------------------


class Failure(click.ClickException):
    """An error shown as one line, ``qledger: error: ...``, with exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        from ..store.migrate import one_line  # here: the group's --help imports no SQLAlchemy

        super().__init__(one_line(message))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"qledger: error: {self.format_message()}", err=True)


class Bug(Failure):
    """An unexpected error (a bug), shown as one line with exit code 3."""

    exit_code = EXIT_BUG


def make_console() -> Console:
    """A console on the current stdout, without markup (see `ledger.cli._output`)."""
    from ._output import make_console

    return make_console()


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe or socket whose reader has closed it (``| head -1`` ended)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (e.g. a test's buffer)
        return False
    if not hasattr(select, "poll"):
        return True  # no way to ask: a broken pipe while printing is stdout's, most likely
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout at the null device, so that what is still buffered goes nowhere quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


_SQLITE_MAGIC = (b"SQLite format 3\x00", b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")  # file, WAL


def _is_sqlite_file(path: str) -> bool:
    if not os.path.isfile(path):
        return False  # a device or a FIFO: reading it could block
    try:
        with open(path, "rb") as f:
            start = f.read(16)
    except OSError:
        return False
    return start.startswith(_SQLITE_MAGIC)


def check_output(path: str, inputs: Iterable[str] = ()) -> None:
    """Refuse an output path that would replace a ledger or a file the command reads.

    The same file under any name counts (a symlink, a hard link), and so do an
    input ledger's ``-wal``, ``-shm`` and ``-journal`` files.

    Raises:
        OverwriteRefusedError: ``path`` is a directory, an input, or a SQLite file.
    """
    if not os.path.exists(path):
        return
    from ..store.connect import is_sqlite_target, sqlite_path

    if os.path.isdir(path):
        raise OverwriteRefusedError(f"output {path} is a directory: give a file name (-o FILE)")
    for item in inputs:
        if not is_sqlite_target(item) or sqlite_path(item) == ":memory:":
            continue
        source = sqlite_path(item)
        for name in (source, f"{source}-wal", f"{source}-shm", f"{source}-journal"):
            try:
                same = os.path.samefile(path, name)
            except OSError:
                continue
            if same:
                what = "" if name == source else f" (its {name[len(source) + 1 :]} file)"
                raise OverwriteRefusedError(
                    f"output {path} is {item}{what}, which this command reads: writing there "
                    "would destroy it; give another file name (-o FILE)"
                )
    if _is_sqlite_file(path):
        raise OverwriteRefusedError(
            f"output {path} is a SQLite database (a ledger?): qledger never writes over one; "
            "give another file name (-o FILE)"
        )


def _current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def output_mode(path: str | os.PathLike[str], inputs: Iterable[str] = ()) -> int:
    """The permission bits of an output file, as a shell redirection would give them.

    An existing file keeps its mode. A new one gets ``0666 & ~umask``, but never
    more readable than the ledgers it is made from: a ledger only its owner may
    read (0600) gives an export only its owner may read, whatever the umask.
    """
    try:
        st = os.stat(path)
    except OSError:
        pass
    else:
        return stat.S_IMODE(st.st_mode)
    from ..store.connect import is_sqlite_target, sqlite_path  # lazy: start-up

    mode = 0o666 & ~_current_umask()
    for item in inputs:
        if not is_sqlite_target(item) or sqlite_path(item) == ":memory:":
            continue
        try:
            source = os.stat(sqlite_path(item)).st_mode
        except OSError:
            continue
        allowed = 0o600
        if source & stat.S_IRGRP:
            allowed |= 0o060
        if source & stat.S_IROTH:
            allowed |= 0o006
        mode &= allowed
    return mode


def write_output(
    path: str | None, write: Callable[[IO[str]], object], *, inputs: Iterable[str] = ()
) -> None:
    """Write to ``path`` atomically (temp file, then rename), or to stdout.

    The file gets the mode of `output_mode`. An error of the file system names
    ``path``, never the temporary file beside it.

    Raises:
        OverwriteRefusedError: ``path`` is one of ``inputs`` or a ledger (see `check_output`).
        Failure: ``path`` cannot be written (no such folder, no permission, disk full).
    """
    if path is None or path == "-":
        write(sys.stdout)
        return
    inputs = list(inputs)
    check_output(path, inputs)
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            # /dev/null, /dev/stdout, a FIFO: write into it; renaming over it would replace it.
            with open(path, "w", encoding="utf-8") as f:
                write(f)
            return
        _write_atomically(Path(path), write, output_mode(path, inputs))
    except LedgerError:
        raise
    except OSError as e:
        raise Failure(f"cannot write {path}: {e.strerror or e}") from e


def _write_atomically(target: Path, write: Callable[[IO[str]], object], mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
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


#: At most this many candidates are listed when an id prefix is ambiguous.
CANDIDATES_LISTED = 10

#: What names a row of a table whose ids commands accept as prefixes.
_LABELS = {"quanta": "task_label", "datasets": "dataset_type"}


def _candidates(led: Ledger, ids: list[str], table: str, column: str) -> str:
    """``3f2a9c1e-... isr (visit=1 detector=2)`` for each id, ``; `` between them."""
    label = _LABELS.get(table)
    if label is None:
        return "; ".join(ids)
    marks = ", ".join("?" for _ in ids)
    described = {
        str(row[0]): f"{row[1]} ({fmt_data_id(row[2])})"
        for row in led.rows(
            f"SELECT CAST({column} AS TEXT), {label}, data_id FROM {table} "
            f"WHERE CAST({column} AS TEXT) IN ({marks})",
            ids,
        )
    }
    return "; ".join(f"{one} {described.get(one, '')}".rstrip() for one in ids)


def resolve_id(
    led: Ledger,
    value: str | None,
    table: str,
    column: str,
    what: str,
    *,
    missing_ok: bool = False,
) -> str | None:
    """A full id from a full id or a unique prefix of at least 4 characters.

    With ``missing_ok``, an id (or prefix) the ledger does not hold gives None
    (one of several ledgers); else a full id is returned as given, for the
    library to name a missing one, and a prefix that matches nothing fails.

    Raises:
        Failure: not an id; a prefix that matches nothing, or several (listed).
    """
    if value is None:
        return None
    try:
        full = str(uuid.UUID(value))
    except ValueError:
        full = None
    if full is not None:
        if not missing_ok:
            return full
        sql = f"SELECT 1 FROM {table} WHERE CAST({column} AS TEXT) = ? LIMIT 1"
        return full if list(led.rows(sql, [full])) else None
    prefix = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f][0-9a-f-]{3,35}", prefix):
        raise Failure(f"{value!r} is not a {what} id (a UUID, or its first 4 or more characters)")
    found = [
        str(row[0])
        for row in led.rows(
            f"SELECT DISTINCT CAST({column} AS TEXT) FROM {table} "
            f"WHERE CAST({column} AS TEXT) LIKE ? ORDER BY 1 LIMIT {CANDIDATES_LISTED + 1}",
            [prefix + "%"],
        )
    ]
    if not found:
        if missing_ok:
            return None
        raise Failure(f"{led.where} holds no {what} whose id starts with {prefix}")
    if len(found) > 1:
        listed = _candidates(led, found[:CANDIDATES_LISTED], table, column)
        more = ", and more" if len(found) > CANDIDATES_LISTED else ""
        raise Failure(
            f"{what} id prefix {prefix} is ambiguous in {led.where}: give more of it; "
            f"it starts {listed}{more}"
        )
    return found[0]


def resolve_quantum(led: Ledger, value: str | None, *, missing_ok: bool = False) -> str | None:
    """The quantum id named by ``--quantum`` (full or a prefix), or None."""
    return resolve_id(led, value, "quanta", "quantum_id", "quantum", missing_ok=missing_ok)


def complete_path(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of a ledger argument: files and folders (a URL is typed out)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


ledger_argument = click.argument("ledger", metavar="LEDGER", shell_complete=complete_path)
quantum_option = click.option(
    "--quantum",
    "-q",
    metavar="ID",
    help="The quantum (its id, or the first characters of it); "
    "needed when the ledger holds several.",
)
