"""Events: the stable kind and outcome names, the stored row, the typed event, hashing.

The *stored row* (`EventRow`, a plain tuple in column order) is what the log
writes and reads on the hot path; the *typed event* (`Event`, a frozen pydantic
model) is what users and tools handle. `row_to_event` / `event_to_row` is the one
mapper between them. Kinds are stable strings, never Python class paths.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from .errors import MalformedDetailError

__all__ = [
    "DATASET_KINDS",
    "LIFECYCLE_KINDS",
    "TERMINAL_KINDS",
    "Event",
    "EventKind",
    "EventRow",
    "Outcome",
    "canonical_json",
    "chain_hash",
    "clean_detail",
    "clean_text",
    "clean_value",
    "definition_digest",
    "event_to_row",
    "parse_detail",
    "row_to_event",
    "utc_now",
]


class EventKind(StrEnum):
    """What happened. The values are stored in ``events.kind`` and never change."""

    QUANTUM_STARTED = "quantum_started"
    GET = "get"
    GET_DEFERRED = "get_deferred"
    STORED = "stored"
    PUT = "put"
    MARK_INPUT_UNUSED = "mark_input_unused"
    PRUNE = "prune"
    #: A read of artifacts or records that changes no provenance set (upstream's
    #: retrieve_artifacts, retrieve_artifacts_zip, export_predicted_datastore_records).
    RETRIEVE = "retrieve"
    QUANTUM_SUCCEEDED = "quantum_succeeded"
    QUANTUM_FAILED = "quantum_failed"


class Outcome(StrEnum):
    """How a call ended, stored in ``events.outcome``."""

    OK = "ok"
    #: The dataset was not there (LookupError / FileNotFoundError / OSError, or stored() False).
    MISSING = "missing"
    #: The call raised something else.
    ERROR = "error"
    #: The butler refused the call before touching the datastore.
    REJECTED = "rejected"


LIFECYCLE_KINDS = frozenset(
    {EventKind.QUANTUM_STARTED, EventKind.QUANTUM_SUCCEEDED, EventKind.QUANTUM_FAILED}
)
TERMINAL_KINDS = frozenset({EventKind.QUANTUM_SUCCEEDED, EventKind.QUANTUM_FAILED})
DATASET_KINDS = frozenset(EventKind) - LIFECYCLE_KINDS


class EventRow(NamedTuple):
    """One row of ``events`` in column order, exactly as stored (text, not objects)."""

    seq: int | None
    quantum_id: str
    quantum_seq: int
    call_id: int
    attempt: int
    kind: str
    dataset_id: str | None
    outcome: str
    error_type: str | None
    error_message: str | None
    detail: str | None
    recorded_at: str
    prev_hash: str | None
    hash: str


#: Column names in `EventRow` order, for SELECT and INSERT statements.
EVENT_COLUMNS: tuple[str, ...] = EventRow._fields


#: (whole second since the epoch, its ISO-8601 text up to the seconds), reused within a second.
_SECOND: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """The current UTC time as ISO-8601 text with microseconds.

    Exactly ``datetime.now(UTC).isoformat(timespec="microseconds")``'s text,
    at a third of its cost: every event is stamped on the append hot path,
    so the date and time are formatted once per second and only the
    microseconds per call.
    """
    global _SECOND
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND
    if cached[0] != seconds:
        cached = _SECOND = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{micros:06d}+00:00"


def clean_text(value: str) -> str:
    """``value`` as text that encodes to UTF-8: each lone surrogate becomes ``\\udcff``.

    Exception messages and file names decoded with ``surrogateescape`` may hold
    lone surrogates, which no UTF-8 database column accepts. They are recorded
    with Python's ``backslashreplace`` escapes: deterministic (the same text
    always gives the same row and hash) and readable; valid text is unchanged.
    """
    if value.isascii():
        return value  # the common case, without an encode
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def clean_value(value: Any) -> Any:
    """``value`` with `clean_text` applied to every string in it (keys too)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v) for v in value]
    return value


