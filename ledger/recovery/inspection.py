"""Reading one ledger and one datastore into a `RecoveryReport`, changing neither."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..config import datastore_from_config
from ..datastore import FileDatastore
from ..errors import LedgerError, NotARegularFileError, PathEscapeError
from ..events import EventKind, EventRow, Outcome, parse_detail
from ..identity import check_datastore_identity, require_root
from ..model import DatasetRef
from ..pathguard import file_kind
from ..provenance import ProvenanceFold
from ..quantum import Quantum
from ..records import StoredFileInfo
from ..store.connect import display_target
from ..store.lease import Liveness, liveness, read_lease
from ..store.ledger import Ledger
from ..store.validate import check_event
from .report import (
    AttemptInfo,
    DatasetInfo,
    OrphanReason,
    OutputInfo,
    OutputState,
    QuantumRecovery,
    RecoveryReport,
    Status,
)

__all__ = [
    "DatastoreArg",
    "LedgerArg",
    "inspect_quantum",
    "recover",
    "scratch",
    "select_quanta",
]

DatastoreArg = str | os.PathLike[str] | Mapping[str, Any] | FileDatastore
LedgerArg = str | os.PathLike[str]

_LIFECYCLE = ("quantum_started", "quantum_succeeded", "quantum_failed")


def recover(
    ledger: LedgerArg,
    datastore: DatastoreArg,
    *,
    quantum_id: uuid.UUID | str | None = None,
    check_datastore: bool = True,
) -> RecoveryReport:
    """Report on every failed or interrupted quantum of ``ledger`` (or the one named).

    Read-only: the ledger's bytes and the datastore's files are left as they
    were. ``datastore`` is a `FileDatastore`, or a config as for the butler (a
    root directory, a mapping or a YAML file); its records are not used or
    changed, artifacts are checked against the records in the ledger. Unless
    ``check_datastore`` is false, a root that does not exist or is not the
    datastore a quantum ran with is refused (see `ledger.identity`).

    Raises:
        DatastoreMismatchError: the datastore root is missing or another one.
        LedgerError: the ledger cannot be read (`LedgerNotFoundError`,
            `NotALedgerError`, `LedgerCorruptError`, `SchemaTooOldError`,
            `SchemaTooNewError`).
        MalformedDetailError: an event needed here has a detail that is not JSON.
        UnknownQuantumError: ``quantum_id`` is not in the ledger.
    """
    ds = scratch(datastore)
    with Ledger.open(ledger) as led, led.snapshot():
        problems = led.verify().problems
        selected = select_quanta(led, quantum_id)
        if check_datastore:
            require_root(ds)
            for qid in selected:
                check_datastore_identity(led, qid, ds)
        quanta = [inspect_quantum(led, ds, qid, problems)[0] for qid in selected]
    return RecoveryReport(
        ledger=display_target(ledger),
        datastore_root=str(ds.root),
        datastore_name=ds.name,
        quanta=quanta,
        ok=not any(q.needs_attention for q in quanta),
    )


def scratch(datastore: DatastoreArg) -> FileDatastore:
    """A datastore on the same root without records, so nothing of the caller's changes."""
    given = datastore if isinstance(datastore, FileDatastore) else datastore_from_config(datastore)
    return FileDatastore(
        given.root, name=given.name, storage_classes=given.storage_classes, fsync=given.fsync
    )


def select_quanta(led: Ledger, quantum_id: uuid.UUID | str | None) -> list[str]:
    """The named quantum, or every quantum whose latest attempt did not succeed."""
    if quantum_id is not None:
        return [led.resolve_quantum(quantum_id)]
    last: dict[str, str] = {}
    for qid, kind in led.rows(
        "SELECT quantum_id, kind FROM events WHERE kind IN (?, ?, ?) "
        "ORDER BY quantum_id, quantum_seq",
        _LIFECYCLE,
    ):
        last[qid] = kind
    ids = [str(q) for q in led.quantum_ids()]
    return [q for q in ids if last.get(q) != EventKind.QUANTUM_SUCCEEDED]


