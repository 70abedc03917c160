"""Datastore records: where an artifact lives and how to check it.

The serialized shape is upstream's::

    {"dataset_ids": [...],
     "records": {"file_datastore_records": {dataset_id: [record, ...]}}}

so provenance written by one quantum feeds the next quantum's inputs unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .errors import PathEscapeError

__all__ = [
    "RECORDS_TABLE",
    "DatastoreRecordData",
    "SerializedDatastoreRecordData",
    "StoredFileInfo",
    "check_relative_path",
]

#: Name of the record table in the serialized form (upstream's name).
RECORDS_TABLE = "file_datastore_records"


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is relative and stays below its root.

    Raises:
        PathEscapeError: the path is absolute, has a drive, or climbs with ``..``.
    """
    if not path or "\x00" in path:
        raise PathEscapeError(f"datastore record path {path!r} is empty or contains NUL")
    if ".." not in path and ":" not in path and "\\" not in path and not path.startswith("/"):
        return path  # no root, drive, UNC prefix or '..' can hide in it: skip the parsing below
    posix = PurePosixPath(path)
    if posix.is_absolute() or PureWindowsPath(path).drive or path.startswith("\\"):
        raise PathEscapeError(
            f"datastore record path {path!r} is absolute; records must be relative to the root"
        )
    if ".." in posix.parts or ".." in PureWindowsPath(path).parts:
        raise PathEscapeError(f"datastore record path {path!r} escapes the datastore root via '..'")
    return path


class StoredFileInfo(BaseModel):
    """One file artifact of one dataset (or one component of it)."""

    model_config = ConfigDict(frozen=True)

    dataset_id: uuid.UUID
    path: str
    formatter: str
    storage_class: str
    component: str | None = None
    checksum: str | None = None
    file_size: int = -1

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_relative_path(value)

    def to_simple(self) -> dict[str, Any]:
        """Plain JSON-ready dict (id as text)."""
        return {
            "dataset_id": str(self.dataset_id),
            "path": self.path,
            "formatter": self.formatter,
            "storage_class": self.storage_class,
            "component": self.component,
            "checksum": self.checksum,
            "file_size": self.file_size,
        }


class SerializedDatastoreRecordData(BaseModel):
    """The JSON form of `DatastoreRecordData` (upstream's shape)."""

    dataset_ids: list[uuid.UUID]
    records: dict[str, dict[str, list[dict[str, Any]]]]


class DatastoreRecordData(BaseModel):
    """Records of one datastore for a set of datasets."""

    model_config = ConfigDict(frozen=True)

    records: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}

    def __hash__(self) -> int:
        return hash(tuple(sorted((str(k), v) for k, v in self.records.items())))

    @classmethod
    def from_records(cls, records: Iterable[StoredFileInfo]) -> DatastoreRecordData:
        """Group records by dataset id."""
        grouped: dict[uuid.UUID, list[StoredFileInfo]] = {}
        for record in records:
            grouped.setdefault(record.dataset_id, []).append(record)
        return cls(records={k: tuple(v) for k, v in grouped.items()})

    @property
    def dataset_ids(self) -> list[uuid.UUID]:
        """The ids this record data covers."""
        return list(self.records)

    def subset(self, ids: Iterable[uuid.UUID]) -> DatastoreRecordData:
        """Records of only the given dataset ids."""
        wanted = set(ids)
        return DatastoreRecordData(records={k: v for k, v in self.records.items() if k in wanted})

    def update(self, other: DatastoreRecordData) -> DatastoreRecordData:
        """A new object with the records of both (``other`` wins per dataset id)."""
        return DatastoreRecordData(records={**self.records, **other.records})

    def to_simple(self) -> dict[str, Any]:
        """Upstream's serialized shape, JSON-ready."""
        return {
            "dataset_ids": [str(k) for k in self.records],
            "records": {
                RECORDS_TABLE: {str(k): [r.to_simple() for r in v] for k, v in self.records.items()}
            },
        }

    def serialize(self) -> SerializedDatastoreRecordData:
        """The serialized pydantic model."""
        return SerializedDatastoreRecordData.model_validate(self.to_simple())

    @classmethod
    def from_simple(
        cls, data: SerializedDatastoreRecordData | Mapping[str, Any] | DatastoreRecordData
    ) -> DatastoreRecordData:
        """Accept this class, the serialized model, or its dict form."""
        if isinstance(data, DatastoreRecordData):
            return data
        if isinstance(data, SerializedDatastoreRecordData):
            data = data.model_dump(mode="json")
        if "records" in data and "dataset_ids" not in data:
            # Our own model_dump: {"records": {id: [record, ...]}}
            return cls.model_validate(data)
        records: list[StoredFileInfo] = []
        for table_records in (data.get("records") or {}).values():
            for dataset_id, rows in table_records.items():
                for row in rows:
                    records.append(StoredFileInfo.model_validate({"dataset_id": dataset_id, **row}))
        result = cls.from_records(records)
        # Ids listed without records are kept: upstream lists them too.
        missing = {uuid.UUID(str(i)) for i in data.get("dataset_ids", [])} - set(result.records)
        if missing:
            result = cls(records={**result.records, **dict.fromkeys(missing, ())})
        return result