def clean_detail(text: str) -> str:
    """A ``detail`` JSON text whose strings hold lone surrogates, with `clean_text` applied.

    Re-encoded canonically when it parses (so no ``\\udcff`` JSON escape, which
    readers refuse, is left behind); valid text is returned unchanged.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return canonical_json(json.loads(text))
        except ValueError:
            return clean_text(text)
    return text


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no spaces: one text per value, for hashing.

    Strings with lone surrogates are recorded as `clean_text` gives them.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            cleaned = clean_value(value)
            return json.dumps(cleaned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text


def chain_hash(
    quantum_id: str,
    quantum_seq: int,
    call_id: int,
    attempt: int,
    kind: str,
    dataset_id: str | None,
    outcome: str,
    error_type: str | None,
    error_message: str | None,
    detail: str | None,
    recorded_at: str,
    prev_hash: str | None,
) -> str:
    """SHA-256 over the canonical encoding of one event and its predecessor's hash.

    The encoding is ``|``-separated; the three free-text columns are length
    prefixed (``-1:`` for NULL), so no value can shift another. The global
    ``seq`` is left out on purpose: it is renumbered when a ledger is ingested
    into a central database, and the chain must still verify there.
    """
    encoded = (
        f"{quantum_id}|{quantum_seq}|{call_id}|{attempt}|{kind}|{dataset_id or ''}|{outcome}|"
        f"{-1 if error_type is None else len(error_type)}:{error_type or ''}|"
        f"{-1 if error_message is None else len(error_message)}:{error_message or ''}|"
        f"{-1 if detail is None else len(detail)}:{detail or ''}|{recorded_at}|{prev_hash or ''}"
    )
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def parse_detail(text: str | None, *, where: str = "") -> dict[str, Any] | None:
    """Decode a ``detail`` column.

    Raises:
        MalformedDetailError: the text is not a JSON object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedDetailError(f"{where}: detail is not valid JSON ({e.msg})") from e
    if not isinstance(value, dict):
        raise MalformedDetailError(f"{where}: detail is JSON but not an object")
    return value


class Event(BaseModel):
    """A typed event, as users and tools see it."""

    model_config = ConfigDict(frozen=True)

    seq: int | None = None
    quantum_id: uuid.UUID
    quantum_seq: int
    call_id: int
    attempt: int
    kind: EventKind
    dataset_id: uuid.UUID | None = None
    outcome: Outcome
    error_type: str | None = None
    error_message: str | None = None
    detail: dict[str, Any] | None = None
    recorded_at: datetime
    prev_hash: str | None = None
    hash: str

    def __hash__(self) -> int:
        return hash((self.quantum_id, self.quantum_seq, self.hash))


def row_to_event(row: EventRow | tuple[Any, ...]) -> Event:
    """Map a stored row to a typed event (the one mapper in this direction)."""
    r = EventRow(*row)
    where = f"quantum {r.quantum_id} quantum_seq {r.quantum_seq}"
    return Event(
        seq=r.seq,
        quantum_id=uuid.UUID(r.quantum_id),
        quantum_seq=r.quantum_seq,
        call_id=r.call_id,
        attempt=r.attempt,
        kind=EventKind(r.kind),
        dataset_id=uuid.UUID(r.dataset_id) if r.dataset_id else None,
        outcome=Outcome(r.outcome),
        error_type=r.error_type,
        error_message=r.error_message,
        detail=parse_detail(r.detail, where=where),
        recorded_at=datetime.fromisoformat(r.recorded_at),
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def event_to_row(event: Event) -> EventRow:
    """Map a typed event back to its stored row (the one mapper in this direction)."""
    return EventRow(
        seq=event.seq,
        quantum_id=str(event.quantum_id),
        quantum_seq=event.quantum_seq,
        call_id=event.call_id,
        attempt=event.attempt,
        kind=event.kind.value,
        dataset_id=str(event.dataset_id) if event.dataset_id else None,
        outcome=event.outcome.value,
        error_type=event.error_type,
        error_message=event.error_message,
        detail=canonical_json(event.detail) if event.detail is not None else None,
        recorded_at=event.recorded_at.isoformat(timespec="microseconds"),
        prev_hash=event.prev_hash,
        hash=event.hash,
    )


def definition_digest(quanta_row: Sequence[Any], dataset_rows: Iterable[Sequence[Any]]) -> str:
    """SHA-256 of a quantum's ``quanta`` row and ``datasets`` rows (order-free).

    Recorded in the quantum's first ``quantum_started`` event, so the rows that
    define the quantum are covered by the hash chain too.
    """
    rows = sorted(canonical_json(list(r)) for r in dataset_rows)
    return hashlib.sha256(canonical_json([list(quanta_row), rows]).encode()).hexdigest()
