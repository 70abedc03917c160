"""What the values of a ledger's rows must be: one set of rules for verify, ingest and readers.

A ledger is a file anyone can edit: a row may hold text where a number
belongs, an id that is not a UUID, a time without a zone, JSON nested ten
thousand deep, ``NaN``. The hash chain does not stop that (whoever edits can
recompute it). These rules say what each column may hold — exactly what the
recorders write and the readers can read back — so that ``verify`` reports a
bad value, ``ingest`` refuses the source that holds it, and a reader raises
`MalformedRowError` naming the row instead of crashing on it.

Each ``*_problem`` function returns what is wrong with a row as a phrase, or
None; `check_event` and friends raise it for readers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import LedgerError, MalformedDetailError, MalformedRowError, PathEscapeError
from ..events import DATASET_KINDS, EventKind, Outcome
from ..records import check_relative_path

__all__ = [
    "MAX_INT",
    "MAX_JSON_DEPTH",
    "check_dataset",
    "check_event",
    "check_quanta",
    "data_id_value",
    "dataset_problem",
    "detail_problem",
    "event_problem",
    "info_problem",
    "is_time",
    "is_uuid",
    "parse_json",
    "quanta_problem",
    "show",
]

#: Deepest JSON nesting a column may hold; the recorders write at most a few levels,
#: and Python, SQLite and PostgreSQL all refuse JSON somewhere past a thousand.
MAX_JSON_DEPTH = 64
#: Largest integer a column or a count may hold (a 32-bit INTEGER column on PostgreSQL).
MAX_INT = 2**31 - 1

_KINDS = frozenset(k.value for k in EventKind)
_DATASET_KINDS = frozenset(k.value for k in DATASET_KINDS)
_OUTCOMES = frozenset(o.value for o in Outcome)
_ROLES = frozenset({"input", "init_input", "output"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Exactly what the recorders write: UTC, microseconds, an explicit +00:00.
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}\+00:00")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class _BadJSONError(ValueError):
    """A JSON text the readers cannot use."""


def _constant(name: str) -> Any:
    raise _BadJSONError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSONError(f"{text[:20]} is out of range")
    return value


# NaN and Infinity are Python's extension, not JSON: SQLite's and PostgreSQL's JSON
# functions refuse them, so a ledger holding one would break its own views.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def show(value: object) -> str:
    """A value for a message: its repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _what(value: object) -> str:
    return "NULL" if value is None else f"{type(value).__name__} {show(value)}"


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID as stored: canonical lowercase text, 36 characters."""
    return type(value) is str and _UUID.fullmatch(value) is not None


def is_time(value: object) -> bool:
    """Whether ``value`` is a time as stored: UTC ISO-8601 with microseconds and +00:00."""
    if type(value) is not str:
        return False
    match = _TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS[month - 1]:
        return False
    return month != 2 or day < 29 or (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0))


def _is_int(value: object, low: int = 1) -> bool:
    return type(value) is int and low <= value <= MAX_INT


def _is_name(value: object) -> bool:
    """Text that names something: no control characters (no NUL, no newline)."""
    return type(value) is str and _CONTROL.search(value) is None


def _optional_text(value: object) -> bool:
    return value is None or type(value) is str


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed JSON value (iteratively)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def _bad_string(value: Any) -> str | None:
    """A lone surrogate anywhere in a parsed JSON value's strings, or None.

    (A NUL is text a task may raise, and the butler records it: it stays.)
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "holds a lone surrogate (not Unicode text)"
    return None


