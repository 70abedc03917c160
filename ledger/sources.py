"""Which ledgers a list of arguments names: files as given, folders searched, URLs kept.

Every command that reads many ledgers (``show``, ``events``, ``verify``,
``ingest``, ``watch``...) expands its arguments here, so that they all agree
on what a folder holds. The rule:

- A file named on the command line is a ledger to read, whatever its name: if
  it is not one, reading it reports the problem.
- A folder is searched recursively (sorted, symlinked folders not followed) for
  files whose names end in `LEDGER_SUFFIXES`. Anything else in it is skipped:
  SQLite's ``-wal``, ``-shm`` and ``-journal`` companions, logs, artifacts.
  A folder that holds no ledger file is a problem.
- A database URL (``postgresql+psycopg://...``, ``sqlite:///...``) is kept as is.
- A ledger named twice (the same file under any path) is read once.

Shell patterns (``ledgers/*.ledger``) are the shell's job. This module only
looks at names and folders: it never opens a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["LEDGER_SUFFIXES", "Expansion", "expand_ledgers", "is_url"]

#: File names that a folder is searched for.
LEDGER_SUFFIXES = (".ledger", ".sqlite", ".sqlite3", ".db")


def is_url(value: str) -> bool:
    """True for a database URL (``scheme://...``), False for a path."""
    return "://" in value


@dataclass
class Expansion:
    """The ledgers that arguments name, and the arguments that name none."""

    #: Paths and URLs to read, in order: arguments as given, folders' files sorted.
    ledgers: list[str] = field(default_factory=list)
    #: ``(argument, what is wrong)``: a folder without ledger files.
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: Files found in folders and skipped: not named as ledgers (companions not counted).
    skipped: int = 0
    #: How many arguments were folders.
    folders: int = 0


def _folder_ledgers(folder: str) -> tuple[list[str], int]:
    """The ledger files under ``folder`` (sorted walk) and how many other files were skipped."""
    found: list[str] = []
    skipped = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(LEDGER_SUFFIXES):
                found.append(os.path.join(root, name))
            elif not name.endswith(("-wal", "-shm", "-journal")):
                skipped += 1
    return found, skipped


def expand_ledgers(arguments: Iterable[str]) -> Expansion:
    """The ledgers named by files, folders and URLs (see the module's rule).

    Never raises for a bad argument: a folder without ledgers is in
    ``problems``, and a file that is missing or not a ledger is kept, for the
    reader to report.
    """
    result = Expansion()
    seen: set[str] = set()
    for argument in arguments:
        if is_url(argument) or argument == ":memory:":
            found = [argument]
        elif os.path.isdir(argument):
            result.folders += 1
            found, skipped = _folder_ledgers(argument)
            result.skipped += skipped
            if not found:
                names = ", ".join(f"*{s}" for s in LEDGER_SUFFIXES)
                others = f" ({skipped} other file{'s' * (skipped != 1)})" if skipped else ""
                result.problems.append((argument, f"folder holds no ledger file ({names}){others}"))
                continue
        else:
            found = [argument]
        for path in found:
            key = path if is_url(path) else os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                result.ledgers.append(path)
    return result
