"""The `Quantum`: one task applied to one data ID, with its predicted datasets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .model import DataId, DatasetRef
from .records import DatastoreRecordData

__all__ = ["Quantum"]


class Quantum(BaseModel):
    """A unit of work and everything it is predicted to read and write.

    ``datastore_records`` maps a datastore name to the records of the inputs;
    it accepts `DatastoreRecordData`, or the serialized form found in
    ``QuantumProvenanceData.datastore_records``.
    """

    model_config = ConfigDict(frozen=True)

    task_label: str
    data_id: DataId = DataId()
    inputs: dict[str, tuple[DatasetRef, ...]] = {}
    init_inputs: dict[str, DatasetRef] = {}
    outputs: dict[str, tuple[DatasetRef, ...]] = {}
    datastore_records: dict[str, DatastoreRecordData] = {}
    #: A stable id for the quantum; a fresh uuid4 per execution when omitted.
    id: uuid.UUID | None = None

    @field_validator("datastore_records", mode="before")
    @classmethod
    def _accept_serialized(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {name: DatastoreRecordData.from_simple(data) for name, data in value.items()}
        return value

    def __hash__(self) -> int:
        return hash(
            (
                self.task_label,
                self.data_id,
                self.id,
                frozenset(ref.id for ref in self.iter_predicted_inputs()),
                frozenset(ref.id for ref in self.iter_predicted_outputs()),
            )
        )

    def iter_predicted_inputs(self) -> Iterator[DatasetRef]:
        """Every ref in ``inputs`` and ``init_inputs``."""
        for refs in self.inputs.values():
            yield from refs
        yield from self.init_inputs.values()

    def iter_predicted_outputs(self) -> Iterator[DatasetRef]:
        """Every ref in ``outputs``."""
        for refs in self.outputs.values():
            yield from refs
