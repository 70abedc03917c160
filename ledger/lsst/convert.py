"""Between this library's types and upstream's (``lsst.daf.butler``): refs, quanta, provenance.

`to_upstream` and `from_upstream` convert `ledger.QuantumProvenanceData` to
and from upstream's ``QuantumProvenanceData``, datastore records included, so
an executor keeps writing the provenance files it writes today;
`quantum_from_upstream` gives our `ledger.Quantum` for upstream's.
"""

from __future__ import annotations

import numbers
import uuid
from collections.abc import Mapping
from typing import Any

from lsst.daf.butler import QuantumProvenanceData as _UpstreamProvenance
from lsst.daf.butler.datastore.record_data import DatastoreRecordData as _UpstreamRecordData
from lsst.daf.butler.datastore.stored_file_info import StoredFileInfo as _UpstreamFileInfo

from ..errors import LedgerError, PathEscapeError
from ..model import DatasetRef, DatasetType
from ..provenance import QuantumProvenanceData
from ..quantum import Quantum
from ..records import RECORDS_TABLE, DatastoreRecordData, StoredFileInfo, check_relative_path

__all__ = [
    "from_upstream",
    "quantum_from_upstream",
    "record_dict",
    "ref_from_upstream",
    "split_records",
    "to_upstream",
]


def _plain(value: Any) -> int | str:
    """A data ID value as JSON: upstream's are int or str (numpy ints become int)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return str(value)


def ref_from_upstream(ref: Any) -> DatasetRef:
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


def record_dict(info: Any) -> dict[str, Any]:
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
            StoredFileInfo.model_validate({"dataset_id": dataset_id, **record_dict(info)})
            for infos in tables.values()
            for info in infos
        )
    return DatastoreRecordData(records=records)


def _records_to_upstream(data: DatastoreRecordData, table: str = RECORDS_TABLE) -> Any:
    """Our `DatastoreRecordData` as upstream's, in its opaque ``table``."""
    records: dict[uuid.UUID, dict[str, list[Any]]] = {}
    for dataset_id, infos in data.records.items():
        rows = [{k: v for k, v in r.to_simple().items() if k != "dataset_id"} for r in infos]
        tables = {table: [_UpstreamFileInfo.from_record(row) for row in rows]}
        records[dataset_id] = tables if rows else {}
    return _UpstreamRecordData(records=records)


def to_upstream(
    provenance: QuantumProvenanceData, *, tables: Mapping[str, str] | None = None
) -> Any:
    """Our `QuantumProvenanceData` as upstream's (``lsst.daf.butler.QuantumProvenanceData``).

    The datastore records take upstream's serialized shape
    (``{"dataset_ids": [...], "records": {record class: {id hex: {table: [...]}}}}``),
    built by upstream's own ``DatastoreRecordData.to_simple``. Each datastore's
    records go in its opaque table: ``tables`` (datastore name -> table, as a
    `RecordingButler` records them in ``quantum_started``'s
    ``datastore_tables``), else ``file_datastore_records``, upstream's default;
    upstream's ``import_records`` reads a datastore's records from its own
    table only.
    """
    tables = tables or {}
    return _UpstreamProvenance(
        predicted_inputs=set(provenance.predicted_inputs),
        available_inputs=set(provenance.available_inputs),
        actual_inputs=set(provenance.actual_inputs),
        predicted_outputs=set(provenance.predicted_outputs),
        actual_outputs=set(provenance.actual_outputs),
        datastore_records={
            name: _records_to_upstream(
                provenance.record_data(name), tables.get(name, RECORDS_TABLE)
            ).to_simple()
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


def split_records(
    records: Mapping[str, Any],
) -> tuple[dict[str, DatastoreRecordData], dict[str, dict[str, list[dict[str, Any]]]]]:
    """Upstream's records per datastore as ours, and apart those that cannot be ours.

    Records whose path is absolute (files ingested in place, outside the
    datastore root) are returned apart, per datastore and dataset id.
    """
    datastore_records: dict[str, DatastoreRecordData] = {}
    external: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, data in records.items():
        kept: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
        for dataset_id, tables in data.records.items():
            rows = [record_dict(info) for infos in tables.values() for info in infos]
            inside = [r for r in rows if not _escapes_root(r["path"])]
            if len(inside) < len(rows):
                outside = [r for r in rows if _escapes_root(r["path"])]
                external.setdefault(name, {})[str(dataset_id)] = outside
            kept[dataset_id] = tuple(
                StoredFileInfo.model_validate({"dataset_id": dataset_id, **r}) for r in inside
            )
        datastore_records[name] = DatastoreRecordData(records=kept)
    return datastore_records, external


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
    datastore_records, external = split_records(quantum.datastore_records or {})
    data_id = quantum.dataId
    ours = Quantum(
        task_label=task_label or quantum.taskName or "unknown",
        data_id={} if data_id is None else {str(k): _plain(v) for k, v in data_id.mapping.items()},
        inputs={
            dt.name: tuple(ref_from_upstream(r) for r in refs)
            for dt, refs in quantum.inputs.items()
        },
        init_inputs={dt.name: ref_from_upstream(r) for dt, r in quantum.initInputs.items()},
        outputs={
            dt.name: tuple(ref_from_upstream(r) for r in refs)
            for dt, refs in quantum.outputs.items()
        },
        datastore_records=datastore_records,
    )
    return ours, external
