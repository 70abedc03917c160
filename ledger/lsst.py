"""Record a real ``lsst.daf.butler`` butler: the LSST stack keeps running, the ledger records.

`RecordingButler` wraps any upstream ``LimitedButler`` — in particular
upstream's ``QuantumBackedButler`` — by delegation: every call goes to the
wrapped butler unchanged and is then recorded as this library's events, with
the same kinds, outcomes and details as `ledger.QuantumBackedButler` and the
same lifecycle events. Replaying the ledger gives the same provenance as the
wrapped butler's own ``extract_provenance_data()`` (a differential test holds
them equal), but durably, call by call.

`to_upstream` and `from_upstream` convert `ledger.QuantumProvenanceData` to
and from upstream's ``QuantumProvenanceData``, datastore records included, so
an executor keeps writing the provenance files it writes today.

This is the only module of the package that imports ``lsst.*``; it needs the
``lsst`` extra (``pip install 'quantum-ledger[lsst]'``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import numbers
import os
import uuid
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

try:
    from lsst.daf.butler import DeferredDatasetHandle as _UpstreamHandle
    from lsst.daf.butler import LimitedButler as _UpstreamLimitedButler
    from lsst.daf.butler import QuantumProvenanceData as _UpstreamProvenance
    from lsst.daf.butler.datastore.record_data import DatastoreRecordData as _UpstreamRecordData
    from lsst.daf.butler.datastore.stored_file_info import StoredFileInfo as _UpstreamFileInfo
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ledger.lsst needs the LSST data butler (lsst-daf-butler); install the extra with "
        "pip install 'quantum-ledger[lsst]'"
    ) from e

from ._logging import get_logger
from .errors import LedgerBusyError, LedgerDiskFullError, LedgerError, PathEscapeError
from .events import EventKind, Outcome
from .model import DatasetRef, DatasetType
from .provenance import ProvenanceFold, QuantumProvenanceData
from .quantum import Quantum
from .recording import detail as _detail
from .recording import (
    keep_caller_error,
    record_quantum_end,
    record_quantum_start,
    replay_quantum,
)
from .records import RECORDS_TABLE, DatastoreRecordData, StoredFileInfo, check_relative_path
from .store.lease import LeasePolicy
from .store.log import Durability, Entry, EventLog, PendingCall

__all__ = ["RecordingButler", "from_upstream", "quantum_from_upstream", "to_upstream"]

_log = get_logger(__name__)

#: What upstream's QuantumBackedButler.get treats as "not there" (it marks the id unavailable).
_MISSING_ERRORS = (LookupError, FileNotFoundError, OSError)


# --- conversions ------------------------------------------------------------------


def _plain(value: Any) -> int | str:
    """A data ID value as JSON: upstream's are int or str (numpy ints become int)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return str(value)


def _ref_from_upstream(ref: Any) -> DatasetRef:
    """Our `DatasetRef` for an upstream one: same id, type name, storage class, data ID, run."""
    dataset_type = ref.datasetType
    return DatasetRef(
        dataset_type=DatasetType(
            name=dataset_type.name,
            dimensions=tuple(str(d) for d in dataset_type.dimensions.required),
            storage_class=dataset_type.storageClass_name,
        ),
        # The full mapping when the data ID has one, as upstream's own to_simple() writes it.
        data_id={str(k): _plain(v) for k, v in ref.dataId.mapping.items()},
        run=ref.run,
        id=ref.id,
    )


def _record_dict(info: Any) -> dict[str, Any]:
    """One upstream file record as our record dict (no dataset id).

    Raises:
        LedgerError: the record is not a file record (``StoredFileInfo``).
    """
    if not isinstance(info, _UpstreamFileInfo):
        raise LedgerError(
            f"cannot convert datastore record of class {type(info).__name__}: only file "
            "records (lsst.daf.butler StoredFileInfo) have an equivalent here"
        )
    return {
        "path": info.path,
        "formatter": info.formatter,
        "storage_class": info.storage_class_name,
        "component": info.component,
        "checksum": info.checksum,
        "file_size": info.file_size,
    }


