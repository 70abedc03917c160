"""How commands print results: tables that stream, JSON lines, counts and times.

The rules, for every command:

- **Tables stream.** Rows are printed as they are read, never gathered first.
  On a terminal the columns are aligned (their widths taken from the first
  rows, widened if a later value is longer; a value is never cut) with a
  bold header and colours; when stdout is not a terminal (a pipe, a file)
  the table is *tab-separated values*: a header line, then one line per row,
  each value in full, with backslash, tab, newline and carriage return
  written ``\\\\``, ``\\t``, ``\\n``, ``\\r`` (PostgreSQL's text format). What
  is not the table (the summary line after it) then goes to stderr, so that
  stdout holds only the table (``QLEDGER_TERMINAL=1`` prints as on a terminal
  anyway). Rich's `Table` is kept for reports that fit
  on a screen: it lays out ~2,000 rows a second, too slow for a million.
- **JSON is one format.** ``--json`` prints one object per line (or one
  document); ids as text, times as ISO-8601 in UTC exactly as stored
  (``2026-01-31T12:00:00.123456+00:00``), JSON columns (``data_id``,
  ``detail``, ``caveats``...) as JSON values, never as text holding JSON.
- **Counts** read ``1 quantum``, ``2 quanta``, with thousands separators.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "Column",
    "Lines",
    "TableWriter",
    "as_on_terminal",
    "count",
    "is_terminal",
    "iso_time",
    "json_line",
    "jsonable",
    "make_console",
    "print_rule",
    "print_unwrapped",
    "summary",
    "tsv_value",
]


#: Set (by `as_on_terminal`) to print as on a terminal whatever stdout is: the demo does.
_ON_TERMINAL: ContextVar[bool] = ContextVar("qledger_on_terminal", default=False)


@contextmanager
def as_on_terminal() -> Iterator[None]:
    """Within it, tables print as on a terminal (aligned, notes below) even to a pipe."""
    token = _ON_TERMINAL.set(True)
    try:
        yield
    finally:
        _ON_TERMINAL.reset(token)


#: Set to 1 to print as on a terminal whatever stdout is (``| less -R``, a demo's log).
TERMINAL_ENV = "QLEDGER_TERMINAL"


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (stdout by default) is a terminal, within `as_on_terminal`,
    or when ``$QLEDGER_TERMINAL`` is 1."""
    if _ON_TERMINAL.get() or os.environ.get(TERMINAL_ENV) == "1":
        return True
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a file
        return False


def make_console() -> Console:
    """A console on the current stdout, without markup.

    Ids, data IDs and error messages are data and may contain brackets.
    """
    from rich.console import Console

    class _Console(Console):
        """Lets a closed stdout reach the command group (rich would exit 1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return _Console(markup=False, highlight=False, emoji=False)


def print_unwrapped(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; off a terminal as wide as it needs (nothing folded or cut)."""
    if is_terminal(console.file):
        console.print(renderable)
        return
    widest = console.measure(renderable, options=console.options.update_width(1 << 20)).maximum
    width = console.width
    console.width = max(width, widest)  # print() caps its width= at the console's
    try:
        with console.capture() as captured:
            console.print(renderable, crop=False)
    finally:
        console.width = width
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))


def print_rule(console: Console, title: str) -> None:
    """A heading line: a rule across a terminal, the title in full and a short rule elsewhere."""
    if is_terminal(console.file):
        from rich.text import Text

        console.rule(Text(title), align="left")
        return
    console.file.write(f"{title} ─────\n")


# --- words and times -----------------------------------------------------------------


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``1 quantum``, ``2 quanta``, ``1,000 events``: the number and the right noun."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def iso_time(value: datetime | str | None) -> str | None:
    """A time as ISO-8601 in UTC with microseconds, as stored: ``...T12:00:00.000000+00:00``."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# --- JSON ------------------------------------------------------------------------------


#: Keys whose values are JSON held in text when they come from SQL; printed as JSON values.
JSON_KEYS = frozenset({"data_id", "detail", "caveats", "datastore_records", "records"})


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, the one way every command prints JSON.

    Pydantic models are dumped first; times become `iso_time`, UUIDs text,
    enums their value, sets sorted lists, bytes hex; a string under a key
    of `JSON_KEYS` that holds JSON is decoded.
    """
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="python"))
    if isinstance(value, Mapping):
        return {str(k): _field(str(k), v) for k, v in value.items()}
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Iterable):
        return [jsonable(v) for v in value]
    return str(value)


def _field(key: str, value: Any) -> Any:
    if key in JSON_KEYS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # not JSON after all: printed as it is
    return jsonable(value)


def json_line(value: Any, *, indent: int | None = None) -> str:
    """``value`` (see `jsonable`) as JSON text: one line unless ``indent``."""
    return json.dumps(
        jsonable(value),
        indent=indent,
        ensure_ascii=False,
        separators=None if indent else (",", ":"),
    )


# --- tables ------------------------------------------------------------------------------


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: What must be escaped in a line besides the tabs between values (one search a line: fast).
_TSV_SPECIAL = re.compile(r"[\\\n\r]")


def tsv_value(value: object) -> str:
    """One value of a tab-separated line: in full, with ``\\``, tab, newline, CR escaped."""
    if value is None:
        return ""
    return str(value).translate(_TSV_ESCAPES)


@dataclass(frozen=True)
class Column:
    """A column of a `TableWriter`: its header, and right-justified on a terminal or not."""

    name: str
    right: bool = False


#: A cell on a terminal: its text, or its text and a rich style name ("red", "bold green").
Cell = str | tuple[str, str]


