"""What the butler writes besides calls: the environment, a new quantum's rows, details.

Shared by `ledger.butler.QuantumBackedButler` and the wrappers that record
other butlers (``ledger.lsst``), so every recorder writes the same rows.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import platform
import socket
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._version import __version__
from .datastore import FileDatastore
from .errors import QuantumStillRunningError
from .events import EventKind, Outcome, canonical_json, clean_text, clean_value, utc_now
from .model import DatasetRef
from .provenance import ProvenanceFold
from .quantum import Quantum
from .records import DatastoreRecordData, StoredFileInfo
from .store.lease import (
    BLOCKING,
    LeaseHolder,
    LeasePolicy,
    holder_text,
    latest_attempt,
    liveness_of,
    take,
)
from .store.log import Entry, EventLog, PendingCall, Transaction
from .store.schema import datasets, quanta
from .store.verify import definition_rows_digest

__all__ = [
    "detail",
    "environment",
    "import_earlier_outputs",
    "is_no_work",
    "keep_caller_error",
    "orphan_removal_detail",
    "quantum_rows",
    "record_quantum_end",
    "record_quantum_start",
    "records_of",
    "replay_quantum",
    "success_caveats",
]


def environment() -> dict[str, Any]:
    """Who and where: host, pid, user, Python and library versions."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "python_version": platform.python_version(),
        "library_version": __version__,
    }


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), default=repr)`` without
#: building an encoder per call (~1 µs of every put's recording).
_DETAIL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)


def detail(**values: Any) -> str | None:
    """Canonical JSON of the values that are not None (None when all are)."""
    kept = {k: v for k, v in values.items() if v is not None}
    if not kept:
        return None
    text = _DETAIL_JSON.encode(kept)
    if "\\ud" in text:  # maybe a lone surrogate (a name decoded with surrogateescape)
        text = _DETAIL_JSON.encode(clean_value(kept))
    return text


@contextlib.contextmanager
def keep_caller_error(error: BaseException, kind: str, logger: Any) -> Iterator[None]:
    """Around recording a call (or a quantum's end) that raised ``error``: never replace it.

    The caller's exception is what the task and its executor must see; if
    recording it fails (a full disk, a lost database server), the failure
    becomes a note on ``error`` and a ``call_not_recorded`` warning, and
    ``error`` propagates unchanged.
    """
    try:
        yield
    except Exception as failure:
        message = f"{type(failure).__name__}: {failure}"
        error.add_note(f"quantum-ledger could not record the failed {kind} ({message})")
        logger.warning("call_not_recorded", kind=kind, error=type(error).__name__, why=message)


def is_no_work(error: BaseException) -> bool:
    """True for any exception whose class, or a base class, is named ``NoWorkFound``."""
    return any(cls.__name__ == "NoWorkFound" for cls in type(error).__mro__)


def success_caveats(
    no_work: bool, predicted_outputs: Iterable[Any], actual_outputs: Iterable[Any]
) -> list[str]:
    """The caveats of a successful quantum, as upstream's executor sets them.

    ``some_outputs_missing`` when a predicted output is not an actual output;
    ``all_outputs_missing`` (with ``some_outputs_missing``, as upstream) when
    none is. A quantum that predicts no outputs misses none.
    """
    predicted = set(predicted_outputs)
    missing = predicted - set(actual_outputs)
    caveats = ["no_work"] if no_work else []
    if missing:
        caveats.append("some_outputs_missing")
        if missing == predicted:
            caveats.append("all_outputs_missing")
    return caveats


def orphan_removal_detail(path: str, checksum: str | None, file_size: int) -> str:
    """The ``detail`` of the ``prune`` event that records deleting an orphan artifact."""
    return canonical_json(
        {
            "orphan": True,
            "unstore": True,
            "purge": False,
            "disassociate": False,
            "path": path,
            "checksum": checksum,
            "file_size": file_size,
        }
    )


