"""Verifying a ledger: hash chains, sequence gaps, definitions, and recorded heads.

A chain alone cannot see a cut-off tail, so a `Head` (last quantum_seq and hash)
kept elsewhere — by the executor, the central ledger — is checked too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import InvalidHeadError
from ..events import (
    DATASET_KINDS,
    TERMINAL_KINDS,
    EventRow,
    Outcome,
    chain_hash,
    definition_digest,
)
from . import catalog
from .validate import (
    DATASET_COLUMNS,
    QUANTA_COLUMNS,
    dataset_problem,
    detail_problem,
    event_problem,
    info_problem,
    is_time,
    is_uuid,
    parse_json,
    quanta_problem,
    show,
)

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "ChainChecker",
    "Head",
    "VerifyReport",
    "dataset_columns",
    "parse_heads",
    "quanta_columns",
    "verify_ledger",
]

_DATASET_KINDS = frozenset(k.value for k in DATASET_KINDS)
_TERMINAL = frozenset(k.value for k in TERMINAL_KINDS)
_OUTCOMES = frozenset(o.value for o in Outcome)
_QUANTA_COLUMNS = QUANTA_COLUMNS
_DATASET_COLUMNS = DATASET_COLUMNS


class Head(BaseModel):
    """The tip of one quantum's chain, to keep elsewhere and check against later."""

    model_config = ConfigDict(frozen=True)

    quantum_id: uuid.UUID
    quantum_seq: int
    hash: str | None
    terminal: str | None = None


def parse_heads(content: str | bytes, source: str) -> list[Head]:
    """The heads in ``content``: one JSON object, a JSON array of them, or JSON lines.

    ``source`` names where ``content`` came from (a file, ``--head value``) in errors.

    Raises:
        InvalidHeadError: not UTF-8, not JSON, nested too deep, or not shaped as a head.
    """
    what = "is not a head (the JSON that qledger head prints)"
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as e:
        raise InvalidHeadError(f"{source} {what}: it is not UTF-8 text ({e.reason})") from e
    try:
        try:
            loaded = parse_json(text)
            items = loaded if isinstance(loaded, list) else [loaded]
        except ValueError:
            if "\n" not in text.strip():
                raise
            items = [parse_json(line) for line in text.splitlines() if line.strip()]  # lines
        return [Head.model_validate(item) for item in items]
    except ValidationError as e:  # before ValueError: pydantic's is one
        detail = " ".join(str(e).split()).split(" For further information")[0]
        raise InvalidHeadError(f"{source} {what}: {detail}") from e
    except ValueError as e:
        raise InvalidHeadError(f"{source} {what}: its text {e}") from e


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


