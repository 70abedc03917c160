"""`RecordingButler`: a real upstream butler whose every call is recorded in a ledger.

It wraps any upstream ``LimitedButler`` — in particular upstream's
``QuantumBackedButler`` — by delegation: every call goes to the wrapped
butler unchanged and is recorded through `ledger.recorder.CallRecorder`, the
layer our own butler records through, so kinds, outcomes and details are the
same. Replaying the ledger gives the same provenance as the wrapped butler's
own ``extract_provenance_data()`` (a differential test holds them equal).

Its own attributes are public (``quantum``, ``quantum_id``, ``attempt``,
``datastore_names``...) or start with ``_ledger_``: no private name of
upstream's butler (``_predicted_inputs``, ``_datastore``...) is shadowed, so
code that reads those reads the wrapped butler's.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, NamedTuple

from lsst.daf.butler import DeferredDatasetHandle as _UpstreamHandle
from lsst.daf.butler import LimitedButler as _UpstreamLimitedButler

from .._logging import get_logger
from ..errors import LedgerBusyError, LedgerDiskFullError
from ..events import EventKind
from ..model import DatasetRef, DatasetType
from ..provenance import ProvenanceFold, QuantumProvenanceData
from ..quantum import Quantum
from ..recorder import CallRecorder
from ..recording import keep_caller_error, record_quantum_start
from ..store.lease import LeasePolicy
from ..store.log import Durability, EventLog
from .convert import (
    quantum_from_upstream,
    record_dict,
    ref_from_upstream,
    split_records,
    to_upstream,
)
from .tap import DatastoreTap

__all__ = ["RecordingButler"]

_log = get_logger(__name__)


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


class _IdRef(NamedTuple):
    """What upstream's datastore needs of a ref to export its records: its id."""

    id: uuid.UUID


def _as_id(item: Any) -> uuid.UUID:
    """A dataset id given as a UUID or its text."""
    return item if isinstance(item, uuid.UUID) else uuid.UUID(str(item))


def _unknown_ref(dataset_id: uuid.UUID, storage_class: str) -> DatasetRef:
    """A predicted id given without its ref: all that is known of it is the id."""
    return DatasetRef(
        dataset_type=DatasetType(name="", storage_class=storage_class),
        data_id={},
        run="",
        id=dataset_id,
    )