class TableWriter:
    """Prints rows as they come: aligned on a terminal, tab-separated values elsewhere.

    On a terminal the widths come from the header and the rows of the first
    `SAMPLE_ROWS` (or of the first `SAMPLE_SECONDS`), and grow when a later
    value is longer; the last column is never padded, and a value of several
    lines continues on the next lines at its column. Off a terminal each row
    is one line of tab-separated values (see `tsv_value`) under a header line.
    Output is flushed at least every `FLUSH_SECONDS`, so a reader sees rows
    while a long read goes on.
    """

    SAMPLE_ROWS = 200
    SAMPLE_SECONDS = 0.1
    FLUSH_SECONDS = 0.1

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        out: IO[str] | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.columns = list(columns)
        self.out = sys.stdout if out is None else out
        self.terminal = is_terminal(self.out) if terminal is None else terminal
        self.rows = 0
        self._pending: list[Sequence[Cell]] = []
        self._started = 0.0
        self._flushed = time.monotonic()
        self._widths: list[int] = []
        self._styles: dict[str, tuple[str, str]] = {}
        self._color = False
        self._cell_len: Callable[[str], int] = len
        if not self.terminal:
            self._write("\t".join(tsv_value(c.name) for c in self.columns) + "\n")
            return
        from rich.cells import cell_len
        from rich.console import Console

        self._cell_len = cell_len
        self._color = Console(file=self.out).color_system is not None

    def add(self, cells: Sequence[Cell]) -> None:
        """Print one row (or keep it among the first, to size the columns on a terminal)."""
        self.rows += 1
        if not self.terminal:
            self._write(self._tsv(cells))
            return
        if self._widths:
            self._write(self._line(cells))
            return
        if not self._pending:
            self._started = time.monotonic()
        self._pending.append(cells)
        if (
            len(self._pending) >= self.SAMPLE_ROWS
            or time.monotonic() - self._started >= self.SAMPLE_SECONDS
        ):
            self._release()

    def close(self) -> None:
        """Print what is still kept, and flush."""
        if self.terminal and not self._widths:
            self._release()
        self.out.flush()

    @staticmethod
    def _tsv(cells: Sequence[Cell]) -> str:
        try:
            line = "\t".join(cells)  # type: ignore[arg-type]  # str cells: the usual case
        except TypeError:  # a styled cell (text, style)
            line = None
        if line is None or line.count("\t") != len(cells) - 1 or _TSV_SPECIAL.search(line):
            line = "\t".join(tsv_value(c if isinstance(c, str) else c[0]) for c in cells)
        return line + "\n"

    # --- terminal ---------------------------------------------------------------------

    def _release(self) -> None:
        widths = [self._cell_len(c.name) for c in self.columns]
        for cells in self._pending:
            for i, cell in enumerate(cells):
                text = cell if isinstance(cell, str) else cell[0]
                widest = max((self._cell_len(part) for part in text.split("\n")), default=0)
                widths[i] = max(widths[i], widest)
        self._widths = widths
        header = [(c.name, "bold") for c in self.columns]
        text = self._line(header) + "".join(self._line(cells) for cells in self._pending)
        self._pending = []
        self._write(text)

    def _line(self, cells: Sequence[Cell]) -> str:
        texts = [(c, "") if isinstance(c, str) else c for c in cells]
        parts = [text.split("\n") for text, _ in texts]
        last = len(self.columns) - 1
        lines = []
        for n in range(max(len(p) for p in parts)):
            out = []
            for i, (column, part) in enumerate(zip(self.columns, parts, strict=True)):
                text = part[n] if n < len(part) else ""
                width = self._cell_len(text)
                if width > self._widths[i]:
                    self._widths[i] = width  # a longer value: the column grows from here on
                pad = " " * (self._widths[i] - width)
                if i == last and not column.right:
                    pad = ""
                styled = self._style(text, texts[i][1]) if text else text
                out.append(pad + styled if column.right else styled + pad)
            lines.append(" ".join(out).rstrip() + "\n")
        return "".join(lines)

    def _style(self, text: str, style: str) -> str:
        if not style or not self._color:
            return text
        codes = self._styles.get(style)
        if codes is None:
            from rich.style import Style

            start, _, end = Style.parse(style).render("\0").partition("\0")
            codes = self._styles[style] = (start, end)
        return f"{codes[0]}{text}{codes[1]}"

    def _write(self, text: str) -> None:
        self.out.write(text)
        now = time.monotonic()
        if now - self._flushed >= self.FLUSH_SECONDS or self.rows <= 1:
            self.out.flush()
            self._flushed = now


class Lines:
    """Writes lines to stdout as they come, flushed at least every `FLUSH_SECONDS`."""

    FLUSH_SECONDS = TableWriter.FLUSH_SECONDS

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = sys.stdout if out is None else out
        self.count = 0
        self._flushed = time.monotonic()

    def write(self, text: str) -> None:
        """Write ``text`` (one or more whole lines)."""
        self.out.write(text)
        self.count += 1
        now = time.monotonic()
        if now - self._flushed >= self.FLUSH_SECONDS or self.count == 1:
            self.out.flush()
            self._flushed = now

    def close(self) -> None:
        """Flush what is left."""
        self.out.flush()


def summary(text: str, *, terminal: bool | None = None) -> None:
    """Print a line that follows a table: to stdout on a terminal, else to stderr."""
    if terminal is None:
        terminal = is_terminal()
    sys.stdout.flush()  # the table first, then the line, wherever both end up
    stream = sys.stdout if terminal else sys.stderr
    stream.write(text + "\n")
    stream.flush()