def _records_from_upstream(data: Any) -> DatastoreRecordData:
    """Upstream ``DatastoreRecordData`` (per id, per table) as ours (per id).

    Every opaque table's file records are kept; ids listed without records stay
    listed. Our serialized form names one table, ``file_datastore_records``
    (upstream's default name for file datastores).
    """
    records: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
    for dataset_id, tables in data.records.items():
        records[dataset_id] = tuple(
            StoredFileInfo.model_validate({"dataset_id": dataset_id, **_record_dict(info)})
            for infos in tables.values()
            for info in infos
        )
    return DatastoreRecordData(records=records)


def _records_to_upstream(data: DatastoreRecordData) -> Any:
    """Our `DatastoreRecordData` as upstream's, in its ``file_datastore_records`` table."""
    records: dict[uuid.UUID, dict[str, list[Any]]] = {}
    for dataset_id, infos in data.records.items():
        rows = [{k: v for k, v in r.to_simple().items() if k != "dataset_id"} for r in infos]
        tables = {RECORDS_TABLE: [_UpstreamFileInfo.from_record(row) for row in rows]}
        records[dataset_id] = tables if rows else {}
    return _UpstreamRecordData(records=records)


def to_upstream(provenance: QuantumProvenanceData) -> Any:
    """Our `QuantumProvenanceData` as upstream's (``lsst.daf.butler.QuantumProvenanceData``).

    The datastore records take upstream's serialized shape
    (``{"dataset_ids": [...], "records": {record class: {id hex: {table: [...]}}}}``),
    built by upstream's own ``DatastoreRecordData.to_simple``.
    """
    return _UpstreamProvenance(
        predicted_inputs=set(provenance.predicted_inputs),
        available_inputs=set(provenance.available_inputs),
        actual_inputs=set(provenance.actual_inputs),
        predicted_outputs=set(provenance.predicted_outputs),
        actual_outputs=set(provenance.actual_outputs),
        datastore_records={
            name: _records_to_upstream(provenance.record_data(name)).to_simple()
            for name in provenance.datastore_records
        },
    )


def from_upstream(provenance: Any) -> QuantumProvenanceData:
    """Upstream's ``QuantumProvenanceData`` (or its JSON-decoded dict) as ours.

    Raises:
        LedgerError: a datastore record that is not a file record.
        PathEscapeError: a record whose path is absolute (a file ingested in place).
    """
    if isinstance(provenance, Mapping):
        provenance = _UpstreamProvenance.direct(**provenance)
    return QuantumProvenanceData(
        predicted_inputs=set(provenance.predicted_inputs),
        available_inputs=set(provenance.available_inputs),
        actual_inputs=set(provenance.actual_inputs),
        predicted_outputs=set(provenance.predicted_outputs),
        actual_outputs=set(provenance.actual_outputs),
        datastore_records={
            name: _records_from_upstream(_UpstreamRecordData.from_simple(data)).serialize()
            for name, data in provenance.datastore_records.items()
        },
    )


def _escapes_root(path: str) -> bool:
    try:
        check_relative_path(path)
    except PathEscapeError:
        return True
    return False


def quantum_from_upstream(
    quantum: Any, *, task_label: str | None = None
) -> tuple[Quantum, dict[str, dict[str, list[dict[str, Any]]]]]:
    """Our `Quantum` for an upstream ``lsst.daf.butler.Quantum`` (same dataset ids).

    Upstream's quantum names the task class, not its label: ``task_label``
    defaults to ``quantum.taskName``. Input records whose path is absolute (files
    ingested in place, outside the datastore root) cannot be ours; they are
    returned apart, per datastore and dataset id, for the caller to keep.

    Returns:
        The quantum, and the records that were left out of it.
    """
    datastore_records: dict[str, DatastoreRecordData] = {}
    external: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, data in (quantum.datastore_records or {}).items():
        kept: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
        for dataset_id, tables in data.records.items():
            rows = [_record_dict(info) for infos in tables.values() for info in infos]
            inside = [r for r in rows if not _escapes_root(r["path"])]
            if len(inside) < len(rows):
                outside = [r for r in rows if _escapes_root(r["path"])]
                external.setdefault(name, {})[str(dataset_id)] = outside
            kept[dataset_id] = tuple(
                StoredFileInfo.model_validate({"dataset_id": dataset_id, **r}) for r in inside
            )
        datastore_records[name] = DatastoreRecordData(records=kept)
    data_id = quantum.dataId
    ours = Quantum(
        task_label=task_label or quantum.taskName or "unknown",
        data_id={} if data_id is None else {str(k): _plain(v) for k, v in data_id.mapping.items()},
        inputs={
            dt.name: tuple(_ref_from_upstream(r) for r in refs)
            for dt, refs in quantum.inputs.items()
        },
        init_inputs={dt.name: _ref_from_upstream(r) for dt, r in quantum.initInputs.items()},
        outputs={
            dt.name: tuple(_ref_from_upstream(r) for r in refs)
            for dt, refs in quantum.outputs.items()
        },
        datastore_records=datastore_records,
    )
    return ours, external


