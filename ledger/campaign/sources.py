"""Where a campaign's events come from: a central ledger, or a folder of ledger files.

Both only read (`Ledger.open`, read-only) and both fold each event once into a
`CampaignState`:

- `CentralSource` keeps one connection to a central ledger (a SQLite file or a
  PostgreSQL URL) and follows it by ``seq`` with `Ledger.follow`, which never
  skips an event that commits late;
- `FolderSource` polls a folder of per-quantum ledgers: a file is opened only
  when it (or its ``-wal``) changed since the last poll, and followed from the
  last ``seq`` read in it. A file that cannot be read yet (being created) is
  tried again at the next poll.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..central.target import chunks
from ..errors import LedgerError
from ..sources import expand_ledgers
from ..store.ledger import Ledger
from ..store.validate import check_event
from .watch import CampaignState, FailureLine, QuantumInfo

__all__ = ["CampaignSource", "CentralSource", "FolderSource", "open_source"]

#: Rows read per query while catching up.
_BATCH = 10_000


def _info(led: Ledger, quantum_ids: Iterable[str]) -> dict[str, QuantumInfo]:
    """Task label and data ID of these quanta, in chunked IN lists."""
    found: dict[str, QuantumInfo] = {}
    for chunk in chunks(sorted(set(quantum_ids))):
        marks = ", ".join("?" * len(chunk))
        for qid, task, data_id in led.rows(
            f"SELECT quantum_id, task_label, data_id FROM quanta WHERE quantum_id IN ({marks})",
            chunk,
        ):
            found[str(qid)] = QuantumInfo(str(task), str(data_id))  # shown as text, whatever
    return found


def _follow_into(led: Ledger, state: CampaignState, after: int) -> tuple[int, list[FailureLine]]:
    """Fold every event of ``led`` past ``after``; the last ``seq`` and the new failures.

    Raises:
        MalformedRowError: a row holds a value no recorder writes (the ledger was edited).
    """
    failures: list[FailureLine] = []
    while rows := led.follow(after, limit=_BATCH):
        for row in rows:
            check_event(row, led.where)  # a hostile row is a named error, not a crash
        unknown = {r.quantum_id for r in rows if not state.known(r.quantum_id)}
        failures.extend(state.apply(rows, _info(led, unknown) if unknown else {}))
        after = rows[-1].seq or after
        if len(rows) < _BATCH:
            break
    return after, failures


class CampaignSource:
    """A place to poll for a campaign's new events."""

    #: The target as messages show it.
    where: str
    #: More is waiting to be read at once (a poll stopped early); poll again without waiting.
    pending: bool = False

    def poll(self, state: CampaignState) -> list[FailureLine]:
        """Fold what is new into ``state``; the failures among it."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Ledgers that could not be read at the last poll, one line each."""
        return []

    def position(self, state: CampaignState) -> dict[str, int | None]:
        """How far the source has read: ``seq`` (a central ledger) or ``ledgers`` (files read)."""
        return {"seq": state.last_seq, "ledgers": None}

    def close(self) -> None:
        """Release what the source holds."""


class CentralSource(CampaignSource):
    """A central ledger followed by ``seq`` over one read-only connection."""

    def __init__(self, target: str) -> None:
        self._ledger = Ledger.open(target)
        self.where = self._ledger.where
        self._after = 0

    def poll(self, state: CampaignState) -> list[FailureLine]:
        """Fold the events committed since the last poll."""
        self._after, failures = _follow_into(self._ledger, state, self._after)
        return failures

    def close(self) -> None:
        """Close the connection."""
        self._ledger.close()


@dataclass
class _FileMark:
    stamp: tuple[int, ...]
    after: int


@dataclass
class FolderSource(CampaignSource):
    """A folder of ledger files (``*.ledger``, ``*.sqlite``...), polled file by file.

    A poll opens at most ``files_per_poll`` changed files and sets `pending`
    when more are waiting, so a first look at a large folder shows progress.
    """

    folder: str
    files_per_poll: int = 500
    _marks: dict[str, _FileMark] = field(default_factory=dict)
    #: path -> (its stamp when it could not be read, why): retried once it changes.
    _problems: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not os.path.isdir(self.folder):
            raise LedgerError(f"{self.folder} is not a folder")
        self.where = self.folder

    @staticmethod
    def _stamp(path: str) -> tuple[int, ...]:
        """Size and time of the file and its WAL: a change means new events may be there.

        An empty WAL counts as none: opening a ledger may leave one behind, and
        it holds no event.
        """
        stamp: list[int] = []
        for name in (path, path + "-wal"):
            try:
                st = os.stat(name)
            except FileNotFoundError:
                stamp.extend((0, 0))
                continue
            stamp.extend((st.st_size, st.st_mtime_ns) if st.st_size else (0, 0))
        return tuple(stamp)

    def poll(self, state: CampaignState) -> list[FailureLine]:
        """Fold the new events of the ledger files that changed since the last poll."""
        failures: list[FailureLine] = []
        paths = expand_ledgers([self.folder]).ledgers
        present = set(paths)
        for gone in [p for p in {*self._marks, *self._problems} if p not in present]:
            self._marks.pop(gone, None)  # removed (or renamed) since: nothing to read there
            self._problems.pop(gone, None)
        self.pending = False
        opened = 0
        for path in paths:
            # The stamp is taken before reading: a write during the read changes it again.
            stamp = self._stamp(path)
            mark = self._marks.get(path)
            if mark is not None and mark.stamp == stamp:
                continue
            if path in self._problems and self._problems[path][0] == stamp:
                continue  # still the file that could not be read
            if opened == self.files_per_poll:
                self.pending = True
                break
            opened += 1
            after = mark.after if mark is not None else 0
            try:
                with Ledger.open(path) as led:
                    after, found = _follow_into(led, state, after)
            except LedgerError as e:
                # A file still being created, or damaged: tried again once it changes.
                self._problems[path] = (stamp, str(e))
                continue
            self._problems.pop(path, None)
            self._marks[path] = _FileMark(stamp, after)
            failures.extend(found)
        return failures

    def position(self, state: CampaignState) -> dict[str, int | None]:
        """The files read so far (each file has its own ``seq``: there is no global one)."""
        return {"seq": None, "ledgers": len(self._marks)}

    def problems(self) -> list[str]:
        """The files that could not be read at their last try, with why."""
        return [f"{path}: {why}" for path, (_, why) in sorted(self._problems.items())]


def open_source(target: str) -> CampaignSource:
    """A `FolderSource` for a folder, else a `CentralSource` (a SQLite path or a URL)."""
    if os.path.isdir(target):
        return FolderSource(target)
    return CentralSource(target)