class RecordingButler:
    """An upstream ``LimitedButler`` whose every call is recorded in a ledger.

    Build it around the butler that runs one quantum (usually upstream's
    ``QuantumBackedButler``) and hand it to the task, or return it from the
    ``limited_butler_factory`` of upstream's ``SingleQuantumExecutor``.
    ``close()`` (which that executor calls in a ``finally``) records how the
    quantum ended, closes the ledger and closes the wrapped butler; so does
    leaving a ``with`` block.

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
        ours, external = quantum_from_upstream(quantum, task_label=task_label)
        started: dict[str, Any] = {"task_name": quantum.taskName}
        if external:
            started["external_input_records"] = external
        self.quantum = quantum
        self._ledger_start(butler, ours, ledger, durability, quantum_id, batch_size, lease, started)

    @classmethod
    def from_predicted(
        cls,
        butler: Any,
        predicted_inputs: Iterable[Any],
        predicted_outputs: Iterable[Any],
        *,
        refs: Mapping[uuid.UUID, Any] | Callable[[uuid.UUID], Any] | None = None,
        ledger: str | os.PathLike[str] = ":memory:",
        durability: Durability = "normal",
        quantum_id: uuid.UUID | str | None = None,
        task_label: str = "init",
        batch_size: int = 1000,
        lease: LeasePolicy | None = None,
    ) -> RecordingButler:
        """Record a butler built by upstream's ``QuantumBackedButler.from_predicted``.

        Upstream's butler knows only ids; the ledger records refs. Each
        predicted input or output may be an upstream ``DatasetRef`` or an id,
        which ``refs`` (a mapping or a function of the id) turns into its ref,
        as pipe_base's ``make_init_qbb`` collects the ids from the graph's
        refs (see `ledger.lsst.predicted_init_refs`). An id nothing resolves
        is recorded with its id and role only (empty dataset type, data ID and
        run; the storage class of its datastore record, if any): its calls
        and the provenance sets are recorded all the same. The inputs'
        datastore records are the ones the wrapped butler imported.

        Args:
            butler: the upstream butler (from ``from_predicted``).
            predicted_inputs, predicted_outputs: refs or ids, as given upstream.
            refs: how to find the ref of an id.
            task_label: recorded as the quantum's task label (``init`` for the
                init-output job of a workflow).
        """
        lookup: Callable[[uuid.UUID], Any]
        if refs is None:
            lookup = lambda _: None  # noqa: E731 -- nothing to look in
        elif isinstance(refs, Mapping):
            lookup = refs.get
        else:
            lookup = refs
        inputs_given, outputs_given = list(predicted_inputs), list(predicted_outputs)
        inputs = [cls._ledger_resolve(item, lookup) for item in inputs_given]
        outputs = [cls._ledger_resolve(item, lookup) for item in outputs_given]
        records = butler._datastore.export_records(
            [
                _IdRef(_as_id(item)) if ref is None else ref
                for item, ref in zip(inputs_given, inputs, strict=True)
            ]
        )
        found = {
            dataset_id: record_dict(infos[0])
            for data in records.values()
            for dataset_id, tables in data.records.items()
            for infos in tables.values()
            if infos
        }

        def ours(item: Any, ref: Any) -> DatasetRef:
            if ref is not None:
                return ref_from_upstream(ref)
            dataset_id = _as_id(item)
            return _unknown_ref(dataset_id, found.get(dataset_id, {}).get("storage_class", ""))

        by_type: dict[str, dict[str, list[DatasetRef]]] = {"inputs": {}, "outputs": {}}
        for role, items, resolved in (
            ("inputs", inputs_given, inputs),
            ("outputs", outputs_given, outputs),
        ):
            for item, ref in zip(items, resolved, strict=True):
                mine = ours(item, ref)
                by_type[role].setdefault(mine.dataset_type.name, []).append(mine)
        ours_records, external = split_records(records)
        quantum = Quantum.model_validate(
            {
                "task_label": task_label,
                "data_id": {},
                "inputs": by_type["inputs"],
                "outputs": by_type["outputs"],
                "datastore_records": ours_records,
            }
        )
        self = cls.__new__(cls)
        self.quantum = None
        started: dict[str, Any] = {"task_name": None, "from_predicted": True}
        if external:
            started["external_input_records"] = external
        self._ledger_start(
            butler, quantum, ledger, durability, quantum_id, batch_size, lease, started
        )
        return self

    @staticmethod
    def _ledger_resolve(item: Any, lookup: Callable[[uuid.UUID], Any]) -> Any:
        """The upstream ref of a predicted item (a ref, or an id looked up), or None."""
        if hasattr(item, "datasetType"):
            return item
        return lookup(_as_id(item))

    def _ledger_start(
        self,
        butler: Any,
        ours: Quantum,
        ledger: str | os.PathLike[str],
        durability: Durability,
        quantum_id: uuid.UUID | str | None,
        batch_size: int,
        lease: LeasePolicy | None,
        started: dict[str, Any],
    ) -> None:
        """Record the start of an attempt of ``ours`` and set up the recorder."""
        self._ledger_butler = butler
        self._ledger_tap = DatastoreTap(butler)
        names = self._ledger_tap.names
        #: The datastores upstream's provenance names (the children of a chain, in order).
        self.datastore_names: tuple[str, ...] = names or ("datastore",)
        #: The first of them: the one recorded in ``quanta.datastore_name``.
        self.datastore_name: str = self.datastore_names[0]
        self._ledger_inputs = frozenset(str(r.id) for r in ours.iter_predicted_inputs())
        self._ledger_outputs = frozenset(str(r.id) for r in ours.iter_predicted_outputs())
        started = {
            "wrapped_butler": f"{type(butler).__module__}.{type(butler).__qualname__}",
            "lsst_daf_butler_version": importlib.metadata.version("lsst-daf-butler"),
            **started,
        }
        if len(self.datastore_names) > 1:
            started["datastore_names"] = list(self.datastore_names)
        if self._ledger_tap.tables:
            started["datastore_tables"] = dict(self._ledger_tap.tables)
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
        if holder is not None:
            weakref.finalize(self, holder.stop)  # dropped without close: the lease expires
        self.quantum_id: uuid.UUID = qid
        self.attempt: int = attempt
        self._ledger_logger = _log.bind(quantum_id=str(qid), task=ours.task_label, attempt=attempt)
        self._ledger_recorder = CallRecorder(
            log,
            str(qid),
            attempt,
            predicted_outputs=(r.id for r in ours.iter_predicted_outputs()),
            known_ids=(r.id for r in ours.iter_predicted_inputs()),
            logger=self._ledger_logger,
            lease=holder,
        )
        #: The exception being handled when the butler was made: never this quantum's end.
        self._ledger_outer_error = sys.exc_info()[1]

    def __getattr__(self, name: str) -> Any:
        """Anything not recorded here (URIs, storage classes, ...) is the wrapped butler's.

        After close, a method reached this way raises `ButlerClosedError` when
        called, before it reaches the wrapped butler.
        """
        if name.startswith("_ledger_"):  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        value = getattr(self._ledger_butler, name)
        recorder = self._ledger_recorder
        if recorder.closed and callable(value) and not isinstance(value, type):

            @functools.wraps(value)
            def refused(*args: Any, **kwargs: Any) -> Any:
                recorder.check_open(name)

            return refused
        return value

    # --- the LimitedButler API ----------------------------------------------------------

    @property
    def dimensions(self) -> Any:
        """The wrapped butler's dimension universe."""
        return self._ledger_butler.dimensions

    def isWriteable(self) -> bool:
        """Whether the wrapped butler writes (upstream's quantum-backed butler does)."""
        self._ledger_recorder.check_open("isWriteable")
        return bool(self._ledger_butler.isWriteable())

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
        butler = self._ledger_butler
        return self._ledger_recorder.read(
            EventKind.GET,
            ref,
            lambda: butler.get(ref, parameters=parameters, storageClass=storageClass),
            parameters=parameters,
            storage_class=_storage_class_name(storageClass),
        )

    def getDeferred(
        self,
        ref: Any,
        /,
        *,
        parameters: dict[str, Any] | None = None,
        storageClass: Any = None,
    ) -> Any:
        """A handle whose ``get()`` is a recorded `get`; a predicted input counts as used now."""
        butler = self._ledger_butler
        handle = self._ledger_recorder.read(
            EventKind.GET_DEFERRED,
            ref,
            lambda: butler.getDeferred(ref, parameters=parameters, storageClass=storageClass),
            parameters=parameters,
            storage_class=_storage_class_name(storageClass),
        )
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
        return self._ledger_recorder.stored(ref, lambda: self._ledger_butler.stored(ref))

    def stored_many(self, refs: Iterable[Any]) -> dict[Any, bool]:
        """`stored` for many refs: one call, one transaction, one row per ref."""
        refs = list(refs)
        return self._ledger_recorder.stored_many(
            refs, lambda: self._ledger_butler.stored_many(refs)
        )

    def markInputUnused(self, ref: Any) -> None:
        """Declare that a predicted input was not really used after all; recorded."""
        self._ledger_recorder.unused(ref, lambda: self._ledger_butler.markInputUnused(ref))

    def put(self, obj: Any, ref: Any, /, *, provenance: Any = None) -> Any:
        """Write through the wrapped butler; recorded with the datastore records it wrote.

        The records are the ones the datastore registered during this put (see
        `ledger.lsst.tap`), one list per datastore of a chain. An unpredicted
        output (upstream's ``RuntimeError``) is ``rejected``. Any other failure
        is ``error``, and its detail says what the datastore holds afterwards
        (``after``: records and whether the artifact exists), because upstream
        can lose an artifact in a failed put.
        """
        butler, tap = self._ledger_butler, self._ledger_tap
        summary = _provenance_summary(provenance)

        def after() -> dict[str, Any]:
            held = tap.held([ref]).get(ref.id, {})
            name = next(iter(held), self.datastore_name)
            state = {"records": held.get(name, []), "artifact_exists": tap.exists(ref)}
            return {"datastore": name, "after": state, "provenance": summary}

        return self._ledger_recorder.put(
            ref,
            lambda: tap.put(ref, lambda: butler.put(obj, ref, provenance=provenance)),
            provenance=summary,
            after=after,
        )

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
        refs, tags = list(refs), list(tags)
        tap = self._ledger_tap

        def kept() -> dict[uuid.UUID, dict[str, Any]]:
            held = tap.held(refs)
            by_id = {r.id: r for r in refs}
            return {
                dataset_id: {
                    "records": next(iter(records.values())),
                    "artifact_exists": tap.exists(by_id[dataset_id]),
                }
                for dataset_id, records in held.items()
                if dataset_id in by_id
            }

        self._ledger_recorder.prune(
            refs,
            lambda: self._ledger_butler.pruneDatasets(
                refs, disassociate=disassociate, unstore=unstore, tags=tags, purge=purge
            ),
            disassociate=disassociate,
            unstore=unstore,
            purge=purge,
            tags=tags,
            kept=kept,
        )

    # --- reads of artifacts and records: recorded, no provenance set changes -------------

    def retrieve_artifacts(
        self,
        refs: Iterable[Any],
        destination: Any,
        transfer: str = "auto",
        preserve_path: bool = True,
        overwrite: bool = False,
    ) -> list[Any]:
        """Copy the artifacts of ``refs`` to ``destination``; recorded as a ``retrieve``."""
        refs = list(refs)
        return self._ledger_recorder.retrieve(
            "retrieve_artifacts",
            refs,
            lambda: self._ledger_butler.retrieve_artifacts(
                refs,
                destination,
                transfer=transfer,
                preserve_path=preserve_path,
                overwrite=overwrite,
            ),
            destination=str(destination),
            transfer=transfer,
        )

    def retrieve_artifacts_zip(
        self, refs: Iterable[Any], destination: Any, overwrite: bool = True
    ) -> Any:
        """Zip the artifacts of ``refs`` into ``destination``; recorded as a ``retrieve``."""
        refs = list(refs)
        return self._ledger_recorder.retrieve(
            "retrieve_artifacts_zip",
            refs,
            lambda: self._ledger_butler.retrieve_artifacts_zip(
                refs, destination, overwrite=overwrite
            ),
            destination=str(destination),
        )

    def export_predicted_datastore_records(self, refs: Iterable[Any]) -> Any:
        """The predicted records of ``refs`` (upstream's); recorded as a ``retrieve``."""
        refs = list(refs)
        return self._ledger_recorder.retrieve(
            "export_predicted_datastore_records",
            refs,
            lambda: self._ledger_butler.export_predicted_datastore_records(refs),
        )

    # --- provenance -----------------------------------------------------------------------

    def replay(self, *, all_attempts: bool = False) -> ProvenanceFold:
        """Replay this quantum's events from the ledger: this attempt's (or all attempts')."""
        return self._ledger_recorder.replay(
            self._ledger_inputs, self._ledger_outputs, this_attempt=not all_attempts
        )

    def provenance(self, *, all_attempts: bool = False) -> QuantumProvenanceData:
        """This attempt's provenance as `ledger.QuantumProvenanceData`, replayed from the ledger.

        Like upstream's butler, which knows only the attempt it runs; with
        ``all_attempts``, every attempt folded in order (as `ledger.Ledger.replay`).
        """
        fold = self.replay(all_attempts=all_attempts)
        for warning in fold.warnings():
            self._ledger_logger.warning(
                warning.code,
                message=warning.message,
                dataset_ids=[str(i) for i in warning.dataset_ids],
            )
        return fold.result(self.datastore_names)

    def extract_provenance_data(self) -> Any:
        """Upstream's ``QuantumProvenanceData`` of this attempt, replayed from the ledger."""
        self._ledger_recorder.check_open("extract_provenance_data")
        return to_upstream(self.provenance(), tables=self._ledger_tap.tables)

    # --- lifecycle ------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Record how the quantum ended (once) and close, as `close` does with ``error``."""
        self._ledger_end(error, in_flight=False)

    def close(self) -> None:
        """Record how the quantum ended (once), close the ledger, then the wrapped butler.

        Upstream's ``SingleQuantumExecutor`` calls ``close()`` in a ``finally``,
        never ``__exit__``: the exception propagating then (``sys.exc_info()``)
        is how the quantum ended. None: ``quantum_succeeded``; a ``NoWorkFound``:
        succeeded with the ``no_work`` caveat; any other: ``quantum_failed``
        with it. An exception already being handled when the butler was made
        is not this quantum's. If recording the end fails while an exception
        propagates, that exception goes on with the failure as a note; with
        none propagating, the failure is raised (after the wrapped butler is
        closed). Calls after close raise `ButlerClosedError`; closing again
        does nothing.
        """
        error = sys.exc_info()[1]
        if error is self._ledger_outer_error:
            error = None
        self._ledger_end(error, in_flight=error is not None)

    def _ledger_end(self, error: BaseException | None, *, in_flight: bool) -> None:
        recorder = self._ledger_recorder
        if recorder.closed:
            return
        try:
            if in_flight:
                assert error is not None
                with keep_caller_error(error, "quantum's end", self._ledger_logger):
                    recorder.finish(error)
            else:
                recorder.finish(error)
        except (LedgerDiskFullError, LedgerBusyError):
            raise  # the ledger stays open with its buffer, and so does the wrapped butler
        finally:
            if recorder.closed:
                self._ledger_butler.close()

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
        self._ledger_end(exc, in_flight=exc is not None)


# isinstance(recording_butler, LimitedButler) holds: it answers every LimitedButler call.
_UpstreamLimitedButler.register(RecordingButler)