class ChainChecker:
    """Checks ``events`` rows fed in ``seq`` order: values, chains, attempts and ends.

    Per quantum: quantum_seq 1, 2, 3 ... each ``prev_hash`` the hash before and
    each ``hash`` the row's own; every value as `ledger.store.validate` rules;
    attempts that start with ``quantum_started`` and count up; rows of one call
    sharing its ``call_id``, kind and time; and nothing after an attempt's end
    but a new attempt's ``quantum_started`` or recovery's own events (an
    adopted ``put``, an orphan-removing ``prune``: their detail says so).
    A sound row costs a few comparisons and its hash; the rest is for the rows
    that are not.
    """

    def __init__(self) -> None:
        #: quantum id -> its last row (the chain tip).
        self.last: dict[str, Sequence[Any]] = {}
        #: quantum id -> the attempt its latest quantum_started began.
        self.attempt: dict[str, int] = {}
        #: quantum id -> (terminal kind, quantum_seq) while its latest attempt has ended.
        self.ended: dict[str, tuple[str, int]] = {}
        #: quantum id -> the definition digest in its first quantum_started (None: none).
        self.started: dict[str, str | None] = {}
        #: (quantum id, quantum_seq, message) of the first problem of each quantum.
        self.problems: list[tuple[str, int, str]] = []
        self.first_bad: dict[str, int] = {}
        self.count = 0
        self._ids: set[str] = set()
        self._days: set[str] = set()

    def report(self, qid: str, seq: int, message: str) -> None:
        """Note a problem of one quantum (only its first is kept)."""
        if qid not in self.first_bad:
            self.first_bad[qid] = seq
            self.problems.append((qid, seq, message))

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        """Check rows (all `EventRow` columns, ``seq`` first), in ``seq`` order."""
        last, ended, ids = self.last, self.ended, self._ids
        kinds, outcomes, digest, good_time = _DATASET_KINDS, _OUTCOMES, chain_hash, self._time
        count = 0
        for raw in rows:
            count += 1
            prev = last.get(raw[1])
            # One expression, so that a sound row of a call costs no function call but
            # its hash (measured: verify must stay within 3x a bare fetch of the rows).
            if (
                prev is not None
                and type(raw[2]) is int
                and raw[2] == prev[2] + 1
                and raw[12] == prev[13]
                and raw[5] in kinds
                and type(raw[4]) is int
                and raw[4] == prev[4]
                and type(raw[3]) is int
                and (raw[3] == raw[2] or (raw[3] == prev[3] and raw[5] == prev[5]))
                and raw[7] in outcomes
                and (raw[6] in ids or self._id(raw[6]))
                and (raw[8] is None or type(raw[8]) is str)
                and (raw[9] is None or type(raw[9]) is str)
                and (raw[11] == prev[11] or (raw[3] == raw[2] and good_time(raw[11])))
                and (raw[10] is None or detail_problem(raw[5], raw[10]) is None)
                and raw[1] not in ended
                and digest(*raw[1:13]) == raw[13]
            ):
                last[raw[1]] = raw
                continue
            self._slow(raw, prev)
        self.count += count

    def _id(self, value: object) -> bool:
        if is_uuid(value):
            self._ids.add(value)  # type: ignore[arg-type]
            return True
        return False

    def _time(self, value: object) -> bool:
        if type(value) is str and value[:10] in self._days and _TIME_TAIL.fullmatch(value):
            return True
        if is_time(value):
            self._days.add(value[:10])  # type: ignore[index]
            return True
        return False

    def _slow(self, raw: Sequence[Any], prev: Sequence[Any] | None) -> None:
        """Check a row the fast test did not pass, report what is wrong, and move on."""
        qid = raw[1]
        if not is_uuid(qid):
            # Not even the quantum is known: report the row by its seq, keep going.
            key = qid if type(qid) is str else show(qid)
            what = event_problem(raw) or "quantum_id is not a canonical UUID"
            self.report(key, 0, f"the event at seq {raw[0]}: {what}")
            return
        seq = raw[2]
        problem = self._problem(raw, prev)
        if problem is not None:
            self.report(qid, seq if type(seq) is int else 0, problem)
        if type(seq) is not int:
            return
        self.last[qid] = raw  # check the rows after it against it all the same
        kind = raw[5]
        if kind == "quantum_started":
            if type(raw[4]) is int:
                self.attempt[qid] = raw[4]
            self.ended.pop(qid, None)
            if qid not in self.started:
                self.started[qid] = _definition(raw[10])
        elif kind in _TERMINAL and qid not in self.ended:
            self.ended[qid] = (kind, seq)

    def _problem(self, raw: Sequence[Any], prev: Sequence[Any] | None) -> str | None:
        seq = raw[2]
        last_seq, last_hash = (prev[2], prev[13]) if prev is not None else (0, None)
        if type(seq) is not int or seq != last_seq + 1:
            return f"quantum_seq {show(seq)} follows {last_seq}: events are missing or reordered"
        if raw[12] != last_hash:
            return f"quantum_seq {seq}: prev_hash does not match the previous event's hash"
        try:
            digest: str | None = chain_hash(*raw[1:13])
        except (TypeError, ValueError, AttributeError, UnicodeError):
            digest = None
        if digest is None or digest != raw[13]:
            return f"quantum_seq {seq}: hash does not match the row (it was edited)"
        problem = event_problem(raw)
        if problem is not None:
            return f"quantum_seq {seq}: {problem}"
        return self._order_problem(raw, prev)

    def _order_problem(self, raw: Sequence[Any], prev: Sequence[Any] | None) -> str | None:
        """What is wrong with a sound row's place among its quantum's attempts, or None."""
        qid, seq, call_id, attempt, kind = raw[1], raw[2], raw[3], raw[4], raw[5]
        current = self.attempt.get(qid, 0)
        if kind == "quantum_started":
            if attempt != current + 1:
                return (
                    f"quantum_seq {seq}: quantum_started of attempt {attempt} follows attempt "
                    f"{current} (attempts count up from 1)"
                )
            if call_id != seq:
                return f"quantum_seq {seq}: call_id {call_id} of a quantum_started is not its own"
            return None
        if prev is None:
            return f"quantum_seq {seq}: the quantum's first event is a {kind}, not quantum_started"
        if attempt != current:
            return f"quantum_seq {seq}: a {kind} of attempt {attempt} inside attempt {current}"
        continues = call_id == prev[3] and kind == prev[5] and raw[11] == prev[11]
        if call_id != seq and not (continues and kind in _DATASET_KINDS):
            return (
                f"quantum_seq {seq}: call_id {call_id} is neither this event's quantum_seq nor "
                "the call of the event before it"
            )
        end = self.ended.get(qid)
        if end is None:
            return None
        if kind in _TERMINAL:
            return (
                f"quantum_seq {seq}: a second end ({kind}) of attempt {attempt}, which ended with "
                f"{end[0]} at quantum_seq {end[1]}"
            )
        if _is_recovery(kind, raw[7], raw[10]):
            return None
        return (
            f"quantum_seq {seq}: a {kind} event after the quantum's {end[0]} at quantum_seq "
            f"{end[1]}; after an end only a new attempt's quantum_started, or recovery's "
            "adopted put or orphan-removing prune, may be appended"
        )


#: What `ChainChecker._time` checks once a day is known good (the date is cached).
_TIME_TAIL = re.compile(r"\d{4}-\d\d-\d\dT([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}\+00:00")


