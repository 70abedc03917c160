"""Verifying a ledger: hash chains, sequence gaps, definitions, and recorded heads.

A chain alone cannot see a cut-off tail, so a `Head` (last quantum_seq and hash)
kept elsewhere — by the executor, the central ledger — is checked too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ..events import EventKind, EventRow, Outcome, chain_hash, definition_digest

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["Head", "VerifyReport", "row_is_sound", "row_problem", "verify_ledger"]

_KINDS = frozenset(k.value for k in EventKind)
_OUTCOMES = frozenset(o.value for o in Outcome)
_QUANTA_COLUMNS = (
    "quantum_id",
    "task_label",
    "data_id",
    "run",
    "created_at",
    "host",
    "pid",
    "user",
    "python_version",
    "library_version",
    "datastore_name",
)
_DATASET_COLUMNS = (
    "quantum_id",
    "dataset_id",
    "role",
    "connection",
    "position",
    "dataset_type",
    "dimensions",
    "storage_class",
    "data_id",
    "run",
    "datastore_records",
)


class Head(BaseModel):
    """The tip of one quantum's chain, to keep elsewhere and check against later."""

    model_config = ConfigDict(frozen=True)

    quantum_id: uuid.UUID
    quantum_seq: int
    hash: str | None
    terminal: str | None = None


class VerifyReport(BaseModel):
    """What `Ledger.verify` found; ``ok`` is True when ``problems`` is empty."""

    ok: bool
    problems: list[str]
    quanta: int
    events: int
    #: quantum id -> the first quantum_seq found bad (0 for problems not tied to a row).
    first_bad: dict[str, int] = {}


def quanta_columns() -> tuple[str, ...]:
    """Column order of the ``quanta`` row in the definition digest."""
    return _QUANTA_COLUMNS


def dataset_columns() -> tuple[str, ...]:
    """Column order of ``datasets`` rows in the definition digest."""
    return _DATASET_COLUMNS


def _check_row(r: EventRow, tip: tuple[int, str | None]) -> str | None:
    """The problem with one row given the previous row of its quantum, or None."""
    last_seq, last_hash = tip
    if r.quantum_seq != last_seq + 1:
        return f"quantum_seq {r.quantum_seq} follows {last_seq}: events are missing or reordered"
    if r.prev_hash != last_hash:
        return f"quantum_seq {r.quantum_seq}: prev_hash does not match the previous event's hash"
    digest = chain_hash(
        r.quantum_id,
        r.quantum_seq,
        r.call_id,
        r.attempt,
        r.kind,
        r.dataset_id,
        r.outcome,
        r.error_type,
        r.error_message,
        r.detail,
        r.recorded_at,
        r.prev_hash,
    )
    if digest != r.hash:
        return f"quantum_seq {r.quantum_seq}: hash does not match the row (it was edited)"
    if r.kind not in _KINDS or r.outcome not in _OUTCOMES:
        return f"quantum_seq {r.quantum_seq}: unknown kind {r.kind!r} or outcome {r.outcome!r}"
    if r.detail is not None:
        try:
            if not isinstance(json.loads(r.detail), dict):
                raise ValueError
        except ValueError:
            return f"quantum_seq {r.quantum_seq}: detail is not a JSON object"
    return None


def row_is_sound(raw: Sequence[Any], tip: tuple[int, str | None]) -> bool:
    """Whether an ``events`` row (all columns, `EventRow` order) chains soundly onto ``tip``.

    The fast path for the common case: the columns line up as `chain_hash`'s
    arguments, so no per-row object is built. `row_problem` says what is wrong.
    """
    return (
        raw[2] == tip[0] + 1
        and raw[12] == tip[1]
        and raw[5] in _KINDS
        and raw[7] in _OUTCOMES
        and chain_hash(*raw[1:13]) == raw[13]
        and (raw[10] is None or _is_json_object(raw[10]))
    )


def row_problem(raw: Sequence[Any], tip: tuple[int, str | None]) -> str | None:
    """What is wrong with an ``events`` row given its quantum's previous row, or None."""
    return _check_row(EventRow(*raw), tip)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def verify_ledger(ledger: Ledger, heads: Sequence[Head] = ()) -> VerifyReport:
    """Check every chain in ``ledger`` (and each head given); never raises for a bad row.

    Everything is read in one snapshot (`Ledger.snapshot`), so a ledger that is
    being written verifies as of one moment instead of reporting false tampering.
    """
    with ledger.snapshot():
        return _verify(ledger, heads)