def inspect_quantum(
    led: Ledger, ds: FileDatastore, qid: str, problems: list[str]
) -> tuple[QuantumRecovery, Quantum]:
    """What recovery knows about one quantum (``problems``: `Ledger.verify`'s), and the quantum."""
    info = led.info(qid)
    quantum = led.quantum(qid)
    history = _History(led.where, qid, *led.predicted(qid))
    rows = led.rows(
        "SELECT " + ", ".join(EventRow._fields) + " FROM events WHERE quantum_id = ? "
        "ORDER BY quantum_seq",
        [qid],
    )
    try:
        history.read(_checked(rows, led.where))
    finally:
        rows.close()  # on an error, now, while the connection is open
    fold = history.fold
    attempts = history.attempts()
    latest = attempts[-1] if attempts else None
    status: Status = latest.status if latest is not None else "interrupted"
    host = latest.host if latest is not None and latest.host else info.host
    pid = latest.pid if latest is not None and latest.pid is not None else info.pid
    process: Liveness | None = None
    lease_expires_at = None
    if status == "interrupted":
        number = latest.attempt if latest is not None else 0
        lease = read_lease(led.rows, qid, led.where)
        if lease is not None and lease.attempt == number:
            host, pid, lease_expires_at = lease.host, lease.pid, lease.expires_at
        process = liveness(lease, number, (host, pid))
    failed = history.failure if status == "failed" else {}
    name = info.datastore_name or ds.name

    outputs: dict[OutputState, list[OutputInfo]] = {
        s: [] for s in ("verified", "damaged", "unstored", "orphan", "missing")
    }
    for ref in _unique(quantum.iter_predicted_outputs()):
        out = _output(ds, ref, fold, history.removed_checksums.get(str(ref.id)))
        outputs[out.state].append(out)
    input_paths = _input_paths(quantum, name)
    predicted_inputs = list(_unique(quantum.iter_predicted_inputs()))
    provenance = fold.result(name)
    recovery = QuantumRecovery(
        quantum_id=uuid.UUID(qid),
        task_label=info.task_label,
        data_id=info.data_id,
        run=info.run,
        datastore_name=info.datastore_name,
        status=status,
        process=process,
        lease_expires_at=lease_expires_at,
        host=host,
        pid=pid,
        attempts=max((a.attempt for a in attempts), default=0),
        attempt_history=attempts,
        error_type=failed.get("error_type"),
        error_message=failed.get("error_message"),
        traceback=failed.get("traceback"),
        caveats=list(latest.caveats) if latest is not None else [],
        started_at=latest.started_at if latest is not None else None,
        ended_at=latest.ended_at if latest is not None else None,
        last_quantum_seq=history.last_seq,
        last_event_at=history.last_at,
        provenance=provenance,
        inputs_read=[
            _info(ref, input_paths.get(ref.id))
            for ref in predicted_inputs
            if ref.id in provenance.actual_inputs
        ],
        inputs_unavailable=[
            _info(ref, input_paths.get(ref.id))
            for ref in predicted_inputs
            if str(ref.id) in fold.unavailable
        ],
        outputs_verified=outputs["verified"],
        outputs_damaged=outputs["damaged"],
        outputs_unstored=outputs["unstored"],
        outputs_missing=outputs["missing"],
        orphans=outputs["orphan"],
        chain_problems=[p for p in problems if p.startswith(f"quantum {qid}:")],
    )
    return recovery, quantum


def _checked(rows: Iterable[tuple[Any, ...]], where: str) -> Iterator[tuple[Any, ...]]:
    """The columns `_History.read` takes of each events row, each row checked first."""
    for row in rows:
        check_event(row, where)
        yield row[2], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11]


class _History:
    """One pass over a quantum's events: the replay fold plus what recovery needs besides."""

    def __init__(self, target: str, qid: str, inputs: list[str], outputs: list[str]) -> None:
        self.where = f"{target}: quantum {qid}"
        self.fold = ProvenanceFold(inputs, outputs)
        self._attempts: dict[int, dict[str, Any]] = {}
        self.failure: dict[str, Any] = {}
        #: dataset id -> sha256 of the artifact a recorded prune last removed.
        self.removed_checksums: dict[str, str | None] = {}
        self.last_seq = 0
        self.last_at: str | None = None

    def read(self, rows: Iterable[tuple[Any, ...]]) -> None:
        for seq, attempt, kind, dataset_id, outcome, etype, emessage, text, at in rows:
            self.last_seq, self.last_at = seq, at
            detail: dict[str, Any] = {}
            if kind in _LIFECYCLE or kind in ("put", "prune"):
                detail = parse_detail(text, where=f"{self.where} quantum_seq {seq}") or {}
            if kind in _LIFECYCLE:
                self._lifecycle(attempt, kind, etype, emessage, detail, at)
            elif outcome == Outcome.OK and dataset_id is not None:
                self._dataset(kind, dataset_id, detail)
            self.fold.apply(kind, dataset_id, outcome, text)

    def _lifecycle(
        self,
        attempt: int,
        kind: str,
        error_type: str | None,
        error_message: str | None,
        detail: dict[str, Any],
        at: str,
    ) -> None:
        entry = self._attempts.setdefault(attempt, {"attempt": attempt, "status": "interrupted"})
        if kind == EventKind.QUANTUM_STARTED:
            entry.update(
                started_at=at,
                host=detail.get("host"),
                pid=detail.get("pid"),
                resumed=bool(detail.get("resumed", False)),
                skip_existing=bool(detail.get("skip_existing", False)),
                clobber=bool(detail.get("clobber", False)),
            )
        elif kind == EventKind.QUANTUM_SUCCEEDED:
            entry.update(status="succeeded", ended_at=at, caveats=list(detail.get("caveats", [])))
        else:
            entry.update(
                status="failed", ended_at=at, error_type=error_type, error_message=error_message
            )
            self.failure = {
                "error_type": error_type,
                "error_message": error_message,
                "traceback": detail.get("traceback"),
            }

    def _dataset(self, kind: str, dataset_id: str, detail: dict[str, Any]) -> None:
        if kind == EventKind.PUT:
            self.removed_checksums.pop(dataset_id, None)
        elif kind == EventKind.PRUNE and detail.get("unstore"):
            if detail.get("orphan"):
                self.removed_checksums[dataset_id] = detail.get("checksum")
            else:
                live = self.fold.records.get(dataset_id)
                rows = live[1] if live is not None else []
                if rows:
                    self.removed_checksums[dataset_id] = rows[0].get("checksum")

    def attempts(self) -> list[AttemptInfo]:
        return [AttemptInfo.model_validate(self._attempts[k]) for k in sorted(self._attempts)]


