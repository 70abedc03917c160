"""`QuantumBackedButler`: a datastore for one quantum that records every call.

Each call is appended to the ledger as events before it returns; the provenance
sets are never kept here, they are replayed from the ledger (SPEC §3).
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from ._logging import get_logger
from .config import Config, datastore_from_config
from .datastore import FileDatastore
from .errors import (
    DatasetTypeMismatchError,
    LedgerError,
    TamperedError,
    UnpredictedOutputError,
)
from .events import EventKind
from .identity import check_datastore_identity, ensure_identity, started_detail
from .model import DatasetRef, DatasetType
from .provenance import ProvenanceFold, QuantumProvenanceData
from .quantum import Quantum
from .recorder import CallRecorder, Records
from .recording import (
    import_earlier_outputs,
    keep_caller_error,
    record_quantum_start,
)
from .store.lease import LeaseHolder, LeasePolicy
from .store.ledger import Ledger
from .store.log import Durability, EventLog

__all__ = ["DeferredDatasetHandle", "QuantumBackedButler"]

_log = get_logger(__name__)

_UNPREDICTED = "Cannot put dataset that was not predicted as an output."


class DeferredDatasetHandle:
    """A handle from `QuantumBackedButler.getDeferred`; ``get()`` is a recorded get."""

    def __init__(
        self,
        butler: QuantumBackedButler,
        ref: DatasetRef,
        parameters: Mapping[str, Any] | None,
        storageClass: str | None,
    ) -> None:
        self.butler = butler
        self.ref = ref
        self.parameters = parameters
        self.storageClass = storageClass

    def get(
        self,
        *,
        component: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        storageClass: str | None = None,
    ) -> Any:
        """Load the dataset through ``butler.get`` (recorded as a ``get``)."""
        ref = self.ref.makeComponentRef(component) if component else self.ref
        merged = {**(self.parameters or {}), **(parameters or {})} or None
        return self.butler.get(
            ref, parameters=merged, storageClass=storageClass or self.storageClass
        )

    @property
    def dataId(self) -> Any:
        """The data ID of the dataset."""
        return self.ref.data_id


class QuantumBackedButler:
    """Runs one quantum: reads inputs through their records, writes outputs, records all.

    Build it with `initialize` or `from_predicted`; use it as a context manager
    so that its exit records how the quantum ended.
    """

    def __init__(
        self,
        *,
        quantum: Quantum,
        datastore: FileDatastore,
        log: EventLog,
        quantum_id: uuid.UUID,
        attempt: int,
        dataset_types: Mapping[str, DatasetType] | None = None,
        owns_log: bool = True,
        lease: LeaseHolder | None = None,
    ) -> None:
        self.quantum = quantum
        self.datastore = datastore
        self.quantum_id = quantum_id
        self.attempt = attempt
        self._log = log
        self._qid = str(quantum_id)
        self._predicted_inputs = {ref.id: ref for ref in quantum.iter_predicted_inputs()}
        self._predicted_outputs = {ref.id: ref for ref in quantum.iter_predicted_outputs()}
        self._dataset_types = dict(dataset_types or {})
        #: outputs of earlier attempts that `resume(skip_existing=True)` counts as done.
        self._skip_existing: dict[uuid.UUID, tuple[str, list[dict[str, Any]]]] = {}
        self._logger = _log.bind(quantum_id=self._qid, task=quantum.task_label, attempt=attempt)
        #: What each call records, and the attempt's end: shared with ledger.lsst.
        self._recorder = CallRecorder(
            log,
            self._qid,
            attempt,
            predicted_outputs=self._predicted_outputs,
            known_ids=self._predicted_inputs,
            logger=self._logger,
            lease=lease,
            owns_log=owns_log,
        )
        if lease is not None:
            # A butler dropped without close stops renewing: its lease then expires.
            weakref.finalize(self, lease.stop)

    # --- construction -------------------------------------------------------

    @classmethod
    def initialize(
        cls,
        config: Config,
        quantum: Quantum,
        *,
        ledger: str | os.PathLike[str] = ":memory:",
        durability: Durability = "normal",
        dataset_types: Mapping[str, DatasetType] | None = None,
        batch_size: int = 1000,
        lease: LeasePolicy | None = None,
    ) -> QuantumBackedButler:
        """Start recording ``quantum`` in ``ledger`` (created if missing).

        The quantum's lease is renewed while the butler is open (``lease``:
        how often and for how long; `LeasePolicy` from the environment, else
        every 30 s for 120 s), so other processes on any host know it runs.

        Raises:
            QuantumStillRunningError: the quantum is already in ``ledger`` and its
                latest attempt is still running (see `resume`).
        """
        datastore = datastore_from_config(config)
        log = EventLog(ledger, durability=durability, batch_size=batch_size)
        try:
            return cls._start(quantum, datastore, log, dataset_types=dataset_types, lease=lease)
        except BaseException:
            log.close()
            raise

    @classmethod
    def from_predicted(
        cls,
        config: Config,
        predicted_inputs: Iterable[DatasetRef],
        predicted_outputs: Iterable[DatasetRef],
        *,
        datastore_records: Mapping[str, Any],
        ledger: str | os.PathLike[str] = ":memory:",
        durability: Durability = "normal",
        dataset_types: Mapping[str, DatasetType] | None = None,
        task_label: str = "unknown",
        data_id: Mapping[str, int | str] | None = None,
        batch_size: int = 1000,
        lease: LeasePolicy | None = None,
    ) -> QuantumBackedButler:
        """Like `initialize`, from flat lists of refs instead of a `Quantum`."""
        inputs: dict[str, list[DatasetRef]] = {}
        for ref in predicted_inputs:
            inputs.setdefault(ref.dataset_type.name, []).append(ref)
        outputs: dict[str, list[DatasetRef]] = {}
        for ref in predicted_outputs:
            outputs.setdefault(ref.dataset_type.name, []).append(ref)
        quantum = Quantum.model_validate(
            {
                "task_label": task_label,
                "data_id": dict(data_id or {}),
                "inputs": inputs,
                "outputs": outputs,
                "datastore_records": dict(datastore_records),
            }
        )
        return cls.initialize(
            config,
            quantum,
            ledger=ledger,
            durability=durability,
            dataset_types=dataset_types,
            batch_size=batch_size,
            lease=lease,
        )

    @classmethod
    def resume(
        cls,
        config: Config,
        ledger: str | os.PathLike[str],
        quantum_id: uuid.UUID | str | None = None,
        *,
        skip_existing: bool = False,
        clobber: bool = False,
        durability: Durability = "normal",
        dataset_types: Mapping[str, DatasetType] | None = None,
        batch_size: int = 1000,
        check_datastore: bool = True,
        lease: LeasePolicy | None = None,
    ) -> QuantumBackedButler:
        """Retry a quantum recorded in ``ledger``: its next attempt, in the same ledger.

        The quantum is rebuilt from the ledger alone and recorded with
        ``attempt`` = the previous one + 1. Replay folds every attempt in order,
        so outputs written before stay actual outputs; their records are
        imported, so ``get`` and ``stored`` see them and a re-``put`` is refused
        while the artifact exists (SPEC §3 holds across attempts).

        Args:
            skip_existing: outputs written before whose artifacts still verify
                (size and checksum) count as done: a ``put`` of one writes
                nothing, is recorded as a ``put`` with ``"skipped_existing": true``
                and the existing record, and returns the ref.
            clobber: first prune the outputs written before (unstore and purge,
                one recorded ``prune`` call) and delete orphan artifacts of
                predicted outputs (each a ``prune`` with ``"orphan": true``), so
                that this attempt writes them afresh.
            check_datastore: refuse a datastore root that is not the one the
                quantum ran with (see `ledger.identity`); False to retry into
                whatever root ``config`` names.

        A new attempt starts only when the previous one ended (a terminal
        event), was closed, or is known dead: its lease expired, or it ran on
        this host and its process is gone. The check and the new
        ``quantum_started`` are one transaction, so of two executors resuming
        at once exactly one starts.

        Raises:
            ValueError: both ``skip_existing`` and ``clobber``.
            QuantumStillRunningError: the previous attempt is still running
                (its lease is fresh, on any host); nothing is written.
            LedgerNotFoundError, UnknownQuantumError: no such ledger or quantum.
            LedgerError: ``config`` names another datastore than the quantum used.
            DatastoreMismatchError: the root does not exist or is another
                datastore than the quantum ran with; nothing is appended.
            TamperedError: the quantum's hash chain does not verify; nothing is appended.
            PathEscapeError, NotARegularFileError: with ``clobber``, a symlink
                leads an output's path out of the root, or a FIFO (device,
                directory) is where an output goes; nothing is appended.
        """
        if skip_existing and clobber:
            raise ValueError("resume takes skip_existing or clobber, not both")
        datastore = datastore_from_config(config)
        with Ledger.open(ledger) as led, led.snapshot():
            qid = led.resolve_quantum(quantum_id)
            quantum = led.quantum(qid)
            recorded = led.info(qid).datastore_name
            fold = led.fold(qid)
            problems = [p for p in led.verify().problems if p.startswith(f"quantum {qid}:")]
            if check_datastore and not problems:
                check_datastore_identity(led, qid, datastore)
        if problems:
            raise TamperedError(
                f"{os.fspath(ledger)}: {problems[0]}; refusing to append a new attempt to a "
                f'chain that does not verify (run "qledger verify {os.fspath(ledger)}")'
            )
        if recorded is not None and recorded != datastore.name:
            raise LedgerError(
                f"quantum {qid} in {os.fspath(ledger)} used datastore {recorded!r}, but the "
                f"config names {datastore.name!r}; resume with the same datastore config"
            )
        # Before anything is written: a bad record path raises here, not mid-attempt.
        verified = import_earlier_outputs(datastore, fold, verify=skip_existing)
        if clobber:
            # Each orphan is looked at now (an escape or a FIFO refuses the retry
            # before anything is recorded) and again, through the guard, when deleted.
            for ref in quantum.iter_predicted_outputs():
                if not datastore.records_for(ref):
                    datastore.artifact_at(ref)
        log = EventLog(ledger, durability=durability, batch_size=batch_size, create=False)
        butler: QuantumBackedButler | None = None
        try:
            butler = cls._start(
                quantum,
                datastore,
                log,
                dataset_types=dataset_types,
                quantum_id=uuid.UUID(qid),
                started={"resumed": True, "skip_existing": skip_existing, "clobber": clobber},
                lease=lease,
            )
            butler._skip_existing = verified
            if clobber:
                butler._clobber(fold)
        except BaseException:
            if butler is not None:
                butler.close()  # releases the lease it took
            else:
                log.close()
            raise
        return butler

    def _clobber(self, fold: ProvenanceFold) -> None:
        """Prune the outputs of earlier attempts and delete orphan artifacts, all recorded."""
        written = [
            ref for ref in self._predicted_outputs.values() if str(ref.id) in fold.actual_outputs
        ]
        if written:
            self.pruneDatasets(written, disassociate=True, unstore=True, purge=True)
        for ref in self._predicted_outputs.values():
            if self.datastore.records_for(ref):
                continue
            found = self.datastore.artifact_at(ref)
            if found is None:
                continue
            relative, data = found
            # Recorded before the file goes, as for any prune (see pruneDatasets).
            self._recorder.orphan_removed(ref, relative, data)
            self.datastore.remove_artifact(relative)

    @classmethod
    def _start(
        cls,
        quantum: Quantum,
        datastore: FileDatastore,
        log: EventLog,
        *,
        dataset_types: Mapping[str, DatasetType] | None,
        quantum_id: uuid.UUID | None = None,
        started: Mapping[str, Any] | None = None,
        lease: LeasePolicy | None = None,
    ) -> QuantumBackedButler:
        datastore.import_records(quantum.datastore_records)
        identity = ensure_identity(datastore)
        if identity is not None:
            started = {**(started or {}), **started_detail(datastore, identity)}
        qid, attempt, holder = record_quantum_start(
            log, quantum, datastore.name, quantum_id=quantum_id, started=started, lease=lease
        )
        return cls(
            quantum=quantum,
            datastore=datastore,
            log=log,
            quantum_id=qid,
            attempt=attempt,
            dataset_types=dataset_types,
            lease=holder,
        )

    # --- recording ------------------------------------------------------------

    def _check_type(self, ref: DatasetRef) -> None:
        """Refuse a ref whose dataset type differs from the one predicted for its id.

        Raises:
            DatasetTypeMismatchError: recorded as ``rejected`` by the recorder.
        """
        predicted = self._predicted_inputs.get(ref.id) or self._predicted_outputs.get(ref.id)
        expected = predicted.dataset_type if predicted is not None else None
        if expected is ref.dataset_type and "." not in expected.name:
            return  # the predicted type itself, not a component: nothing to compare (hot path)
        if expected is None and ref.dataset_type.parent_name() in self._dataset_types:
            expected = self._dataset_types[ref.dataset_type.parent_name()]
        if expected is not None and expected.name != ref.dataset_type.parent_name():
            raise DatasetTypeMismatchError(
                f"ref {ref.id} has dataset type {ref.dataset_type.name!r} but quantum "
                f"{self._qid} predicted {expected.name!r} for it"
            )

    # --- the LimitedButler API --------------------------------------------------

    def isWriteable(self) -> bool:
        """Always True: this butler writes the quantum's outputs."""
        return True

    def get(
        self,
        ref: DatasetRef,
        /,
        *,
        parameters: Mapping[str, Any] | None = None,
        storageClass: str | None = None,
    ) -> Any:
        """Read a dataset; recorded after the read with its outcome."""

        def read() -> Any:
            self._check_type(ref)
            return self.datastore.get(ref, parameters=parameters, storageClass=storageClass)

        return self._recorder.read(
            EventKind.GET, ref, read, parameters=parameters, storage_class=storageClass
        )

    def getDeferred(
        self,
        ref: DatasetRef,
        /,
        *,
        parameters: Mapping[str, Any] | None = None,
        storageClass: str | None = None,
    ) -> DeferredDatasetHandle:
        """A handle that loads later; a predicted input counts as used now."""

        def handle() -> DeferredDatasetHandle:
            self._check_type(ref)
            return DeferredDatasetHandle(self, ref, parameters, storageClass)

        return self._recorder.read(
            EventKind.GET_DEFERRED, ref, handle, parameters=parameters, storage_class=storageClass
        )

    def stored(self, ref: DatasetRef) -> bool:
        """Whether the dataset's artifact exists; recorded."""

        def exists() -> bool:
            self._check_type(ref)
            return self.datastore.exists(ref)

        return self._recorder.stored(ref, exists)

    def stored_many(self, refs: Iterable[DatasetRef]) -> dict[DatasetRef, bool]:
        """`stored` for many refs: one call, one transaction, one row per ref."""
        refs = list(refs)

        def exist() -> dict[DatasetRef, bool]:
            for ref in refs:
                self._check_type(ref)
            return self.datastore.mexists(refs)

        return self._recorder.stored_many(refs, exist)

    def markInputUnused(self, ref: DatasetRef) -> None:
        """Declare that a predicted input was not really used after all."""
        self._recorder.unused(ref, lambda: None)

    def put(self, obj: Any, ref: DatasetRef, /, *, provenance: Any = None) -> DatasetRef:
        """Write a predicted output; recorded after the artifact is in place."""
        skipped = self._skip_existing.get(ref.id)

        def write() -> tuple[DatasetRef, Records]:
            if ref.id not in self._predicted_outputs:
                raise UnpredictedOutputError(_UNPREDICTED)
            self._check_type(ref)
            if skipped is not None:  # written by an earlier attempt and verified: kept
                del self._skip_existing[ref.id]
                name, records = skipped
                return ref, {name: records}
            simple = self.datastore.put(obj, ref).to_simple()
            del simple["dataset_id"]
            return ref, {self.datastore.name: [simple]}

        return self._recorder.put(ref, write, skipped_existing=skipped is not None)

    def pruneDatasets(
        self,
        refs: Iterable[DatasetRef],
        *,
        disassociate: bool = True,
        unstore: bool = False,
        tags: Iterable[Any] = (),
        purge: bool = False,
    ) -> None:
        """Unstore and/or purge outputs, with upstream's flag rules; recorded.

        The record is appended after the artifacts are trashed and before they
        are deleted: a crash in between leaves an orphan file that recovery can
        remove, never a recorded artifact that silently vanished.
        """
        refs = list(refs)

        def trash() -> None:
            if purge and not disassociate:
                raise TypeError("Cannot pass purge=True without disassociate=True.")
            if purge and not unstore:
                raise TypeError("Cannot pass purge=True without unstore=True.")
            if disassociate and not purge:
                raise TypeError("Cannot pass disassociate=True without purge=True.")
            for ref in refs:
                if ref.isComponent():
                    raise ValueError(
                        "Can not prune a component of a dataset (ref=" + str(ref) + ")"
                    )
            if unstore:
                self.datastore.trash(refs)
                for ref in refs:
                    self._skip_existing.pop(ref.id, None)  # its artifact is going

        self._recorder.prune(
            refs,
            trash,
            disassociate=disassociate,
            unstore=unstore,
            purge=purge,
            then=self.datastore.emptyTrash if unstore else None,
        )

    # --- provenance -------------------------------------------------------------

    def replay(self) -> ProvenanceFold:
        """Replay this quantum's events (all attempts) from the ledger."""
        return self._recorder.replay(
            (str(i) for i in self._predicted_inputs),
            (str(i) for i in self._predicted_outputs),
        )

    def extract_provenance_data(self) -> QuantumProvenanceData:
        """The provenance of this quantum, replayed from its ledger (SPEC §3)."""
        fold = self.replay()
        for warning in fold.warnings():
            self._logger.warning(
                warning.code,
                message=warning.message,
                dataset_ids=[str(i) for i in warning.dataset_ids],
            )
        return fold.result(self.datastore.name)

    # --- lifecycle --------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Record how the quantum ended (once) and close the ledger.

        No error, or a ``NoWorkFound`` (any exception class of that name, so
        upstream's ``lsst.pipe.base.NoWorkFound`` too), is a success:
        ``quantum_succeeded`` with ``{"caveats": [...]}`` in its detail, using
        upstream's ``QuantumSuccessCaveats``: ``no_work``, ``some_outputs_missing``,
        ``all_outputs_missing`` (computed over all attempts). Any other error is
        ``quantum_failed`` with its type, message and traceback.

        On a full disk (`LedgerDiskFullError`) or a ledger locked too long
        (`LedgerBusyError`) the ledger stays open, with every buffered event:
        call ``finish`` (or ``close``) again once there is space. After
        ``close`` without an end, finish raises `ButlerClosedError`.
        """
        if self._recorder.closed and not self._recorder.finished:
            self._recorder.check_open("finish")
        self._recorder.finish(error)

    def close(self) -> None:
        """Flush and release the ledger and the lease; without an end it reads as interrupted.

        A quantum closed without an end released its lease: it is ``closed``, not
        running, and may be resumed at once. Every later call raises
        `ButlerClosedError` before it touches the datastore. If the flush fails
        for want of space (`LedgerDiskFullError`) or of the lock, everything
        stays open and the lease renewed: call ``close`` again once there is space.
        """
        self._recorder.close()

    def __enter__(self) -> QuantumBackedButler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the end; every exception, ``NoWorkFound`` included, propagates.

        A ``NoWorkFound`` is recorded as a success with the ``no_work`` caveat
        but not swallowed: upstream's executor, not its butler, catches it
        around ``runQuantum``, and an executor written for upstream keeps doing so.
        If recording the end fails while an exception propagates, that exception
        still propagates, with the failure as a note (see `keep_caller_error`).
        """
        if exc is None:
            self.finish()
            return
        with keep_caller_error(exc, "quantum's end", self._logger):
            self.finish(exc)