def _definition(text: object) -> str | None:
    """The definition digest recorded in a quantum_started detail, if it has one."""
    try:
        detail = parse_json(text) if text is not None else {}
    except ValueError:
        return None
    value = detail.get("definition") if isinstance(detail, dict) else None
    return value if isinstance(value, str) else None


def _is_recovery(kind: str, outcome: str, text: object) -> bool:
    """Whether an event is one recovery appends after an end: an adopted put, an orphan prune."""
    if outcome != "ok" or kind not in ("put", "prune"):
        return False
    try:
        detail = parse_json(text)
    except ValueError:
        return False
    marker = "adopted" if kind == "put" else "orphan"
    return isinstance(detail, dict) and detail.get(marker) is True


def verify_ledger(ledger: Ledger, heads: Sequence[Head] = ()) -> VerifyReport:
    """Check every chain in ``ledger`` (and each head given); never raises for a bad row.

    Everything is read in one snapshot (`Ledger.snapshot`), so a ledger that is
    being written verifies as of one moment instead of reporting false tampering.
    """
    with ledger.snapshot():
        return _verify(ledger, heads)


def _verify(ledger: Ledger, heads: Sequence[Head]) -> VerifyReport:
    checker = ChainChecker()
    checker.feed(ledger.rows("SELECT " + ", ".join(EventRow._fields) + " FROM events ORDER BY seq"))
    tips = {qid: (int(row[2]), row[13]) for qid, row in checker.last.items()}
    definitions = _definitions(ledger, checker)
    known = set(definitions)
    for qid in sorted(set(tips) - known):
        checker.report(qid, 0, "has events but no row in quanta")
    for qid in sorted(known):
        if qid not in tips:
            if qid not in checker.first_bad:
                checker.report(
                    qid, 0, "has a row in quanta but no events (its first events were removed)"
                )
            continue
        expected = checker.started.get(qid)
        if expected is not None and expected != definitions[qid]:
            checker.report(
                qid, 0, "its quanta/datasets rows differ from those recorded at its start"
            )
    problems = [f"quantum {qid}: {message}" for qid, _, message in checker.problems]
    first_bad = dict(checker.first_bad)

    def problem(qid: str, seq: int, message: str) -> None:
        problems.append(f"quantum {qid}: {message}")
        first_bad.setdefault(qid, seq)

    for head in heads:
        _check_head(ledger, head, tips, known | set(tips), problem)
    problems += _ledger_problems(ledger)
    return VerifyReport(
        ok=not problems,
        problems=problems,
        quanta=len(known | set(tips)),
        events=checker.count,
        first_bad=first_bad,
    )


def _ledger_problems(ledger: Ledger) -> list[str]:
    """Problems of the ledger as a whole: ``ledger_info``, and its schema objects."""
    found = []
    revision = next(iter(ledger.rows("SELECT version_num FROM alembic_version")))[0]
    problem = info_problem(ledger.rows("SELECT key, value FROM ledger_info"), revision)
    if problem is not None:
        found.append(f"{ledger.where}: {problem}")
    found += [f"{ledger.where}: {p}" for p in catalog.schema_problems(ledger, revision)]
    return found


def _definitions(ledger: Ledger, checker: ChainChecker) -> dict[str, str | None]:
    """The definition digest of every quantum in ``quanta``, from two streamed queries.

    Two queries for the whole ledger rather than two per quantum: a central
    ledger holds tens of thousands of quanta. ``datasets`` streams in
    ``quantum_id`` order (its primary key), one quantum's rows at a time. Each
    row is checked against the rules of `ledger.store.validate` on the way.
    """
    quanta_rows: dict[str, Sequence[Any]] = {}
    for row in ledger.rows(
        "SELECT " + ", ".join(f'"{c}"' for c in _QUANTA_COLUMNS) + " FROM quanta"
    ):
        key = row[0] if type(row[0]) is str else show(row[0])
        quanta_rows[key] = row
        problem = quanta_problem(row)
        if problem is not None:
            checker.report(key, 0, f"its quanta row: {problem}")
    digests: dict[str, str | None] = {}
    current: str | None = None
    group: list[Sequence[Any]] = []

    def close_group() -> None:
        if current is not None and current in quanta_rows:
            digests[current] = _digest(quanta_rows[current], group)

    for row in ledger.rows(
        "SELECT " + ", ".join(f'"{c}"' for c in _DATASET_COLUMNS) + " FROM datasets "
        "ORDER BY quantum_id"
    ):
        if row[0] != current:
            close_group()
            current, group = row[0], []
        group.append(row)
        problem = dataset_problem(row)
        if problem is not None:
            key = row[0] if type(row[0]) is str else show(row[0])
            checker.report(key, 0, f"its datasets row of {show(row[1])}: {problem}")
    close_group()
    for qid, quanta_row in quanta_rows.items():
        if qid not in digests:
            digests[qid] = _digest(quanta_row, ())
    return digests


def _digest(quanta_row: Sequence[Any], dataset_rows: Sequence[Sequence[Any]]) -> str | None:
    """`definition_digest`, or None for rows whose values it cannot even encode."""
    try:
        return definition_digest(quanta_row, dataset_rows)
    except (TypeError, ValueError, UnicodeError):
        return None


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