def parse_json(text: object) -> Any:
    """Parse a JSON column as the readers need it.

    Raises:
        ValueError: not text, not JSON, ``NaN``/``Infinity``, a number out of
            range, nesting deeper than `MAX_JSON_DEPTH`, or a lone surrogate
            in a string; the message says which.
    """
    if type(text) is not str:
        raise _BadJSONError(f"is {_what(text)}, not JSON text")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise _BadJSONError(f"is JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except _BadJSONError as e:
        raise _BadJSONError(f"is not valid JSON ({e})") from None
    except json.JSONDecodeError as e:
        raise _BadJSONError(f"is not valid JSON ({e.msg} at character {e.pos})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise _BadJSONError(f"is not valid JSON ({e})") from None
    # Cheap guards first: no text with this few brackets can nest that deep, and
    # only an escape can put a lone surrogate into a parsed string.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise _BadJSONError(f"is JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u" in text:
        bad = _bad_string(value)
        if bad is not None:
            raise _BadJSONError(bad)
    return value


def _json(text: object, shape: type, what: str) -> tuple[Any, str | None]:
    """Parse and check the top-level type: (value, None) or (None, problem)."""
    expected = "a JSON object" if shape is dict else "a JSON array"
    try:
        value = parse_json(text)
    except ValueError as e:
        return None, f"{what} is not {expected} (it {e})"
    if not isinstance(value, shape):
        return None, f"{what} is not {expected} (it is JSON {type(value).__name__})"
    return value, None


# --- datastore records, as the recorders write them ----------------------------------


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return f"a datastore record is {_what(record)}, not an object"
    for key in ("path", "formatter", "storage_class"):
        if type(record.get(key)) is not str:
            return f"a datastore record's {key} is {_what(record.get(key))}, not text"
    for key in ("component", "checksum"):
        if not _optional_text(record.get(key)):
            return f"a datastore record's {key} is {_what(record.get(key))}, not text"
    size = record.get("file_size", -1)
    if type(size) is not int or not -1 <= size <= 2**63 - 1:
        return f"a datastore record's file_size is {_what(size)}, not a size in bytes"
    try:
        check_relative_path(record["path"])
    except PathEscapeError as e:
        return f"{_PATH_PROBLEM} ({e})"
    return None


#: How a record path that leaves the root is reported (readers raise PathEscapeError for it).
_PATH_PROBLEM = "a datastore record's path is unusable"


def _records_problem(records: object) -> str | None:
    if not isinstance(records, list):
        return f"records is {_what(records)}, not an array"
    for record in records:
        problem = _record_problem(record)
        if problem is not None:
            return problem
    return None


# --- events -------------------------------------------------------------------------------

_BOOL_FLAGS = ("adopted", "skipped_existing", "disassociate", "unstore", "purge", "orphan")
_STARTED_TEXT = ("host", "user", "python_version", "library_version")


def _detail_shape(kind: str, detail: dict[str, Any]) -> str | None:
    """What is wrong with the parsed detail of an event of ``kind``, or None."""
    for flag in _BOOL_FLAGS:
        if flag in detail and type(detail[flag]) is not bool:
            return f"detail's {flag} is {_what(detail[flag])}, not true or false"
    if kind == "put" or kind == "prune":
        if "datastore" in detail and not _is_name(detail["datastore"]):
            return f"detail's datastore is {_what(detail['datastore'])}, not a name"
        if "records" in detail:
            problem = _records_problem(detail["records"])
            if problem is not None:
                return problem
        others = detail.get("other_datastores")
        if others is not None:
            if not isinstance(others, dict) or not all(_is_name(n) for n in others):
                return "detail's other_datastores is not an object of datastore names"
            for rows in others.values():
                problem = _records_problem(rows)
                if problem is not None:
                    return problem
        for nested in ("after", "kept"):
            inner = detail.get(nested)
            if inner is not None and not (
                isinstance(inner, dict) and _records_problem(inner.get("records", [])) is None
            ):
                return f"detail's {nested} is not an object of datastore records"
        if "file_size" in detail and not _is_int(detail["file_size"], -1):
            return f"detail's file_size is {_what(detail['file_size'])}, not a size"
        if kind == "prune" and not _optional_text(detail.get("checksum")):
            return f"detail's checksum is {_what(detail.get('checksum'))}, not text"
    elif kind == "quantum_started":
        for key in _STARTED_TEXT:
            if key in detail and not _is_name(detail[key]):
                return f"detail's {key} is {_what(detail[key])}, not text"
        if "pid" in detail and not _is_int(detail["pid"], 0):
            return f"detail's pid is {_what(detail['pid'])}, not a process id"
        definition = detail.get("definition")
        if definition is not None and not (
            type(definition) is str and _HEX64.fullmatch(definition)
        ):
            return f"detail's definition is {_what(definition)}, not a SHA-256 digest"
        tables = detail.get("datastore_tables")
        if tables is not None and not (
            isinstance(tables, dict) and all(_is_name(k) and _is_name(v) for k, v in tables.items())
        ):
            return f"detail's datastore_tables is {_what(tables)}, not an object of names"
        names = detail.get("datastore_names")
        if names is not None and not (isinstance(names, list) and all(_is_name(n) for n in names)):
            return f"detail's datastore_names is {_what(names)}, not an array of names"
        for flag in ("resumed", "skip_existing", "clobber"):
            if flag in detail and type(detail[flag]) is not bool:
                return f"detail's {flag} is {_what(detail[flag])}, not true or false"
    elif kind == "quantum_succeeded":
        caveats = detail.get("caveats", [])
        if not (isinstance(caveats, list) and all(_is_name(c) for c in caveats)):
            return f"detail's caveats is {_what(caveats)}, not an array of names"
        if not _optional_text(detail.get("message")):
            return f"detail's message is {_what(detail.get('message'))}, not text"
    elif kind == "quantum_failed" and not _optional_text(detail.get("traceback")):
        return f"detail's traceback is {_what(detail.get('traceback'))}, not text"
    return None


def detail_problem(kind: str, text: object) -> str | None:
    """What is wrong with an event's ``detail`` (None is fine), or None."""
    if text is None:
        return None
    detail, problem = _json(text, dict, "detail")
    if problem is not None:
        return problem
    return _detail_shape(kind, detail)


def event_problem(raw: Sequence[Any]) -> str | None:
    """What is wrong with the values of one ``events`` row (`EventRow` order), or None.

    Only the row itself: its place in the chain is `ledger.store.verify`'s to check.
    """
    if len(raw) < 14:
        return "the row lacks columns"
    seq, qid, qseq, call_id, attempt, kind, dsid, outcome, etype, emsg, detail, at, prev, digest = (
        raw[:14]
    )
    if seq is not None and not (type(seq) is int and seq >= 1):
        return f"seq is {_what(seq)}, not a positive integer"
    if not is_uuid(qid):
        return f"quantum_id is {_what(qid)}, not a canonical UUID (36 lowercase characters)"
    if not _is_int(qseq):
        return f"quantum_seq is {_what(qseq)}, not a positive integer"
    if not _is_int(call_id) or call_id > qseq:
        return f"call_id is {_what(call_id)}, not the quantum_seq of this call's first event"
    if not _is_int(attempt):
        return f"attempt is {_what(attempt)}, not a positive integer"
    if kind not in _KINDS or type(kind) is not str:
        return f"kind is {_what(kind)}, not an event kind"
    if outcome not in _OUTCOMES or type(outcome) is not str:
        return f"outcome is {_what(outcome)}, not one of {', '.join(sorted(_OUTCOMES))}"
    if kind in _DATASET_KINDS:
        if not is_uuid(dsid):
            return f"dataset_id is {_what(dsid)}, not a canonical UUID"
    elif dsid is not None:
        return f"dataset_id is {_what(dsid)}, but a {kind} event is about no dataset"
    if not _optional_text(etype) or not _optional_text(emsg):
        return "error_type or error_message is not text"
    if not is_time(at):
        return f"recorded_at is {_what(at)}, not a UTC time (YYYY-MM-DDTHH:MM:SS.ffffff+00:00)"
    if not (prev is None or (type(prev) is str and _HEX64.fullmatch(prev))):
        return f"prev_hash is {_what(prev)}, not a SHA-256 digest"
    if not (type(digest) is str and _HEX64.fullmatch(digest)):
        return f"hash is {_what(digest)}, not a SHA-256 digest"
    return detail_problem(kind, detail)


def check_event(raw: Sequence[Any], where: str) -> None:
    """Raise `MalformedRowError` (`MalformedDetailError`) for an ``events`` row breaking a rule."""
    problem = event_problem(raw)
    if problem is not None:
        qid, qseq = raw[1], raw[2]
        error: type[LedgerError] = (
            PathEscapeError
            if _PATH_PROBLEM in problem
            else MalformedDetailError
            if problem.startswith("detail")
            else MalformedRowError
        )
        raise error(
            f"{where}: quantum {show(qid) if not is_uuid(qid) else qid} quantum_seq "
            f"{show(qseq) if type(qseq) is not int else qseq}: {problem}; the ledger was "
            f'damaged or edited (run "qledger verify {where}")'
        )


# --- quanta and datasets ------------------------------------------------------------------

#: ``quanta`` columns in the order the rules (and the definition digest) take them.
QUANTA_COLUMNS = (
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
#: ``datasets`` columns in the order the rules (and the definition digest) take them.
DATASET_COLUMNS = (
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


def _data_id_problem(text: object) -> str | None:
    data_id, problem = _json(text, dict, "data_id")
    if problem is not None:
        return problem
    for key, value in data_id.items():
        if not _is_name(key) or not (
            (type(value) is int and abs(value) <= 2**63 - 1) or _is_name(value)
        ):
            return f"data_id's {show(key)} is {_what(value)}, not an integer or a name"
    return None


def data_id_value(text: object, where: str, what: str) -> dict[str, Any]:
    """A stored data ID, parsed and checked.

    Raises:
        MalformedRowError: it is not a JSON object of names to integers or names.
    """
    problem = _data_id_problem(text)
    if problem is not None:
        raise MalformedRowError(
            f"{where}: {what}: {problem}; the ledger was damaged or edited "
            f'(run "qledger verify {where}")'
        )
    value: dict[str, Any] = json.loads(text)  # type: ignore[arg-type]
    return value


def quanta_problem(row: Sequence[Any]) -> str | None:
    """What is wrong with one ``quanta`` row (`QUANTA_COLUMNS` order), or None."""
    qid, task, data_id, run, created, host, pid, user, python, library, datastore = row[:11]
    if not is_uuid(qid):
        return f"quantum_id is {_what(qid)}, not a canonical UUID"
    for name, value in (("task_label", task), ("host", host), ("user", user)):
        if not _is_name(value):
            return f"{name} is {_what(value)}, not a name"
    for name, value in (("python_version", python), ("library_version", library)):
        if not _is_name(value):
            return f"{name} is {_what(value)}, not a version"
    for name, value in (("run", run), ("datastore_name", datastore)):
        if value is not None and not _is_name(value):
            return f"{name} is {_what(value)}, not a name"
    if not is_time(created):
        return f"created_at is {_what(created)}, not a UTC time"
    if not _is_int(pid, 0):
        return f"pid is {_what(pid)}, not a process id"
    return _data_id_problem(data_id)


def dataset_problem(row: Sequence[Any]) -> str | None:
    """What is wrong with one ``datasets`` row (`DATASET_COLUMNS` order), or None."""
    qid, dsid, role, connection, position, dtype, dims, sclass, data_id, run, records = row[:11]
    if not is_uuid(qid):
        return f"quantum_id is {_what(qid)}, not a canonical UUID"
    if not is_uuid(dsid):
        return f"dataset_id is {_what(dsid)}, not a canonical UUID"
    if role not in _ROLES or type(role) is not str:
        return f"role is {_what(role)}, not input, init_input or output"
    for name, value in (
        ("connection", connection),
        ("dataset_type", dtype),
        ("storage_class", sclass),
        ("run", run),
    ):
        if not _is_name(value):
            return f"{name} is {_what(value)}, not a name"
    if not _is_int(position, 0):
        return f"position is {_what(position)}, not an integer from 0"
    dimensions, problem = _json(dims, list, "dimensions")
    if problem is not None:
        return problem
    if not all(_is_name(d) for d in dimensions):
        return "dimensions is not an array of names"
    problem = _data_id_problem(data_id)
    if problem is not None or records is None:
        return problem
    by_datastore, problem = _json(records, dict, "datastore_records")
    if problem is not None:
        return problem
    for name, rows in by_datastore.items():
        if not _is_name(name):
            return f"datastore_records names datastore {show(name)}"
        problem = _records_problem(rows)
        if problem is not None:
            return f"datastore_records: {problem}"
    return None


def _raise_row(table: str, key: str, problem: str, where: str) -> None:
    raise MalformedRowError(
        f"{where}: the {table} row of {key}: {problem}; the ledger was damaged or edited "
        f'(run "qledger verify {where}")'
    )


def check_quanta(row: Sequence[Any], where: str) -> None:
    """Raise `MalformedRowError` for a ``quanta`` row that breaks a rule."""
    problem = quanta_problem(row)
    if problem is not None:
        _raise_row("quanta", f"quantum {show(row[0])}", problem, where)


def check_dataset(row: Sequence[Any], where: str) -> None:
    """Raise `MalformedRowError` for a ``datasets`` row that breaks a rule."""
    problem = dataset_problem(row)
    if problem is not None:
        key = f"dataset {show(row[1])} of quantum {show(row[0])}"
        _raise_row("datasets", key, problem, where)


def info_problem(rows: Iterable[Sequence[Any]], revision: str | None) -> str | None:
    """What is wrong with the ``ledger_info`` rows (key, value), or None."""
    info = {str(key): value for key, value in rows}
    version = info.get("schema_version")
    if version != revision:
        return (
            f"ledger_info's schema_version is {_what(version)}, but the schema is at "
            f"revision {revision}"
        )
    if not _is_name(info.get("library_version")):
        return f"ledger_info's library_version is {_what(info.get('library_version'))}"
    if not is_time(info.get("created_at")):
        return f"ledger_info's created_at is {_what(info.get('created_at'))}, not a UTC time"
    return None
