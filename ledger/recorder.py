"""What each butler call records: the one recording layer that both butlers use.

`ledger.QuantumBackedButler` (over our `FileDatastore`) and
`ledger.lsst.RecordingButler` (over a real upstream butler) differ in what
they call, not in what they record. Each hands `CallRecorder` the operation
as a function (the datastore read, upstream's ``put``...) and the recorder
runs it and decides, in one place, the kind, outcome, error and detail of the
events it appends: which errors mean *missing*, which mean *rejected*, what
a ``put`` or a ``prune`` carries in its detail. A rule about what a call
records changes here, for both butlers at once.

The recorder also holds an attempt's lifecycle (its end, its lease, its log)
and refuses every call once closed, before the operation runs: nothing
reaches a datastore that the ledger could no longer record.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .errors import (
    ButlerClosedError,
    DatasetExistsError,
    DatasetTypeMismatchError,
    LedgerBusyError,
    LedgerDiskFullError,
    UnpredictedOutputError,
)
from .events import EventKind, Outcome
from .provenance import ProvenanceFold
from .recording import (
    detail,
    keep_caller_error,
    orphan_removal_detail,
    record_quantum_end,
    replay_quantum,
)
from .store.lease import LeaseHolder
from .store.log import Entry, EventLog, PendingCall

__all__ = ["MISSING_ERRORS", "CallRecorder", "Records"]

_T = TypeVar("_T")

#: Errors that mean "the dataset is not there" (SPEC §3): the ref becomes unavailable.
MISSING_ERRORS = (LookupError, FileNotFoundError, OSError)

#: Our refusals: raised before anything is touched, so the call is ``rejected``.
_REFUSALS = (UnpredictedOutputError, DatasetExistsError, DatasetTypeMismatchError)

#: What a put wrote (or a datastore holds), per datastore name: record dicts without
#: the dataset id. Several names for a chained datastore, which writes to each child.
Records = Mapping[str, list[dict[str, Any]]]


def _put_detail(records: Records, **values: Any) -> str | None:
    """A put's detail: its first datastore as ``datastore``/``records``, any others apart.

    One datastore (ours, or an upstream file datastore) keeps the shape every
    reader knows; a chained datastore's other children go to ``other_datastores``.
    """
    names = list(records)
    if not names:
        return detail(**values)
    first = names[0]
    others = {name: records[name] for name in names[1:]} or None
    return detail(datastore=first, records=records[first], other_datastores=others, **values)


class CallRecorder:
    """Records the calls of one attempt of one quantum, and the attempt's end.

    Args:
        log: the event log the attempt appends to (the recorder closes it).
        quantum_id: the quantum's id.
        attempt: the attempt's number.
        predicted_outputs: the ids a ``put`` may write; a failed put of any
            other id is ``rejected`` (nothing was written).
        logger: a bound structlog logger for warnings (``call_not_recorded``).
        lease: the attempt's lease, released at close.
        owns_log: False when the log is someone else's: close leaves it open.
    """

    __slots__ = (
        "_id_text",
        "_logger",
        "_owns_log",
        "attempt",
        "closed",
        "finished",
        "lease",
        "log",
        "predicted_outputs",
        "quantum_id",
    )

    def __init__(
        self,
        log: EventLog,
        quantum_id: str,
        attempt: int,
        *,
        predicted_outputs: Iterable[uuid.UUID],
        logger: Any,
        lease: LeaseHolder | None = None,
        owns_log: bool = True,
        known_ids: Iterable[uuid.UUID] = (),
    ) -> None:
        self.log = log
        self.quantum_id = quantum_id
        self.attempt = attempt
        self.predicted_outputs: frozenset[uuid.UUID] = frozenset(predicted_outputs)
        #: Whether the attempt's end is recorded; whether the ledger is let go.
        self.finished = False
        self.closed = False
        self._logger = logger
        self.lease = lease
        self._owns_log = owns_log
        #: The stored text of each known id, made once: str(UUID) costs ~0.5 µs a call.
        self._id_text = {i: str(i) for i in (*known_ids, *self.predicted_outputs)}

    # --- appending ----------------------------------------------------------------

    def check_open(self, call: str) -> None:
        """Refuse a call after close, before it reaches any datastore.

        Raises:
            ButlerClosedError: the butler was closed.
        """
        if self.closed:
            end = "its end is recorded" if self.finished else "it reads as interrupted"
            raise ButlerClosedError(
                f"{call}() on the butler of quantum {self.quantum_id} (attempt {self.attempt}) "
                f"after close(): nothing was done or recorded; {end}. Open a new butler "
                "(a new attempt of the quantum) to go on"
            )

    @property
    def open(self) -> bool:
        """Whether calls are still taken (not closed)."""
        return not self.closed

    def text(self, ref: Any) -> str:
        """The stored text of a ref's id."""
        dataset_id = ref.id
        return self._id_text.get(dataset_id) or str(dataset_id)

    def append(self, kind: str, entries: list[Entry], error: BaseException | None = None) -> None:
        """Record one call; for a call that raised ``error``, see `keep_caller_error`."""
        if not entries:
            return
        if error is None:
            self.log.append(PendingCall(self.quantum_id, self.attempt, kind, entries))
            return
        with keep_caller_error(error, kind, self._logger):
            self.log.append(PendingCall(self.quantum_id, self.attempt, kind, entries))

    def one(
        self,
        kind: str,
        ref: Any,
        outcome: str,
        error: BaseException | None = None,
        detail_text: str | None = None,
    ) -> None:
        """Record a call on one dataset with its outcome (and the error it raised)."""
        if error is None:
            entry: Entry = (self.text(ref), outcome, None, None, detail_text)
            self.log.append(PendingCall(self.quantum_id, self.attempt, kind, [entry]))
            return
        entry = (self.text(ref), outcome, type(error).__name__, str(error), detail_text)
        with keep_caller_error(error, kind, self._logger):
            self.log.append(PendingCall(self.quantum_id, self.attempt, kind, [entry]))

    # --- the calls ------------------------------------------------------------------

    def read(
        self,
        kind: str,
        ref: Any,
        read: Callable[[], _T],
        *,
        parameters: Any = None,
        storage_class: str | None = None,
    ) -> _T:
        """A ``get`` or ``getDeferred``: run ``read``, then record its outcome.

        A refusal of ours (a mismatched dataset type) is ``rejected``;
        ``LookupError``, ``FileNotFoundError`` and ``OSError`` are ``missing``
        (upstream marks the id unavailable); any other error is ``error``.
        The detail names the read parameters and storage class, if given.
        """
        self.check_open(kind)
        # Most reads pass neither: skip building a detail that would be None (hot path).
        text = (
            None
            if parameters is None and storage_class is None
            else detail(parameters=parameters, storage_class=storage_class)
        )
        try:
            value = read()
        except _REFUSALS as e:
            self.one(kind, ref, Outcome.REJECTED, e)
            raise
        except MISSING_ERRORS as e:
            self.one(kind, ref, Outcome.MISSING, e, text)
            raise
        except Exception as e:
            self.one(kind, ref, Outcome.ERROR, e, text)
            raise
        self.one(kind, ref, Outcome.OK, None, text)
        return value

    def stored(self, ref: Any, check: Callable[[], bool]) -> bool:
        """A ``stored``: ``ok`` when the artifact exists, ``missing`` when not."""
        self.check_open(EventKind.STORED)
        try:
            found = bool(check())
        except _REFUSALS as e:
            self.one(EventKind.STORED, ref, Outcome.REJECTED, e)
            raise
        except Exception as e:
            self.one(EventKind.STORED, ref, Outcome.ERROR, e)
            raise
        self.one(EventKind.STORED, ref, Outcome.OK if found else Outcome.MISSING)
        return found

    def stored_many(
        self, refs: Sequence[Any], check: Callable[[], Mapping[Any, bool]]
    ) -> dict[Any, bool]:
        """A ``stored_many``: one call, one transaction, one row per ref answered."""
        self.check_open("stored_many")
        try:
            found = dict(check())
        except Exception as e:
            outcome = Outcome.REJECTED if isinstance(e, _REFUSALS) else Outcome.ERROR
            name, message = type(e).__name__, str(e)
            self.append(
                EventKind.STORED, [(self.text(r), outcome, name, message, None) for r in refs], e
            )
            raise
        ok, missing, text = Outcome.OK, Outcome.MISSING, self.text
        self.append(
            EventKind.STORED,
            [
                (text(ref), ok if there else missing, None, None, None)
                for ref, there in found.items()
            ],
        )
        return found

    def unused(self, ref: Any, act: Callable[[], None]) -> None:
        """A ``markInputUnused``."""
        self.check_open(EventKind.MARK_INPUT_UNUSED)
        try:
            act()
        except Exception as e:
            self.one(EventKind.MARK_INPUT_UNUSED, ref, Outcome.ERROR, e)
            raise
        self.one(EventKind.MARK_INPUT_UNUSED, ref, Outcome.OK)

    def put(
        self,
        ref: Any,
        write: Callable[[], tuple[_T, Records]],
        *,
        provenance: Mapping[str, Any] | None = None,
        after: Callable[[], Mapping[str, Any]] | None = None,
        skipped_existing: bool = False,
    ) -> _T:
        """A ``put``: run ``write`` (which returns its result and what it wrote), record it.

        A failed put of an id that is not a predicted output, or one our
        butler refuses (the artifact exists, a mismatched type), is
        ``rejected``: nothing was written. Any other failure is ``error``;
        ``after`` then says what the datastore holds afterwards (upstream can
        lose an artifact in a failed put), asked under `keep_caller_error`.
        A success carries the records written, per datastore (`_put_detail`),
        and the put's ``provenance`` summary if given; with ``skipped_existing``
        (a resume counted an earlier attempt's output as done) the records kept.
        """
        self.check_open(EventKind.PUT)
        try:
            result, records = write()
        except Exception as e:
            if ref.id not in self.predicted_outputs or isinstance(e, _REFUSALS):
                self.one(EventKind.PUT, ref, Outcome.REJECTED, e, detail(provenance=provenance))
                raise
            # Asking the datastore what it holds now may fail too: never instead of `e`.
            with keep_caller_error(e, EventKind.PUT, self._logger):
                held = after() if after is not None else {}
                self.one(EventKind.PUT, ref, Outcome.ERROR, e, detail(**held) if held else None)
            raise
        text = _put_detail(
            records, provenance=provenance, skipped_existing=skipped_existing or None
        )
        self.one(EventKind.PUT, ref, Outcome.OK, None, text)
        return result

    def prune(
        self,
        refs: Sequence[Any],
        act: Callable[[], None],
        *,
        disassociate: bool,
        unstore: bool,
        purge: bool,
        tags: Sequence[Any] = (),
        kept: Callable[[], Mapping[uuid.UUID, Mapping[str, Any]]] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """A ``pruneDatasets``: run ``act``, record one row per ref, then run ``then``.

        Argument errors (``TypeError`` for the flag rules, ``ValueError`` for a
        component) come before anything is touched: ``rejected``. ``then``
        runs after the record (our butler deletes the trashed files there, so
        that a crash leaves an orphan for recovery, never a recorded artifact
        that vanished). ``kept`` (an unstore without purge) names the datasets
        the datastore kept as they were, with ``records`` and
        ``artifact_exists``: ``missing`` when the artifact is gone (upstream
        only warns then), else ``error``; the replay keeps their records.
        """
        self.check_open(EventKind.PRUNE)
        flags = {"disassociate": disassociate, "unstore": unstore, "purge": purge}
        text = detail(**flags, tags=list(tags) or None)
        try:
            act()
        except Exception as e:
            outcome = Outcome.REJECTED if isinstance(e, TypeError | ValueError) else Outcome.ERROR
            name, message = type(e).__name__, str(e)
            self.append(
                EventKind.PRUNE, [(self.text(r), outcome, name, message, text) for r in refs], e
            )
            raise
        left = kept() if kept is not None and unstore and not purge else {}
        entries: list[Entry] = []
        for ref in refs:
            held = left.get(ref.id)
            if held is None:
                entries.append((self.text(ref), Outcome.OK, None, None, text))
                continue
            exists = bool(held.get("artifact_exists"))
            why = "the datastore kept this dataset's record" + ("" if exists else ", artifact gone")
            kept_text = detail(**flags, tags=list(tags) or None, kept=dict(held))
            outcome = Outcome.ERROR if exists else Outcome.MISSING
            entries.append((self.text(ref), outcome, None, why, kept_text))
        self.append(EventKind.PRUNE, entries)
        if then is not None:
            then()

    def retrieve(self, call: str, refs: Sequence[Any], read: Callable[[], _T], **values: Any) -> _T:
        """A read of artifacts or records (``call``): one ``retrieve`` row per ref.

        It changes no provenance set, as upstream's butler keeps none for it;
        the detail names the call and its arguments (``values``).
        """
        self.check_open(call)
        text = detail(call=call, **values)
        try:
            value = read()
        except Exception as e:
            outcome = Outcome.MISSING if isinstance(e, MISSING_ERRORS) else Outcome.ERROR
            name, message = type(e).__name__, str(e)
            self.append(
                EventKind.RETRIEVE, [(self.text(r), outcome, name, message, text) for r in refs], e
            )
            raise
        self.append(
            EventKind.RETRIEVE, [(self.text(r), Outcome.OK, None, None, text) for r in refs]
        )
        return value

    def orphan_removed(self, ref: Any, path: str, data: bytes) -> None:
        """The deletion of an orphan artifact (a file no recorded put wrote): a ``prune``.

        Recorded before the file goes, as any prune, with its path, checksum and size.
        """
        self.check_open(EventKind.PRUNE)
        text = orphan_removal_detail(path, hashlib.sha256(data).hexdigest(), len(data))
        self.one(EventKind.PRUNE, ref, Outcome.OK, None, text)

    # --- provenance -------------------------------------------------------------------

    def replay(
        self,
        predicted_inputs: Iterable[str],
        predicted_outputs: Iterable[str],
        *,
        this_attempt: bool = False,
    ) -> ProvenanceFold:
        """Fold this quantum's events read back from the ledger (all attempts, or this one)."""
        return replay_quantum(
            self.log,
            self.quantum_id,
            predicted_inputs,
            predicted_outputs,
            attempt=self.attempt if this_attempt else None,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def record_end(self, error: BaseException | None) -> None:
        """Append how the attempt ended, once (see `record_quantum_end`).

        Raises:
            ButlerClosedError: closed without an end (the attempt reads as interrupted).
        """
        if self.finished:
            return
        self.check_open("finish")
        record_quantum_end(
            self.log,
            self.quantum_id,
            self.attempt,
            (str(i) for i in self.predicted_outputs),
            error,
        )
        self.finished = True

    def finish(self, error: BaseException | None = None) -> None:
        """Record the end (once) and close; on a full disk everything stays open.

        On `LedgerDiskFullError` or `LedgerBusyError` the ledger stays open with
        every buffered event: finish (or close) again once there is space. Any
        other failure closes the ledger (the attempt then reads as interrupted).
        """
        if self.closed:
            return
        try:
            self.record_end(error)
        except (LedgerDiskFullError, LedgerBusyError):
            raise
        except BaseException as e:
            with keep_caller_error(e, "quantum's end", self._logger):
                self.close()
            raise
        self.close()

    def close(self) -> None:
        """Flush and release the log and the lease (once); an attempt without an end stays so.

        If the flush fails for want of space (`LedgerDiskFullError`) or of the
        lock, everything stays open and the lease renewed: close again later.
        """
        if self.closed:
            return
        if not self._owns_log:
            self.closed = True
            return
        try:
            self.log.flush()
        except (LedgerDiskFullError, LedgerBusyError):
            raise
        except BaseException:
            self.closed = True
            self._release_lease()
            with contextlib.suppress(Exception):
                self.log.close()  # flushes again, fails again, then lets go
            raise
        self.closed = True
        self._release_lease()
        self.log.close()

    def _release_lease(self) -> None:
        if self.lease is not None:
            self.lease.release("end" if self.finished else "close")
            self.lease = None
