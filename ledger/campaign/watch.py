"""The state of a running campaign, folded from events as they arrive.

`CampaignState` is a pure fold: it takes stored event rows (and the task label
and data ID of their quanta) and keeps, incrementally, the count of quanta per
task and status, the quanta retried, the last failures with their error lines,
and the times quanta finished (for a rate). Nothing is re-read: each event is
folded once. The sources in `ledger.campaign.sources` feed it from a central
ledger (followed by ``seq``) or from a folder of per-quantum ledgers.

A quantum's status follows the ``quantum_status`` view's rule: its lifecycle
event with the highest ``quantum_seq`` decides; ``quantum_started`` with no end
after it is ``interrupted`` (the view's word: it may still be running).
`STATUSES` is the one list of statuses, in column order: a new one (say a
``running`` told apart by a heartbeat) is one more entry and one more rule in
`_status_of`, and every view of the state grows a column.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..events import EventKind, EventRow

__all__ = ["STATUSES", "CampaignState", "FailureLine", "QuantumInfo"]

#: Every status a quantum can have in the view, in column order.
STATUSES: tuple[str, ...] = ("succeeded", "failed", "interrupted")

_LIFECYCLE = {
    EventKind.QUANTUM_STARTED.value: "interrupted",
    EventKind.QUANTUM_SUCCEEDED.value: "succeeded",
    EventKind.QUANTUM_FAILED.value: "failed",
}

#: Window of recorded time over which the rate is measured.
RATE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class QuantumInfo:
    """What the view shows of a quantum: its task and its data ID (JSON text)."""

    task_label: str
    data_id: str


@dataclass(frozen=True)
class FailureLine:
    """One failure as it happened: which quantum, which attempt, and its error line."""

    quantum_id: str
    task_label: str
    data_id: str
    attempt: int
    error_type: str
    error_message: str
    recorded_at: str

    def data_id_text(self) -> str:
        """The data ID as ``key=value ...``."""
        return _data_id_text(self.data_id)

    def error_line(self) -> str:
        """``Type: first line of the message``."""
        first = (self.error_message or "").strip().splitlines()
        return f"{self.error_type}: {first[0]}" if first else self.error_type

    def to_json(self) -> dict[str, Any]:
        """The failure as a JSON object."""
        return {
            "quantum_id": self.quantum_id,
            "task_label": self.task_label,
            "data_id": json.loads(self.data_id),
            "attempt": self.attempt,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "recorded_at": self.recorded_at,
        }


def _data_id_text(data_id: str) -> str:
    try:
        values = json.loads(data_id)
    except ValueError:
        return data_id
    if not isinstance(values, dict):
        return data_id
    return " ".join(f"{k}={v}" for k, v in values.items())


@dataclass
class _Quantum:
    info: QuantumInfo
    status: str | None = None
    lifecycle_seq: int = 0
    attempts: int = 0


@dataclass
class CampaignState:
    """Counts per task and status, retries, recent failures and the pace of a campaign.

    Feed it with `apply`; read it with `counts`, `totals`, `rate_per_minute`,
    `failures` and `snapshot`. Folding the same event twice changes nothing
    (the highest ``quantum_seq`` and attempt win), so overlapping sources are safe.
    """

    #: How many recent failures to keep.
    keep_failures: int = 10
    #: The largest ``seq`` folded (of a central ledger; per file for a folder).
    last_seq: int = 0
    #: The ``recorded_at`` of the newest event folded.
    last_recorded_at: str | None = None
    #: Events folded so far.
    n_events: int = 0
    failures: deque[FailureLine] = field(init=False)
    _quanta: dict[str, _Quantum] = field(default_factory=dict)
    _counts: dict[str, dict[str, int]] = field(default_factory=dict)
    _retried: dict[str, int] = field(default_factory=dict)
    #: recorded_at of each quantum's end (terminal event), oldest first, within the window.
    _ends: list[datetime] = field(default_factory=list)
    _n_ended: int = 0
    _first_start: datetime | None = None

    def __post_init__(self) -> None:
        self.failures = deque(maxlen=self.keep_failures)

    # --- folding ----------------------------------------------------------------------

    def known(self, quantum_id: str) -> bool:
        """Whether the state already has this quantum's task and data ID."""
        return quantum_id in self._quanta

    def apply(self, rows: Iterable[EventRow], info: Mapping[str, QuantumInfo]) -> list[FailureLine]:
        """Fold stored rows (in ``seq`` order per source); the failures among them.

        ``info`` gives the task and data ID of quanta not `known` yet; a quantum
        missing from both is shown under task ``?``.
        """
        new_failures: list[FailureLine] = []
        for row in rows:
            self.n_events += 1
            if row.seq is not None and row.seq > self.last_seq:
                self.last_seq = row.seq
            if self.last_recorded_at is None or row.recorded_at > self.last_recorded_at:
                self.last_recorded_at = row.recorded_at
            quantum = self._quanta.get(row.quantum_id)
            if quantum is None:
                found = info.get(row.quantum_id) or QuantumInfo("?", "{}")
                quantum = self._quanta[row.quantum_id] = _Quantum(found)
            self._attempt(quantum, row.attempt)
            status = _LIFECYCLE.get(row.kind)
            if status is None:
                continue
            if status == "interrupted":
                started = datetime.fromisoformat(row.recorded_at)
                if self._first_start is None or started < self._first_start:
                    self._first_start = started
            if row.quantum_seq <= quantum.lifecycle_seq:
                continue  # an event folded before, or older than the one that decided
            quantum.lifecycle_seq = row.quantum_seq
            self._set_status(quantum, status)
            if status != "interrupted":
                self._ended(datetime.fromisoformat(row.recorded_at))
            if status == "failed":
                failure = FailureLine(
                    quantum_id=row.quantum_id,
                    task_label=quantum.info.task_label,
                    data_id=quantum.info.data_id,
                    attempt=row.attempt,
                    error_type=row.error_type or "",
                    error_message=row.error_message or "",
                    recorded_at=row.recorded_at,
                )
                self.failures.append(failure)
                new_failures.append(failure)
        return new_failures

    def _attempt(self, quantum: _Quantum, attempt: int) -> None:
        if attempt <= quantum.attempts:
            return
        if quantum.attempts <= 1 < attempt:
            task = quantum.info.task_label
            self._retried[task] = self._retried.get(task, 0) + 1
        quantum.attempts = attempt

    def _set_status(self, quantum: _Quantum, status: str) -> None:
        counts = self._counts.setdefault(quantum.info.task_label, dict.fromkeys(STATUSES, 0))
        if quantum.status is not None:
            counts[quantum.status] -= 1
        counts[status] += 1
        quantum.status = status

    def _ended(self, moment: datetime) -> None:
        self._n_ended += 1
        # Kept in order (quanta end out of order across workers and files).
        bisect.insort(self._ends, moment)
        stale = bisect.bisect_left(self._ends, self._ends[-1] - RATE_WINDOW)
        if stale:
            del self._ends[:stale]

    # --- reading ----------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Task label -> status -> number of quanta (every status of `STATUSES`), by task."""
        return {task: dict(self._counts[task]) for task in sorted(self._counts)}

    def retried(self) -> dict[str, int]:
        """Task label -> number of quanta that ran more than one attempt."""
        return {task: self._retried.get(task, 0) for task in sorted(self._counts)}

    def totals(self) -> dict[str, int]:
        """Status -> number of quanta, over every task."""
        totals = dict.fromkeys(STATUSES, 0)
        for counts in self._counts.values():
            for status, n in counts.items():
                totals[status] += n
        return totals

    @property
    def n_quanta(self) -> int:
        """Quanta seen (with at least one lifecycle event)."""
        return sum(self.totals().values())

    def rate_per_minute(self) -> float:
        """Quanta finished per minute over the last `RATE_WINDOW` of recorded time.

        The window ends at the newest end folded (so a central ledger ingested
        late still shows the pace at which the work was done); it is shorter
        when the campaign started less than a window before.
        """
        if not self._ends:
            return 0.0
        newest = self._ends[-1]
        start = newest - RATE_WINDOW
        if self._first_start is not None and self._first_start > start:
            start = self._first_start
        minutes = (newest - start).total_seconds() / 60
        if minutes <= 0:
            return 0.0
        return len(self._ends) / minutes

    def snapshot(self) -> dict[str, Any]:
        """The state as a JSON object (what ``qledger watch --json`` prints)."""
        counts = self.counts()
        retried = self.retried()
        return {
            "seq": self.last_seq,
            "events": self.n_events,
            "quanta": self.n_quanta,
            "statuses": list(STATUSES),
            "totals": self.totals(),
            "tasks": {
                task: {
                    **counts[task],
                    "retried": retried[task],
                    "total": sum(counts[task].values()),
                }
                for task in counts
            },
            "finished": self._n_ended,
            "rate_per_minute": round(self.rate_per_minute(), 3),
            "rate_window_seconds": int(RATE_WINDOW.total_seconds()),
            "last_event_at": self.last_recorded_at,
            "failures": [f.to_json() for f in self.failures],
        }