def _unique(refs: Iterable[DatasetRef]) -> Iterable[DatasetRef]:
    seen: set[uuid.UUID] = set()
    for ref in refs:
        if ref.id not in seen:
            seen.add(ref.id)
            yield ref


def _info(ref: DatasetRef, path: str | None = None) -> DatasetInfo:
    return DatasetInfo(
        dataset_id=ref.id,
        dataset_type=ref.dataset_type.name,
        data_id=dict(ref.data_id),
        run=ref.run,
        path=path,
    )


def _input_paths(quantum: Quantum, name: str) -> dict[uuid.UUID, str]:
    data = quantum.datastore_records.get(name)
    if data is None:
        return {}
    return {dsid: records[0].path for dsid, records in data.records.items() if records}


def _output(
    ds: FileDatastore, ref: DatasetRef, fold: ProvenanceFold, removed: str | None
) -> OutputInfo:
    """Classify one predicted output (see `OutputInfo`)."""
    base = _info(ref).model_dump()
    live = fold.records.get(str(ref.id))
    if live is not None:
        problems: list[str] = []
        rows = live[1]
        for row in rows:
            try:
                record = StoredFileInfo.model_validate({"dataset_id": ref.id, **row})
            except (LedgerError, ValueError) as e:
                problems.append(f"record of {ref.id} is unusable: {e}")
                continue
            problem = ds.verify_record(record)
            if problem is not None:
                problems.append(problem)
        base["path"] = rows[0].get("path") if rows else None
        state: OutputState = "damaged" if problems or not rows else "verified"
        problem_text = "; ".join(problems) or (None if rows else "the put recorded no record")
        return OutputInfo(**base, state=state, problem=problem_text)
    orphan = _orphan(ds, ref, removed, base)
    if orphan is not None:
        return orphan
    state = "unstored" if str(ref.id) in fold.actual_outputs else "missing"
    return OutputInfo(**base, state=state)


def _orphan(
    ds: FileDatastore, ref: DatasetRef, removed: str | None, base: dict[str, Any]
) -> OutputInfo | None:
    """The orphan at the output's path, if a file is there (it is read, never changed)."""
    try:
        found = ds.artifact_at(ref)
    except PathEscapeError as e:
        return OutputInfo(**base, state="missing", problem=f"{e}; left alone")
    except NotARegularFileError:
        what = _not_regular(ds, ref)
        return OutputInfo(**base, state="missing", problem=what)
    except (LedgerError, OSError) as e:
        return OutputInfo(**base, state="missing", problem=f"cannot look for an artifact: {e}")
    if found is None:
        return None
    relative, data = found
    checksum = hashlib.sha256(data).hexdigest()
    reason: OrphanReason = "pruned_not_deleted" if removed == checksum else "unrecorded_write"
    problem = None
    try:
        scratch(ds).adopt(ref)  # reads and decodes it; only the throwaway instance learns
    except (LedgerError, OSError) as e:
        problem = f"does not decode as {ref.dataset_type.storage_class!r}: {e}"
    return OutputInfo(
        **{**base, "path": relative},
        state="orphan",
        problem=problem,
        orphan_reason=reason,
        verified=problem is None,
        file_size=len(data),
        checksum=checksum,
    )


def _not_regular(ds: FileDatastore, ref: DatasetRef) -> str:
    """The problem of a FIFO (device, directory...) where an output's artifact goes."""
    path = ds.artifact_path(ref)
    relative = path.relative_to(ds.root).as_posix()
    try:
        kind = file_kind(os.lstat(path).st_mode)
    except OSError:
        kind = "something other than a regular file"
    return f"{relative} is {kind}, not an artifact (a regular file); left alone"