def _storage_class_name(storage_class: Any) -> str | None:
    if storage_class is None:
        return None
    return str(getattr(storage_class, "name", storage_class))


def _provenance_summary(provenance: Any) -> dict[str, Any] | None:
    """A put's ``provenance=``, compactly: quantum id and input ids (refs are in ``datasets``)."""
    if provenance is None:
        return None
    summary: dict[str, Any] = {
        "quantum_id": str(provenance.quantum_id) if provenance.quantum_id else None,
        "inputs": [str(getattr(ref, "id", ref)) for ref in provenance.inputs],
    }
    extras = getattr(provenance, "extras", None)
    if extras:
        summary["extras"] = {str(k): v for k, v in extras.items()}
    return summary


# --- the recording wrapper ------------------------------------------------------------


class RecordingButler:
    """An upstream ``LimitedButler`` whose every call is recorded in a ledger.

    Build it around the butler that runs one quantum (usually upstream's
    ``QuantumBackedButler``) and hand it to the task instead; use it as a
    context manager so that its exit records how the quantum ended. The
    wrapped butler stays the caller's: closing this one closes only the ledger.

    Args:
        butler: the upstream ``LimitedButler`` to delegate to.
        quantum: the upstream ``Quantum`` it runs, recorded in ``quanta`` and
            ``datasets`` (with the inputs' datastore records).
        ledger: a ledger file path or an SQLAlchemy URL (created if missing).
        durability: ``"full"``, ``"normal"`` or ``"batch"``, as for
            `ledger.QuantumBackedButler`.
        quantum_id: the quantum's id (e.g. the quantum graph node id); a new
            uuid4 when omitted. An id already in the ledger records a new attempt.
        task_label: the task's label; upstream's quantum only names its class.
        lease: how often the quantum's lease is renewed and how long it lasts
            (`ledger.LeasePolicy`); as for `ledger.QuantumBackedButler.initialize`.

    Raises:
        QuantumStillRunningError: the quantum id is in the ledger and its latest
            attempt is still running (on any host); nothing is written.
    """

    def __init__(
        self,
        butler: Any,
        quantum: Any,
        *,
        ledger: str | os.PathLike[str] = ":memory:",
        durability: Durability = "normal",
        quantum_id: uuid.UUID | str | None = None,
        task_label: str | None = None,
        batch_size: int = 1000,
        lease: LeasePolicy | None = None,
    ) -> None:
        self._butler = butler
        self.quantum = quantum
        ours, external = quantum_from_upstream(quantum, task_label=task_label)
        names = tuple(butler.get_datastore_names())
        #: The datastore the provenance's records are keyed by (the first, if chained).
        self.datastore_name: str = names[0] if names else "datastore"
        self._predicted_inputs = frozenset(str(r.id) for r in ours.iter_predicted_inputs())
        self._predicted_outputs = frozenset(str(r.id) for r in ours.iter_predicted_outputs())
        started: dict[str, Any] = {
            "wrapped_butler": f"{type(butler).__module__}.{type(butler).__qualname__}",
            "lsst_daf_butler_version": importlib.metadata.version("lsst-daf-butler"),
            "task_name": quantum.taskName,
        }
        if external:
            started["external_input_records"] = external
        log = EventLog(ledger, durability=durability, batch_size=batch_size)
        try:
            qid, attempt, holder = record_quantum_start(
                log,
                ours,
                self.datastore_name,
                quantum_id=uuid.UUID(str(quantum_id)) if quantum_id is not None else None,
                started=started,
                lease=lease,
            )
        except BaseException:
            log.close()
            raise
        self._log = log
        self._lease = holder
        if holder is not None:
            weakref.finalize(self, holder.stop)  # dropped without close: the lease expires
        self.quantum_id: uuid.UUID = qid
        self.attempt: int = attempt
        self._qid = str(qid)
        self._finished = False
        self._logger = _log.bind(quantum_id=self._qid, task=ours.task_label, attempt=attempt)

    def __getattr__(self, name: str) -> Any:
        """Anything not recorded here (URIs, storage classes, ...) is the wrapped butler's."""
        if name == "_butler":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._butler, name)

    # --- recording ------------------------------------------------------------------

    def _record(self, kind: str, entries: list[Entry], error: BaseException | None = None) -> None:
        """Record one call; for a call that raised ``error``, see `keep_caller_error`."""
        if not entries:
            return
        if error is None:
            self._log.append(PendingCall(self._qid, self.attempt, kind, entries))
            return
        with keep_caller_error(error, kind, self._logger):
            self._log.append(PendingCall(self._qid, self.attempt, kind, entries))

    def _record_one(
        self,
        kind: str,
        ref: Any,
        outcome: str,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> None:
        self._record(
            kind,
            [
                (
                    str(ref.id),
                    outcome,
                    type(error).__name__ if error is not None else None,
                    str(error) if error is not None else None,
                    detail,
                )
            ],
            error,
        )

    def _datastore_records(self, refs: list[Any]) -> dict[Any, tuple[str, list[dict[str, Any]]]]:
        """Per dataset id, its datastore and the records held now (read back, not guessed)."""
        found: dict[Any, tuple[str, list[dict[str, Any]]]] = {}
        for name, data in self._butler._datastore.export_records(refs).items():
            for dataset_id, tables in data.records.items():
                rows = [_record_dict(i) for infos in tables.values() for i in infos]
                if rows and dataset_id not in found:
                    found[dataset_id] = (name, rows)
        return found

    def _written(self, ref: Any) -> tuple[str, list[dict[str, Any]]]:
        """The datastore and records that hold ``ref`` now (none: the default datastore)."""
        return self._datastore_records([ref]).get(ref.id, (self.datastore_name, []))

    # --- the LimitedButler API ----------------------------------------------------------

    @property
    def dimensions(self) -> Any:
        """The wrapped butler's dimension universe."""
        return self._butler.dimensions

    def isWriteable(self) -> bool:
        """Whether the wrapped butler writes (upstream's quantum-backed butler does)."""
        return bool(self._butler.isWriteable())

    def get(
        self,
        ref: Any,
        /,
        *,
        parameters: dict[str, Any] | None = None,
        storageClass: Any = None,
    ) -> Any:
        """Read through the wrapped butler; recorded after the read with its outcome.

        ``LookupError``, ``FileNotFoundError`` and ``OSError`` are ``missing``
        (upstream marks the id unavailable); any other error is ``error``.
        """
        detail = _detail(parameters=parameters, storage_class=_storage_class_name(storageClass))
        try:
            obj = self._butler.get(ref, parameters=parameters, storageClass=storageClass)
        except _MISSING_ERRORS as e:
            self._record_one(EventKind.GET, ref, Outcome.MISSING, e, detail)
            raise
        except Exception as e:
            self._record_one(EventKind.GET, ref, Outcome.ERROR, e, detail)
            raise
        self._record_one(EventKind.GET, ref, Outcome.OK, None, detail)
        return obj

    def getDeferred(
        self,
        ref: Any,
        /,
        *,
        parameters: dict[str, Any] | None = None,
        storageClass: Any = None,
    ) -> Any:
        """A handle whose ``get()`` is a recorded `get`; a predicted input counts as used now."""
        detail = _detail(parameters=parameters, storage_class=_storage_class_name(storageClass))
        try:
            handle = self._butler.getDeferred(ref, parameters=parameters, storageClass=storageClass)
        except _MISSING_ERRORS as e:
            self._record_one(EventKind.GET_DEFERRED, ref, Outcome.MISSING, e, detail)
            raise
        except Exception as e:
            self._record_one(EventKind.GET_DEFERRED, ref, Outcome.ERROR, e, detail)
            raise
        self._record_one(EventKind.GET_DEFERRED, ref, Outcome.OK, None, detail)
        # Upstream's handle, pointed at this butler so that loading it is recorded.
        recorder: Any = self  # a LimitedButler by registration, which type checkers cannot see
        return _UpstreamHandle(
            butler=recorder,
            ref=handle.ref,
            parameters=handle.parameters,
            storageClass=handle.storageClass,
        )

    def stored(self, ref: Any) -> bool:
        """Whether the artifact exists; recorded (``ok`` or ``missing``)."""
        try:
            found = bool(self._butler.stored(ref))
        except Exception as e:
            self._record_one(EventKind.STORED, ref, Outcome.ERROR, e)
            raise
        self._record_one(EventKind.STORED, ref, Outcome.OK if found else Outcome.MISSING)
        return found

    def stored_many(self, refs: Iterable[Any]) -> dict[Any, bool]:
        """`stored` for many refs: one call, one transaction, one row per ref."""
        refs = list(refs)
        try:
            existence: dict[Any, bool] = self._butler.stored_many(refs)
        except Exception as e:
            self._record(
                EventKind.STORED,
                [(str(r.id), Outcome.ERROR, type(e).__name__, str(e), None) for r in refs],
                e,
            )
            raise
        self._record(
            EventKind.STORED,
            [
                (str(ref.id), Outcome.OK if found else Outcome.MISSING, None, None, None)
                for ref, found in existence.items()
            ],
        )
        return existence

    def markInputUnused(self, ref: Any) -> None:
        """Declare that a predicted input was not really used after all; recorded."""
        try:
            self._butler.markInputUnused(ref)
        except Exception as e:
            self._record_one(EventKind.MARK_INPUT_UNUSED, ref, Outcome.ERROR, e)
            raise
        self._record_one(EventKind.MARK_INPUT_UNUSED, ref, Outcome.OK)

    def put(self, obj: Any, ref: Any, /, *, provenance: Any = None) -> Any:
        """Write through the wrapped butler; recorded with the datastore record it wrote.

        An unpredicted output (upstream's ``RuntimeError``) is ``rejected``. Any
        other failure is ``error``, and its detail says what the datastore
        holds afterwards (``after``: records and whether the artifact exists),
        because upstream can lose an artifact in a failed put.
        """
        summary = _provenance_summary(provenance)
        try:
            result = self._butler.put(obj, ref, provenance=provenance)
        except Exception as e:
            if isinstance(e, RuntimeError) and str(ref.id) not in self._predicted_outputs:
                detail = _detail(provenance=summary)
                self._record_one(EventKind.PUT, ref, Outcome.REJECTED, e, detail)
                raise
            # Asking the datastore what it holds now may fail too: never instead of `e`.
            with keep_caller_error(e, EventKind.PUT, self._logger):
                name, records = self._written(ref)
                exists = bool(self._butler._datastore.exists(ref))
                after = {"records": records, "artifact_exists": exists}
                detail = _detail(datastore=name, after=after, provenance=summary)
                self._record_one(EventKind.PUT, ref, Outcome.ERROR, e, detail)
            raise
        name, records = self._written(ref)
        detail = _detail(datastore=name, records=records, provenance=summary)
        self._record_one(EventKind.PUT, ref, Outcome.OK, None, detail)
        return result

    def pruneDatasets(
        self,
        refs: Iterable[Any],
        *,
        disassociate: bool = True,
        unstore: bool = False,
        tags: Iterable[str] = (),
        purge: bool = False,
    ) -> None:
        """Prune through the wrapped butler; recorded once it returns.

        Upstream's argument errors (``TypeError`` for the flag rules,
        ``ValueError`` for a component) are ``rejected``: nothing was touched.
        A dataset that an unstore without purge leaves in place (its records
        still there afterwards) is ``missing`` when its artifact is gone (upstream
        only warns then) and ``error`` otherwise, with ``kept`` in its detail: the
        replay then keeps its record, as upstream's provenance does.
        """
        refs = list(refs)
        tags = list(tags)
        flags = {"disassociate": disassociate, "unstore": unstore, "purge": purge}
        detail = _detail(**flags, tags=tags or None)
        try:
            self._butler.pruneDatasets(
                refs, disassociate=disassociate, unstore=unstore, tags=tags, purge=purge
            )
        except Exception as e:
            # Argument errors come before upstream touches anything.
            rejected = isinstance(e, TypeError | ValueError)
            outcome = Outcome.REJECTED if rejected else Outcome.ERROR
            self._record(
                EventKind.PRUNE,
                [(str(r.id), outcome, type(e).__name__, str(e), detail) for r in refs],
                e,
            )
            raise
        kept = self._datastore_records(refs) if unstore and not purge else {}
        entries: list[Entry] = []
        for r in refs:
            if r.id not in kept:
                entries.append((str(r.id), Outcome.OK, None, None, detail))
                continue
            # Upstream returned, but left this dataset as it was: unstoring one dataset
            # whose artifact is missing only logs a warning and keeps its record.
            exists = bool(self._butler._datastore.exists(r))
            why = "the datastore kept this dataset's record" + ("" if exists else ", artifact gone")
            kept_detail = {"records": kept[r.id][1], "artifact_exists": exists}
            kept_json = _detail(**flags, tags=tags or None, kept=kept_detail)
            outcome = Outcome.ERROR if exists else Outcome.MISSING
            entries.append((str(r.id), outcome, None, why, kept_json))
        self._record(EventKind.PRUNE, entries)

    # --- provenance -----------------------------------------------------------------------

    def replay(self) -> ProvenanceFold:
        """Replay this quantum's events (all attempts) from the ledger."""
        return replay_quantum(self._log, self._qid, self._predicted_inputs, self._predicted_outputs)

    def provenance(self) -> QuantumProvenanceData:
        """This quantum's provenance as `ledger.QuantumProvenanceData`, replayed from the ledger."""
        fold = self.replay()
        for warning in fold.warnings():
            self._logger.warning(
                warning.code,
                message=warning.message,
                dataset_ids=[str(i) for i in warning.dataset_ids],
            )
        return fold.result(self.datastore_name)

    def extract_provenance_data(self) -> Any:
        """Upstream's ``QuantumProvenanceData``, replayed from the ledger (not from memory)."""
        return to_upstream(self.provenance())

    # --- lifecycle ------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Record how the quantum ended (once), as `ledger.QuantumBackedButler.finish` does."""
        if not self._finished:
            try:
                record_quantum_end(
                    self._log, self._qid, self.attempt, self._predicted_outputs, error
                )
            except (LedgerDiskFullError, LedgerBusyError):
                raise  # the ledger stays open with its buffer: finish again once there is space
            except BaseException as e:
                with keep_caller_error(e, "quantum's end", self._logger):
                    self.close()
                raise
            self._finished = True
        self.close()

    def close(self) -> None:
        """Flush and release the ledger and its lease (the wrapped butler stays the caller's).

        As `ledger.QuantumBackedButler.close`: on a full disk everything stays open.
        """
        try:
            self._log.flush()
        except (LedgerDiskFullError, LedgerBusyError):
            raise
        except BaseException:
            self._release_lease()
            with contextlib.suppress(Exception):
                self._log.close()
            raise
        self._release_lease()
        self._log.close()

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release("end" if self._finished else "close")
            self._lease = None

    def __enter__(self) -> RecordingButler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the end; every exception propagates (``NoWorkFound`` too, as upstream).

        If recording the end fails while an exception propagates, that exception
        still propagates, with the failure as a note (see `keep_caller_error`).
        """
        if exc is None:
            self.finish()
            return
        with keep_caller_error(exc, "quantum's end", self._logger):
            self.finish(exc)


# isinstance(recording_butler, LimitedButler) holds: it answers every LimitedButler call.
_UpstreamLimitedButler.register(RecordingButler)