def quantum_rows(
    qid: uuid.UUID, quantum: Quantum, datastore_name: str, env: Mapping[str, Any]
) -> list[tuple[Any, list[dict[str, Any]]]]:
    """The ``quanta`` row and the ``datasets`` rows that describe a new quantum."""
    runs = {ref.run for ref in quantum.iter_predicted_outputs()}
    quantum_row = {
        "quantum_id": str(qid),
        "task_label": quantum.task_label,
        "data_id": quantum.data_id.to_json(),
        "run": runs.pop() if len(runs) == 1 else None,
        "created_at": utc_now(),
        "datastore_name": datastore_name,
        **env,
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def add(role: str, connection: str, position: int, ref: DatasetRef) -> None:
        key = (str(ref.id), role)
        if key in rows:
            return  # the same dataset listed twice in one role is recorded once
        records: dict[str, list[dict[str, Any]]] = {}
        for name, data in quantum.datastore_records.items():
            found = records_of(data, ref.id)
            if found:
                records[name] = found
        rows[key] = {
            "quantum_id": str(qid),
            "dataset_id": str(ref.id),
            "role": role,
            "connection": connection,
            "position": position,
            "dataset_type": ref.dataset_type.name,
            "dimensions": json.dumps(list(ref.dataset_type.dimensions)),
            "storage_class": ref.dataset_type.storage_class,
            "data_id": ref.data_id.to_json(),
            "run": ref.run,
            "datastore_records": canonical_json(records) if records else None,
        }

    for connection, refs in quantum.inputs.items():
        for position, ref in enumerate(refs):
            add("input", connection, position, ref)
    for connection, ref in quantum.init_inputs.items():
        add("init_input", connection, 0, ref)
    for connection, refs in quantum.outputs.items():
        for position, ref in enumerate(refs):
            add("output", connection, position, ref)
    return [(quanta, [_clean_row(quantum_row)]), (datasets, [_clean_row(r) for r in rows.values()])]


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with `clean_text` applied to its text values (a task label, a host name)."""
    return {k: clean_text(v) if isinstance(v, str) else v for k, v in row.items()}


def records_of(data: DatastoreRecordData, dataset_id: uuid.UUID) -> list[dict[str, Any]]:
    """The records of one dataset as JSON-ready dicts without the (implied) id."""
    out = []
    for record in data.records.get(dataset_id, ()):
        simple = record.to_simple()
        del simple["dataset_id"]
        out.append(simple)
    return out


def import_earlier_outputs(
    datastore: FileDatastore, fold: ProvenanceFold, *, verify: bool
) -> dict[uuid.UUID, tuple[str, list[dict[str, Any]]]]:
    """Import the records of outputs written by earlier attempts.

    With ``verify``, return those whose artifacts still match them (size and
    checksum): the outputs a ``skip_existing`` resume counts as done.
    """
    parsed = {
        dataset_id: (
            name,
            [StoredFileInfo.model_validate({"dataset_id": dataset_id, **r}) for r in rows],
        )
        for dataset_id, (name, rows) in fold.records.items()
    }
    by_name: dict[str, list[StoredFileInfo]] = {}
    for name, records in parsed.values():
        by_name.setdefault(name, []).extend(records)
    datastore.import_records(
        {name: DatastoreRecordData.from_records(recs) for name, recs in by_name.items()}
    )
    if not verify:
        return {}
    return {
        uuid.UUID(dataset_id): fold.records[dataset_id]
        for dataset_id, (name, records) in parsed.items()
        if name == datastore.name and all(datastore.verify_record(r) is None for r in records)
    }


# --- what every recorder writes besides calls (see ledger.recorder for the calls) -----


def record_quantum_start(
    log: EventLog,
    quantum: Quantum,
    datastore_name: str,
    *,
    quantum_id: uuid.UUID | None = None,
    started: Mapping[str, Any] | None = None,
    lease: LeasePolicy | None = None,
) -> tuple[uuid.UUID, int, LeaseHolder | None]:
    """Append the start of an attempt of ``quantum``: one ``quantum_started`` event.

    The first attempt also inserts the quantum's ``quanta`` and ``datasets``
    rows, in the same transaction, and puts their definition digest in the
    event's detail (with the environment and ``started``); a later attempt
    (the quantum id already has events) inserts no rows.

    In that same transaction (``BEGIN IMMEDIATE``, or PostgreSQL's event-order
    lock) it checks that the previous attempt ended or is dead, and takes the
    quantum's lease (see `ledger.store.lease`): of two executors starting one
    quantum at once, exactly one starts and the other gets the error below.

    Returns:
        The quantum id (``quantum_id``, else ``quantum.id``, else a new uuid4),
        the number of this attempt, and its lease, renewed from now on until
        released (None for an in-memory ledger, which no one else can see).

    Raises:
        QuantumStillRunningError: the previous attempt has no terminal event and
            is still running (a fresh lease; or, without a lease, its pid alive
            on this host). Nothing is written.
    """
    qid = quantum_id or quantum.id or uuid.uuid4()
    policy = lease or LeasePolicy.from_env()
    env = environment()
    definition = quantum_rows(qid, quantum, datastore_name, env)

    def start(tx: Transaction) -> int:
        previous, ended = latest_attempt(tx.rows, str(qid))
        if previous and not ended:
            state, held, recorded = liveness_of(tx.rows, str(qid), previous, log.where)
            if state in BLOCKING:
                raise QuantumStillRunningError(
                    f"quantum {qid} in {log.where} {holder_text(previous, state, held, recorded)}"
                    "; a new attempt starts only once that one ended or is dead: wait for it "
                    "to finish (if its process died elsewhere, for its lease to expire)"
                )
        detail = {**env, **(started or {})}
        if not previous:
            detail["definition"] = definition_rows_digest(definition[0][1][0], definition[1][1])
            for table, rows in definition:
                tx.insert(table, rows)
        entry: Entry = (None, Outcome.OK, None, None, canonical_json(detail))
        tx.append([PendingCall(str(qid), previous + 1, EventKind.QUANTUM_STARTED, [entry])])
        if log.shared:
            take(tx, str(qid), previous + 1, policy)
        return previous + 1

    attempt = log.transact(start)
    holder = LeaseHolder(log, str(qid), attempt, policy) if log.shared else None
    return qid, attempt, holder


def replay_quantum(
    log: EventLog,
    quantum_id: str,
    predicted_inputs: Iterable[str],
    predicted_outputs: Iterable[str],
    *,
    kinds: Iterable[str] | None = None,
    attempt: int | None = None,
) -> ProvenanceFold:
    """Fold one quantum's events (all attempts or one; all kinds or ``kinds``) from ``log``."""
    sql = "SELECT kind, dataset_id, outcome, detail FROM events WHERE quantum_id = ?"
    params: list[Any] = [quantum_id]
    if attempt is not None:
        sql += " AND attempt = ?"
        params.append(attempt)
    if kinds is not None:
        wanted = list(kinds)
        sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
        params.extend(wanted)
    fold = ProvenanceFold(predicted_inputs, predicted_outputs)
    fold.apply_all(log.query(sql + " ORDER BY quantum_seq", params))
    return fold


def record_quantum_end(
    log: EventLog,
    quantum_id: str,
    attempt: int,
    predicted_outputs: Iterable[str],
    error: BaseException | None,
) -> None:
    """Append how an attempt ended: ``quantum_succeeded`` or ``quantum_failed``.

    No error, or a ``NoWorkFound`` (any exception class of that name), is a
    success with ``{"caveats": [...]}`` computed over all attempts (see
    `QuantumBackedButler.finish`); any other error is a failure with its type,
    message and traceback.
    """
    if error is None or is_no_work(error):
        fold = replay_quantum(log, quantum_id, (), predicted_outputs, kinds=("put", "prune"))
        caveats = success_caveats(error is not None, fold.predicted_outputs, fold.actual_outputs)
        message = str(error) if error is not None else None
        entry: Entry = (
            None,
            Outcome.OK,
            None,
            None,
            detail(caveats=caveats or None, message=message),
        )
        log.append(PendingCall(quantum_id, attempt, EventKind.QUANTUM_SUCCEEDED, [entry]))
    else:
        tb = "".join(traceback.format_exception(error))
        entry = (
            None,
            Outcome.ERROR,
            type(error).__name__,
            str(error),
            detail(traceback=tb),
        )
        log.append(PendingCall(quantum_id, attempt, EventKind.QUANTUM_FAILED, [entry]))
