"""Adopting and removing orphan artifacts, each recorded as a new event."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from .._logging import get_logger
from ..datastore import FileDatastore
from ..errors import LedgerError, QuantumStillRunningError, TamperedError
from ..events import EventKind, Outcome, canonical_json
from ..identity import check_datastore_identity
from ..model import DatasetRef
from ..recording import orphan_removal_detail
from ..store.lease import BLOCKING, holder_text, latest_attempt, liveness_of, revoke
from ..store.ledger import Ledger
from ..store.log import EventLog, PendingCall, Transaction
from .inspection import DatastoreArg, LedgerArg, inspect_quantum, scratch, select_quanta
from .report import OrphanAction, OutputInfo, QuantumRecovery

__all__ = ["adopt_orphans", "remove_orphans"]

_log = get_logger(__name__)


def adopt_orphans(
    ledger: LedgerArg,
    datastore: DatastoreArg,
    quantum_id: uuid.UUID | str | None = None,
    *,
    force: bool = False,
    check_datastore: bool = True,
) -> list[OrphanAction]:
    """Record each verified orphan as a ``put`` of its quantum, as if the put had finished.

    Each adoption is a new ``put`` event (outcome ``ok``, detail
    ``{"adopted": true, "datastore": ..., "records": [...]}``), so replay and
    the SQL views count the output as an actual output with no special case.
    It is recorded in the quantum's latest attempt, after its last event:
    adoption is recovery, not a retry, so it starts no attempt and leaves the
    quantum's status as it was. Orphans that do not decode with their storage
    class, or that match what a recorded prune removed, are skipped.

    Raises:
        QuantumStillRunningError: an interrupted quantum may still be running (its
            lease is fresh, on any host; for a ledger without leases: its pid is
            alive on this host) and ``force`` is false; nothing is written. With
            ``force`` the action goes ahead and revokes the lease.
        TamperedError: the quantum's hash chain does not verify; nothing is written.
        LedgerError: the datastore is not the one the quantum used
            (`DatastoreMismatchError`: see `recover`'s ``check_datastore``).
    """
    return _act(ledger, datastore, quantum_id, force=force, adopt=True, check=check_datastore)


def remove_orphans(
    ledger: LedgerArg,
    datastore: DatastoreArg,
    quantum_id: uuid.UUID | str | None = None,
    *,
    force: bool = False,
    check_datastore: bool = True,
) -> list[OrphanAction]:
    """Delete every orphan artifact, each recorded first as a ``prune`` of its quantum.

    The ``prune`` event (outcome ``ok``) has detail ``{"orphan": true,
    "unstore": true, "purge": false, "disassociate": false}`` plus the
    file's path, sha256 and size; it changes no provenance set. Like adoption it
    goes in the quantum's latest attempt after its last event. The event is
    written before the file is deleted, so a crash in between leaves an orphan
    that the next `recover` reports as ``pruned_not_deleted``.

    Raises:
        QuantumStillRunningError, TamperedError, LedgerError: as for `adopt_orphans`.
    """
    return _act(ledger, datastore, quantum_id, force=force, adopt=False, check=check_datastore)


def _act(
    ledger: LedgerArg,
    datastore: DatastoreArg,
    quantum_id: uuid.UUID | str | None,
    *,
    force: bool,
    adopt: bool,
    check: bool,
) -> list[OrphanAction]:
    ds = scratch(datastore)
    where = os.fspath(ledger)
    with Ledger.open(ledger) as led, led.snapshot():
        problems = led.verify().problems
        selected = select_quanta(led, quantum_id)
        if check:
            for qid in selected:
                check_datastore_identity(led, qid, ds)
        plans = [inspect_quantum(led, ds, qid, problems) for qid in selected]
        plans = [(rec, quantum) for rec, quantum in plans if rec.orphans]
        for rec, _ in plans:
            if rec.process in BLOCKING and not force:
                # Before any file is touched; checked again as each event is appended.
                _refuse_running(led.rows, str(rec.quantum_id), where)
    for rec, _ in plans:
        if rec.chain_problems:
            raise TamperedError(
                f"{where}: {rec.chain_problems[0]}; refusing to append to a chain that does "
                f'not verify (run "qledger verify {where}")'
            )
        if rec.datastore_name is not None and rec.datastore_name != ds.name:
            raise LedgerError(
                f"quantum {rec.quantum_id} in {where} used datastore {rec.datastore_name!r}, "
                f"not {ds.name!r}; give the datastore config it ran with"
            )
    actions: list[OrphanAction] = []
    if not plans:
        return actions
    with EventLog(ledger, create=False) as log:
        for rec, quantum in plans:
            refs = {ref.id: ref for ref in quantum.iter_predicted_outputs()}
            for orphan in rec.orphans:
                ref = refs[orphan.dataset_id]
                act = _adopt_one if adopt else _remove_one
                actions.append(act(log, ds, rec, ref, orphan, force))
    return actions


def _refuse_running(rows: Any, qid: str, where: str) -> None:
    """Raise `QuantumStillRunningError` if the quantum's latest attempt may still run."""
    latest, ended = latest_attempt(rows, qid)
    if not latest or ended:
        return
    state, lease, started = liveness_of(rows, qid, latest, where)
    if state in BLOCKING:
        raise QuantumStillRunningError(
            f"quantum {qid} in {where} {holder_text(latest, state, lease, started)}; "
            "stop it first, or if you know it is dead act anyway with force=True "
            "(qledger recover --force)"
        )


def _recorded(
    log: EventLog, rec: QuantumRecovery, kind: str, ref: DatasetRef, detail: str, force: bool
) -> int:
    """Append one call to the quantum's latest attempt; its quantum_seq.

    In one transaction with the append: the check that the quantum is not
    running (unless ``force``), and the revocation of a lease it left behind,
    so a recorder presumed dead that wakes up finds it lost.
    """
    qid = str(rec.quantum_id)
    attempt = max(rec.attempts, 1)
    entry = (str(ref.id), Outcome.OK.value, None, None, detail)

    def append(tx: Transaction) -> int:
        if not force:
            _refuse_running(tx.rows, qid, log.where)
        revoke(tx, qid, attempt)
        tx.append([PendingCall(qid, attempt, kind, [entry])])
        ((seq,),) = tx.rows("SELECT MAX(quantum_seq) FROM events WHERE quantum_id = ?", [qid])
        return int(seq)

    return log.transact(append)


def _adopt_one(
    log: EventLog,
    ds: FileDatastore,
    rec: QuantumRecovery,
    ref: DatasetRef,
    orphan: OutputInfo,
    force: bool,
) -> OrphanAction:
    action = {"quantum_id": rec.quantum_id, "dataset_id": ref.id, "path": orphan.path}
    if orphan.orphan_reason != "unrecorded_write":
        reason = "a recorded prune removed these bytes; remove the file instead of adopting it"
        return OrphanAction(**action, action="skipped", reason=reason)
    if not orphan.verified:
        return OrphanAction(**action, action="skipped", reason=orphan.problem)
    try:
        record = scratch(ds).adopt(ref)  # read and decoded again: it may have changed since
    except (LedgerError, OSError) as e:
        return OrphanAction(**action, action="skipped", reason=str(e))
    simple = record.to_simple()
    del simple["dataset_id"]
    detail = canonical_json({"adopted": True, "datastore": ds.name, "records": [simple]})
    seq = _recorded(log, rec, EventKind.PUT, ref, detail, force)
    _log.info("orphan_adopted", quantum_id=str(rec.quantum_id), path=record.path, quantum_seq=seq)
    return OrphanAction(**action, action="adopted", quantum_seq=seq)


def _remove_one(
    log: EventLog,
    ds: FileDatastore,
    rec: QuantumRecovery,
    ref: DatasetRef,
    orphan: OutputInfo,
    force: bool,
) -> OrphanAction:
    action = {"quantum_id": rec.quantum_id, "dataset_id": ref.id, "path": orphan.path}
    try:
        found = ds.artifact_at(ref)  # read again, through the guard: it may have changed
    except (LedgerError, OSError) as e:
        return OrphanAction(**action, action="skipped", reason=str(e))
    if found is None:
        return OrphanAction(**action, action="skipped", reason="the file is gone already")
    relative, data = found
    detail = orphan_removal_detail(relative, hashlib.sha256(data).hexdigest(), len(data))
    seq = _recorded(log, rec, EventKind.PRUNE, ref, detail, force)
    ds.remove_artifact(relative)
    _log.info("orphan_removed", quantum_id=str(rec.quantum_id), path=relative, quantum_seq=seq)
    return OrphanAction(**action, action="removed", quantum_seq=seq)
