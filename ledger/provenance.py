"""`QuantumProvenanceData` and the pure replay fold that derives it from events.

The fold is the single Python implementation of the SPEC §3 semantics: the
butler, `Ledger.replay`, recovery and the tests' model checks all run it. The
SQL view ``provenance`` is the only second implementation, and a test holds the
two equal. The fold does no I/O: warnings come back as data for the caller to log.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .records import (
    DatastoreRecordData,
    SerializedDatastoreRecordData,
    StoredFileInfo,
)

if TYPE_CHECKING:
    from .quantum import Quantum

__all__ = ["ProvenanceFold", "QuantumProvenanceData", "ReplayWarning"]

# Event kinds and outcomes as stored; compared as plain strings on the hot loop.
_GET, _GET_DEFERRED, _STORED, _PUT = "get", "get_deferred", "stored", "put"
_UNUSED, _PRUNE = "mark_input_unused", "prune"
_OK, _MISSING = "ok", "missing"


class QuantumProvenanceData(BaseModel):
    """What a quantum predicted, checked, read and wrote: the result of replay."""

    predicted_inputs: set[uuid.UUID]
    available_inputs: set[uuid.UUID]
    actual_inputs: set[uuid.UUID]
    predicted_outputs: set[uuid.UUID]
    actual_outputs: set[uuid.UUID]
    datastore_records: dict[str, SerializedDatastoreRecordData]

    @classmethod
    def direct(
        cls,
        *,
        predicted_inputs: Iterable[str | uuid.UUID],
        available_inputs: Iterable[str | uuid.UUID],
        actual_inputs: Iterable[str | uuid.UUID],
        predicted_outputs: Iterable[str | uuid.UUID],
        actual_outputs: Iterable[str | uuid.UUID],
        datastore_records: Mapping[str, Mapping[str, Any]],
    ) -> QuantumProvenanceData:
        """Build from trusted JSON-decoded data without validation (ids may be text)."""

        def ids(values: Iterable[str | uuid.UUID]) -> set[uuid.UUID]:
            return {v if isinstance(v, uuid.UUID) else uuid.UUID(v) for v in values}

        return cls.model_construct(
            predicted_inputs=ids(predicted_inputs),
            available_inputs=ids(available_inputs),
            actual_inputs=ids(actual_inputs),
            predicted_outputs=ids(predicted_outputs),
            actual_outputs=ids(actual_outputs),
            datastore_records={
                name: SerializedDatastoreRecordData.model_construct(
                    dataset_ids=[
                        v if isinstance(v, uuid.UUID) else uuid.UUID(v)
                        for v in data.get("dataset_ids", [])
                    ],
                    records=data.get("records", {}),
                )
                for name, data in datastore_records.items()
            },
        )

    def record_data(self, datastore_name: str) -> DatastoreRecordData:
        """The datastore records of one datastore as `DatastoreRecordData`."""
        data = self.datastore_records.get(datastore_name)
        if data is None:
            return DatastoreRecordData()
        return DatastoreRecordData.from_simple(data.model_dump(mode="json"))

    @staticmethod
    def collect_and_transfer(
        target: Any, quanta: Iterable[Quantum], provenance: Iterable[QuantumProvenanceData]
    ) -> Any:
        """Import the actual outputs of many quanta into a target ledger database.

        See `ledger.central.collect_and_transfer`; this is upstream's spelling.
        """
        # The central layer sits above this one: look it up at call time only.
        central = importlib.import_module("ledger.central")
        return central.collect_and_transfer(target, quanta, provenance)


class ReplayWarning(BaseModel):
    """A warning the replay found, for the caller to log."""

    code: str
    message: str
    dataset_ids: list[uuid.UUID]


class ProvenanceFold:
    """The state of one quantum after some events: a pure left fold over them.

    Ids are kept as the stored text so that replay builds no UUID objects per
    event; they become UUIDs once, in `result`.
    """

    __slots__ = (
        "_parsed",
        "_puts",
        "actual",
        "actual_outputs",
        "available",
        "predicted_inputs",
        "predicted_outputs",
        "unavailable",
    )

    def __init__(self, predicted_inputs: Iterable[str], predicted_outputs: Iterable[str]) -> None:
        self.predicted_inputs: frozenset[str] = frozenset(predicted_inputs)
        self.predicted_outputs: frozenset[str] = frozenset(predicted_outputs)
        self.available: set[str] = set()
        self.unavailable: set[str] = set()
        self.actual: set[str] = set()
        self.actual_outputs: set[str] = set()
        #: dataset id -> the detail text of the `put` that wrote its current artifact;
        #: parsed only when `records` is read (a replay parses each output once, not
        #: each put: a quantum's ledger may hold thousands of puts of a few outputs).
        self._puts: dict[str, str | None] = {}
        self._parsed: dict[str, tuple[str, list[dict[str, Any]]]] | None = None

    @property
    def records(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        """Dataset id -> (datastore name, record dicts) of the artifact its `put` wrote.

        Raises:
            ValueError, AttributeError: a put's detail is not a JSON object.
        """
        if self._parsed is None:
            parsed = {}
            for dataset_id, detail in self._puts.items():
                info = json.loads(detail) if detail else {}
                parsed[dataset_id] = (info.get("datastore", ""), info.get("records", []))
            self._parsed = parsed
        return self._parsed

    def all_records(self, dataset_id: str) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every (datastore name, record dicts) its `put` wrote: a chain writes to each child.

        The first is `records`' entry; a chained datastore's other children
        are in the put's ``other_datastores``.
        """
        entry = self.records.get(dataset_id)
        if entry is None:
            return []
        found = [entry]
        detail = self._puts.get(dataset_id)
        if detail and "other_datastores" in detail:
            others = json.loads(detail).get("other_datastores") or {}
            found.extend((name, rows) for name, rows in others.items())
        return found

    @classmethod
    def for_quantum(cls, quantum: Quantum) -> ProvenanceFold:
        """A fresh state with the predicted sets of ``quantum``."""
        return cls(
            (str(ref.id) for ref in quantum.iter_predicted_inputs()),
            (str(ref.id) for ref in quantum.iter_predicted_outputs()),
        )

    def apply(self, kind: str, dataset_id: str | None, outcome: str, detail: str | None) -> None:
        """Fold one event (its stored column values) into the state."""
        self.apply_all(((kind, dataset_id, outcome, detail),))

    def apply_all(self, rows: Iterable[tuple[str, str | None, str, str | None]]) -> None:
        """Fold ``(kind, dataset_id, outcome, detail)`` rows in order: the SPEC §3 rules.

        This loop is the only implementation of the rules (`apply` folds one
        row through it). Replay runs it once per event, so the sets are bound
        to locals instead of being looked up on ``self`` for every row.
        """
        predicted = self.predicted_inputs
        available, unavailable, actual = self.available, self.unavailable, self.actual
        actual_outputs, puts = self.actual_outputs, self._puts
        self._parsed = None
        for kind, dataset_id, outcome, detail in rows:
            if dataset_id is None:
                continue  # lifecycle events do not change the sets
            if kind == _GET:
                if outcome == _OK:
                    if dataset_id in predicted:
                        actual.add(dataset_id)
                        available.add(dataset_id)
                elif outcome == _MISSING:
                    unavailable.add(dataset_id)
            elif kind == _STORED:
                if dataset_id in predicted:
                    if outcome == _OK:
                        available.add(dataset_id)
                    elif outcome == _MISSING:
                        unavailable.add(dataset_id)
            elif kind == _GET_DEFERRED:
                if outcome == _OK and dataset_id in predicted:
                    actual.add(dataset_id)
            elif kind == _UNUSED:
                if outcome == _OK:
                    actual.discard(dataset_id)
            elif kind == _PUT:
                if outcome == _OK:
                    actual_outputs.add(dataset_id)
                    puts[dataset_id] = detail
            elif kind == _PRUNE and outcome == _OK:
                flags = json.loads(detail) if detail else {}
                if flags.get("unstore"):
                    puts.pop(dataset_id, None)
                if flags.get("purge"):
                    actual_outputs.discard(dataset_id)

    def warnings(self) -> list[ReplayWarning]:
        """The two consistency warnings of ``extract_provenance_data`` (SPEC §3)."""
        found: list[ReplayWarning] = []
        both = self.actual & self.unavailable
        if both:
            found.append(
                ReplayWarning(
                    code="actual_and_unavailable",
                    message="inputs were both used and unavailable; "
                    "they are dropped from the actual inputs",
                    dataset_ids=sorted(uuid.UUID(i) for i in both),
                )
            )
        unchecked = self.predicted_inputs - self.available - self.unavailable
        if unchecked:
            found.append(
                ReplayWarning(
                    code="unchecked_inputs",
                    message="the task did not check these predicted inputs "
                    "(neither get nor stored)",
                    dataset_ids=sorted(uuid.UUID(i) for i in unchecked),
                )
            )
        return found

    def result(self, datastore_name: str | Iterable[str] | None = None) -> QuantumProvenanceData:
        """The provenance as ``extract_provenance_data`` returns it (SPEC §3).

        ``datastore_name`` (one name, or several: the children of a chain) is
        listed in the datastore records even when none of its records survive,
        as upstream lists each of its datastores.
        """
        actual = self.actual - self.unavailable
        by_datastore: dict[str, list[StoredFileInfo]] = {}
        names = [datastore_name] if isinstance(datastore_name, str) else datastore_name or []
        for name in names:
            by_datastore[name] = []
        for dataset_id in sorted(self.actual_outputs):
            # None: unstored without purge, an actual output with no artifact.
            for name, rows in self.all_records(dataset_id):
                by_datastore.setdefault(name, []).extend(
                    StoredFileInfo.model_validate({"dataset_id": dataset_id, **row}) for row in rows
                )
        # Parse each id once: the other sets mostly repeat the predicted ids, and
        # parsing a UUID costs more than the rest of building the result.
        parsed = {i: uuid.UUID(i) for i in self.predicted_inputs | self.predicted_outputs}

        def ids(values: Iterable[str]) -> set[uuid.UUID]:
            return {parsed[i] if i in parsed else uuid.UUID(i) for i in values}

        return QuantumProvenanceData(
            predicted_inputs={parsed[i] for i in self.predicted_inputs},
            available_inputs=ids(self.available),
            actual_inputs=ids(actual),
            predicted_outputs={parsed[i] for i in self.predicted_outputs},
            actual_outputs=ids(self.actual_outputs),
            datastore_records={
                name: DatastoreRecordData.from_records(rows).serialize()
                for name, rows in by_datastore.items()
            },
        )