def _verify(ledger: Ledger, heads: Sequence[Head]) -> VerifyReport:
    problems: list[str] = []
    first_bad: dict[str, int] = {}

    def problem(qid: str, seq: int, message: str) -> None:
        problems.append(f"quantum {qid}: {message}")
        first_bad.setdefault(qid, seq)

    tips: dict[str, tuple[int, str | None]] = {}
    started: dict[str, str | None] = {}
    count = 0
    for raw in ledger.rows("SELECT " + ", ".join(EventRow._fields) + " FROM events ORDER BY seq"):
        count += 1
        qid = raw[1]
        tip = tips.get(qid, (0, None))
        if row_is_sound(raw, tip):
            tips[qid] = (raw[2], raw[13])
            if raw[5] == "quantum_started" and qid not in started:
                started[qid] = json.loads(raw[10] or "{}").get("definition")
            continue
        r = EventRow(*raw)
        if not (isinstance(r.quantum_id, str) and isinstance(r.quantum_seq, int)):
            # A damaged page can surface a row of NULLs or junk: report it, keep going.
            problem(str(r.quantum_id), 0, f"the event at seq {r.seq} is unreadable (damaged)")
            continue
        trouble = _check_row(r, tip)
        if trouble is not None and qid not in first_bad:
            problem(qid, r.quantum_seq, trouble)
        tips[qid] = (r.quantum_seq, r.hash)
        if r.kind == EventKind.QUANTUM_STARTED and qid not in started:
            try:
                started[qid] = (json.loads(r.detail or "{}") or {}).get("definition")
            except ValueError:
                started[qid] = None

    definitions = _definitions(ledger)
    known = set(definitions)
    for qid in sorted(set(tips) - known):
        problem(qid, 0, "has events but no row in quanta")
    for qid in sorted(known):
        if qid not in tips:
            problem(qid, 0, "has a row in quanta but no events (its first events were removed)")
            continue
        expected = started.get(qid)
        if expected is not None and expected != definitions[qid]:
            problem(qid, 0, "its quanta/datasets rows differ from those recorded at its start")
    for head in heads:
        _check_head(ledger, head, tips, known | set(tips), problem)
    return VerifyReport(
        ok=not problems,
        problems=problems,
        quanta=len(known | set(tips)),
        events=count,
        first_bad=first_bad,
    )


def _definitions(ledger: Ledger) -> dict[str, str]:
    """The definition digest of every quantum in ``quanta``, from two streamed queries.

    Two queries for the whole ledger rather than two per quantum: a central
    ledger holds tens of thousands of quanta. ``datasets`` streams in
    ``quantum_id`` order (its primary key), one quantum's rows at a time.
    """
    quanta_rows = {
        str(row[0]): row
        for row in ledger.rows(
            "SELECT " + ", ".join(f'"{c}"' for c in _QUANTA_COLUMNS) + " FROM quanta"
        )
    }
    digests: dict[str, str] = {}
    current: str | None = None
    group: list[Sequence[Any]] = []

    def close_group() -> None:
        if current is not None and current in quanta_rows:
            digests[current] = definition_digest(quanta_rows[current], group)

    for row in ledger.rows(
        "SELECT " + ", ".join(f'"{c}"' for c in _DATASET_COLUMNS) + " FROM datasets "
        "ORDER BY quantum_id"
    ):
        if row[0] != current:
            close_group()
            current, group = row[0], []
        group.append(row)
    close_group()
    for qid, row in quanta_rows.items():
        digests.setdefault(qid, definition_digest(row, ()))
    return digests


def _check_head(
    ledger: Ledger,
    head: Head,
    tips: dict[str, tuple[int, str | None]],
    held: set[str],
    problem: Any,
) -> None:
    """Check one head recorded elsewhere (``held``: every quantum the ledger holds)."""
    qid = str(head.quantum_id)
    if qid not in held:
        which = next(iter(held)) if len(held) == 1 else f"{len(held)} other quanta"
        problem(
            qid,
            0,
            f"a head was given for it, but {ledger.where} holds no such quantum (it holds "
            f"{which}): the head belongs to another ledger's quantum; give this one's head",
        )
        return
    seq, _ = tips.get(qid, (0, None))
    if seq < head.quantum_seq:
        owner = _owner_of(ledger, head)
        cause = (
            f"that head is quantum {owner}'s, not this quantum's"
            if owner is not None and owner != qid
            else "the tail of the ledger was cut off"
        )
        problem(
            qid,
            seq + 1,
            f"ends at quantum_seq {seq} but its recorded head is at {head.quantum_seq}: {cause}",
        )
        return
    if head.quantum_seq == 0:
        return
    rows = list(
        ledger.rows(
            "SELECT hash FROM events WHERE quantum_id = ? AND quantum_seq = ?",
            [qid, head.quantum_seq],
        )
    )
    if not rows or rows[0][0] != head.hash:
        owner = _owner_of(ledger, head)
        cause = (
            f"that head is quantum {owner}'s, not this quantum's"
            if owner is not None and owner != qid
            else "the chain was rewritten"
        )
        problem(
            qid,
            head.quantum_seq,
            f"quantum_seq {head.quantum_seq}: hash differs from the recorded head ({cause})",
        )


def _owner_of(ledger: Ledger, head: Head) -> str | None:
    """The quantum of this ledger whose event at the head's quantum_seq has the head's hash."""
    if head.hash is None:
        return None
    rows = list(
        ledger.rows(
            "SELECT quantum_id FROM events WHERE quantum_seq = ? AND hash = ? LIMIT 1",
            [head.quantum_seq, head.hash],
        )
    )
    return str(rows[0][0]) if rows else None


def definition_rows_digest(
    quanta_row: dict[str, Any], dataset_rows: Iterable[dict[str, Any]]
) -> str:
    """The definition digest of rows as the butler inserts them (dicts)."""
    return definition_digest(
        tuple(quanta_row[c] for c in _QUANTA_COLUMNS),
        (tuple(r[c] for c in _DATASET_COLUMNS) for r in dataset_rows),
    )
