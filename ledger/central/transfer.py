"""``collect_and_transfer``: the actual outputs of many quanta, into a central ledger.

Upstream's ``QuantumProvenanceData.collect_and_transfer`` imports the actual
outputs of many quanta into a full butler: datasets into the registry and
their datastore records into the datastore, one vectorised insert per dataset
type and run. Ours writes the same facts into the ``dataset_locations`` table
of a ledger database: one row per (dataset, datastore) with the producer, the
type, run and data ID, and the datastore records. It is idempotent (rows already
there are counted, not written again); a dataset already there from a different
producer is a conflict.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, insert, select

from .._logging import get_logger
from ..errors import IngestConflictError, InvalidParameterError
from ..events import utc_now
from ..model import DatasetRef
from ..provenance import QuantumProvenanceData
from ..quantum import Quantum
from ..store import migrate
from ..store.log import lock_event_order
from ..store.schema import dataset_locations
from .target import begin_writing, chunks, close_target, open_target

__all__ = ["TransferReport", "collect_and_transfer"]

_log = get_logger(__name__)


class TransferReport(BaseModel):
    """What `collect_and_transfer` imported, per dataset type and run, and what it could not."""

    target: str
    #: "dataset type / run" -> rows written (a dataset in two datastores counts twice).
    imported: dict[str, int] = {}
    #: Rows that were there already (an earlier transfer of the same outputs).
    already_present: int = 0
    #: Actual outputs with no datastore record: nothing says where their artifact is.
    without_artifact: list[str] = []
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Rows written."""
        return sum(self.imported.values())


def collect_and_transfer(
    target: str | os.PathLike[str],
    quanta: Iterable[Quantum],
    provenance: Iterable[QuantumProvenanceData],
) -> TransferReport:
    """Import the actual outputs of many quanta, with their datastore records, into ``target``.

    Args:
        target: a ledger database (SQLite path or URL; created when new).
        quanta: the quanta, each with its ``id`` (as `Ledger.quantum` rebuilds them).
        provenance: their provenance, in the same order (`Ledger.replay`,
            ``extract_provenance_data``).

    Returns:
        A `TransferReport`; actual outputs without datastore records are listed in
        ``without_artifact`` and not imported.

    Raises:
        IngestConflictError: a dataset is already recorded as made by another quantum,
            or two quanta of this call claim it (nothing of this call is written).
        InvalidParameterError: a provenance claims outputs its quantum does not
            predict (the two lists are not in the same order).
        ValueError: ``quanta`` and ``provenance`` differ in length.
    """
    started = time.perf_counter()
    where = migrate.display_target(os.fspath(target))
    report = TransferReport(target=where)
    now = utc_now()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    #: (dataset, datastore) -> producer, to catch repeats within this call
    claimed: dict[tuple[str, str], str | None] = {}
    for index, (quantum, data) in enumerate(zip(quanta, provenance, strict=True)):
        refs: dict[uuid.UUID, DatasetRef] = {r.id: r for r in quantum.iter_predicted_outputs()}
        strangers = data.actual_outputs - set(refs)
        if strangers:
            raise InvalidParameterError(
                f"provenance #{index} has actual outputs that quantum #{index} "
                f"({quantum.task_label}, {quantum.id}) does not predict, e.g. "
                f"{min(strangers, key=str)}: give quanta and provenance in the same order"
            )
        producer = str(quantum.id) if quantum.id is not None else None
        located: set[uuid.UUID] = set()
        for datastore_name, serialized in data.datastore_records.items():
            by_dataset: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for table, records in serialized.records.items():
                for key, rows in records.items():
                    by_dataset.setdefault(str(key), {})[table] = rows
            for did in sorted(data.actual_outputs, key=str):
                records_of = by_dataset.get(str(did))
                ref = refs.get(did)
                if not records_of or ref is None:
                    continue
                located.add(did)
                slot = (str(did), datastore_name)
                if slot in claimed:
                    if claimed[slot] != producer:
                        raise IngestConflictError(
                            f"dataset {did} is an actual output of both quantum {claimed[slot]} "
                            f"and quantum {producer} in this call: two quanta claim it; "
                            "nothing was transferred"
                        )
                    continue  # the same quantum given twice: once is enough
                claimed[slot] = producer
                groups.setdefault((ref.dataset_type.name, ref.run), []).append(
                    {
                        "dataset_id": str(did),
                        "datastore_name": datastore_name,
                        "quantum_id": producer,
                        "dataset_type": ref.dataset_type.name,
                        "storage_class": ref.dataset_type.storage_class,
                        "run": ref.run,
                        "data_id": ref.data_id.to_json(),
                        "records": json.dumps(records_of, sort_keys=True, separators=(",", ":")),
                        "transferred_at": now,
                    }
                )
        report.without_artifact.extend(
            str(d) for d in sorted(data.actual_outputs - located, key=str)
        )
    engine = open_target(target)
    try:
        begin_writing(engine)
        with engine.begin() as conn:
            lock_event_order(conn)  # the only writer of events until commit
            present = _present(conn, groups, where)
            for (dataset_type, run), rows in sorted(groups.items()):
                fresh = [r for r in rows if (r["dataset_id"], r["datastore_name"]) not in present]
                if fresh:
                    conn.execute(insert(dataset_locations), fresh)
                report.imported[f"{dataset_type} / {run}"] = len(fresh)
                report.already_present += len(rows) - len(fresh)
    finally:
        close_target(engine)
    report.seconds = time.perf_counter() - started
    _log.info(
        "outputs transferred",
        target=where,
        rows=report.total,
        already_present=report.already_present,
        without_artifact=len(report.without_artifact),
    )
    return report


def _present(
    conn: Connection, groups: dict[tuple[str, str], list[dict[str, Any]]], where: str
) -> set[tuple[str, str]]:
    """The (dataset, datastore) rows the target has already; refuses another producer."""
    producer = {row["dataset_id"]: row["quantum_id"] for rows in groups.values() for row in rows}
    table = dataset_locations
    present: set[tuple[str, str]] = set()
    for chunk in chunks(sorted(producer)):
        for did, datastore_name, qid in conn.execute(
            select(table.c.dataset_id, table.c.datastore_name, table.c.quantum_id).where(
                table.c.dataset_id.in_(chunk)
            )
        ):
            if qid != producer[did]:
                raise IngestConflictError(
                    f"dataset {did} is in {where} as an output of quantum {qid}, not of "
                    f"{producer[did]}: two quanta claim it; nothing was transferred"
                )
            present.add((did, datastore_name))
    return present
