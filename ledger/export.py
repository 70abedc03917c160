"""Exporting a ledger: JSON lines of its rows, and W3C PROV-JSON of what happened.

``export_jsonl`` writes the tables themselves, one row per line, every column as
stored (JSON columns stay JSON text, ids stay canonical text), so an export can
be re-verified without the ledger: each event's ``hash`` and each quantum's
definition digest can be recomputed from the lines alone. ``export_prov``
describes the same ledger in the W3C PROV data model. Both only read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from .events import EventKind, EventRow
from .store.ledger import Ledger
from .store.schema import datasets, quanta
from .store.validate import check_dataset, check_event, check_quanta

__all__ = [
    "JSONL_FORMAT",
    "PROV_NAMESPACES",
    "export_jsonl",
    "export_prov",
    "jsonl_records",
    "merge_prov",
]

#: The ``format`` of the first line of a JSON-lines export.
JSONL_FORMAT = "quantum-ledger/jsonl"
_JSONL_VERSION = 1

#: PROV namespaces: terms, and one namespace per kind of thing named by id.
PROV_NAMESPACES = {
    "qledger": "urn:quantum-ledger:term:",
    "quantum": "urn:quantum-ledger:quantum:",
    "dataset": "urn:quantum-ledger:dataset:",
    "executor": "urn:quantum-ledger:executor:",
}

_QUANTA_COLUMNS = tuple(c.name for c in quanta.columns)
_DATASET_COLUMNS = tuple(c.name for c in datasets.columns)
_ENVIRONMENT = ("host", "pid", "user", "python_version", "library_version")
_UNSAFE_LOCAL = re.compile(r"[^A-Za-z0-9._-]")


def _select(columns: tuple[str, ...], table: str, order: str) -> str:
    return "SELECT " + ", ".join(f'"{c}"' for c in columns) + f" FROM {table} ORDER BY {order}"


def jsonl_records(ledger: Ledger) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines export, in order, streamed.

    First one ``{"record": "ledger", "format": ..., "format_version": 1,
    "source": ..., "info": {ledger_info}}``; then one ``{"record": "quantum",
    ...}`` per ``quanta`` row (by creation time), one ``{"record": "dataset",
    ...}`` per ``datasets`` row, and one ``{"record": "event", ...}`` per
    ``events`` row in ``seq`` order. Each row record holds every column of its
    table under the column's name, with the value as stored.
    """
    info = dict(ledger.rows("SELECT key, value FROM ledger_info ORDER BY key"))
    yield {
        "record": "ledger",
        "format": JSONL_FORMAT,
        "format_version": _JSONL_VERSION,
        "source": ledger.where,  # a URL's password hidden
        "info": info,
    }
    for row in ledger.rows(_select(_QUANTA_COLUMNS, "quanta", "created_at, quantum_id")):
        check_quanta(row, ledger.where)
        yield {"record": "quantum", **dict(zip(_QUANTA_COLUMNS, row, strict=True))}
    for row in ledger.rows(
        _select(_DATASET_COLUMNS, "datasets", "quantum_id, role, connection, position")
    ):
        check_dataset(row, ledger.where)
        yield {"record": "dataset", **dict(zip(_DATASET_COLUMNS, row, strict=True))}
    for row in ledger.rows(_select(EventRow._fields, "events", "seq")):
        check_event(row, ledger.where)
        yield {"record": "event", **dict(zip(EventRow._fields, row, strict=True))}


def export_jsonl(ledger: Ledger, out: IO[str]) -> int:
    """Write ``ledger`` as JSON lines (see `jsonl_records`) to ``out``; the number of lines."""
    count = 0
    for record in jsonl_records(ledger):
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


# --- W3C PROV ---------------------------------------------------------------------


def _local(text: str) -> str:
    """A PROV local name made of safe characters."""
    return _UNSAFE_LOCAL.sub("_", text) or "_"


def _qname(name: str) -> dict[str, str]:
    """A qualified-name value (PROV-JSON types it explicitly; a bare string is a literal)."""
    return {"$": name, "type": "prov:QUALIFIED_NAME"}


def _executor_id(env: dict[str, Any]) -> str:
    return f"executor:{_local(str(env.get('host', 'unknown')))}-{env.get('pid', 0)}"


def _data_id_label(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def export_prov(ledger: Ledger) -> dict[str, Any]:
    """The ledger as a W3C PROV-JSON document (a plain dict, ready for ``json.dump``).

    - each quantum is an ``activity`` (``quantum:<id>``) with ``prov:startTime``
      (its first start) and, once it ended, ``prov:endTime``, plus its task,
      data ID, run, status and attempts;
    - each dataset a quantum actually read or wrote is an ``entity``
      (``dataset:<id>``) with its type, data ID, run and storage class, and for
      outputs the artifact's path, size and sha256;
    - ``used`` links a quantum to its actual inputs (time: the first read),
      ``wasGeneratedBy`` its actual outputs to it (time: the recorded ``put``);
    - each executor process that ran an attempt (host, pid, user, Python and
      library versions) is a ``prov:SoftwareAgent`` with ``wasAssociatedWith``.

    Actual inputs and outputs are those replay gives (SPEC §3), over all attempts.
    """
    doc: dict[str, Any] = {
        "prefix": dict(PROV_NAMESPACES),
        "activity": {},
        "entity": {},
        "agent": {},
        "used": {},
        "wasGeneratedBy": {},
        "wasAssociatedWith": {},
    }
    status = {str(row["quantum_id"]): row for row in ledger.status()}
    described: dict[str, dict[str, Any]] = {}
    for row in ledger.rows(
        _select(_DATASET_COLUMNS, "datasets", "quantum_id, role, connection, position")
    ):
        check_dataset(row, ledger.where)
        values = dict(zip(_DATASET_COLUMNS, row, strict=True))
        described.setdefault(values["dataset_id"], values)

    agents: dict[str, set[str]] = {}
    for event in ledger.events(kind=EventKind.QUANTUM_STARTED):
        env = event.detail or {}
        agent = _executor_id(env)
        doc["agent"].setdefault(
            agent,
            {
                "prov:type": _qname("prov:SoftwareAgent"),
                "prov:label": f"executor pid {env.get('pid')} on {env.get('host')}",
                **{f"qledger:{key}": env[key] for key in _ENVIRONMENT if key in env},
            },
        )
        agents.setdefault(str(event.quantum_id), set()).add(agent)

    def relation(kind: str, body: dict[str, Any]) -> None:
        doc[kind][f"_:{kind}{len(doc[kind]) + 1}"] = body

    for qid in (str(q) for q in ledger.quantum_ids()):
        info = ledger.info(qid)
        state = status.get(qid, {})
        activity = f"quantum:{qid}"
        attributes: dict[str, Any] = {
            "prov:type": _qname("qledger:Quantum"),
            "prov:label": f"{info.task_label} ({_data_id_label(info.data_id)})",
            "qledger:task_label": info.task_label,
            "qledger:data_id": json.dumps(info.data_id, sort_keys=True, separators=(",", ":")),
            "qledger:status": state.get("status", "interrupted"),
            "qledger:attempts": int(state.get("attempts") or 0),
        }
        if info.run is not None:
            attributes["qledger:run"] = info.run
        if state.get("started_at"):
            attributes["prov:startTime"] = state["started_at"]
        if state.get("ended_at"):
            attributes["prov:endTime"] = state["ended_at"]
        if state.get("error_type"):
            attributes["qledger:error_type"] = state["error_type"]
            attributes["qledger:error_message"] = state.get("error_message") or ""
        doc["activity"][activity] = attributes
        for agent in sorted(agents.get(qid, ())):
            relation("wasAssociatedWith", {"prov:activity": activity, "prov:agent": agent})

        provenance = ledger.replay(qid)
        first_read = _first_times(ledger, qid, ("get", "get_deferred"))
        written = _first_times(ledger, qid, ("put",), last=True)
        records = {
            str(dataset_id): record
            for name in provenance.datastore_records
            for dataset_id, rows in provenance.record_data(name).records.items()
            for record in rows
            if record.component is None
        }
        for dataset_id in sorted(str(i) for i in provenance.actual_inputs):
            entity = _entity(doc, dataset_id, described.get(dataset_id))
            body = {"prov:activity": activity, "prov:entity": entity}
            if dataset_id in first_read:
                body["prov:time"] = first_read[dataset_id]
            relation("used", body)
        for dataset_id in sorted(str(i) for i in provenance.actual_outputs):
            entity = _entity(doc, dataset_id, described.get(dataset_id))
            record = records.get(dataset_id)
            if record is not None:
                doc["entity"][entity].update(
                    {
                        "qledger:path": record.path,
                        "qledger:file_size": record.file_size,
                        "qledger:checksum": record.checksum or "",
                    }
                )
            body = {"prov:entity": entity, "prov:activity": activity}
            if dataset_id in written:
                body["prov:time"] = written[dataset_id]
            relation("wasGeneratedBy", body)
    return {key: value for key, value in doc.items() if value}


def _entity(doc: dict[str, Any], dataset_id: str, row: dict[str, Any] | None) -> str:
    """The entity of one dataset, added to the document the first time it is named."""
    entity = f"dataset:{dataset_id}"
    if entity in doc["entity"]:
        return entity
    attributes: dict[str, Any] = {"prov:type": _qname("qledger:Dataset")}
    if row is not None:
        label = _data_id_label(json.loads(row["data_id"]))  # checked as it was read
        attributes.update(
            {
                "prov:label": f"{row['dataset_type']} ({label})",
                "qledger:dataset_type": row["dataset_type"],
                "qledger:data_id": row["data_id"],
                "qledger:run": row["run"],
                "qledger:storage_class": row["storage_class"],
            }
        )
    doc["entity"][entity] = attributes
    return entity


def _first_times(
    ledger: Ledger, qid: str, kinds: tuple[str, ...], *, last: bool = False
) -> dict[str, str]:
    """dataset id -> time of its first (or last) successful event of ``kinds``."""
    marks = ", ".join("?" * len(kinds))
    pick = "MAX" if last else "MIN"
    rows = ledger.rows(
        f"SELECT dataset_id, {pick}(recorded_at) FROM events WHERE quantum_id = ? "
        f"AND kind IN ({marks}) AND outcome = 'ok' AND dataset_id IS NOT NULL "
        "GROUP BY dataset_id",
        [qid, *kinds],
    )
    return {str(dataset_id): str(at) for dataset_id, at in rows}


def merge_prov(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One PROV-JSON document from several (`export_prov` of many ledgers).

    Activities, entities and agents are keyed by their ids (``quantum:<id>``,
    ``dataset:<id>``, ``executor:<host>-<pid>``), so a dataset one quantum
    wrote and another read is one entity; relations, whose ids are blank
    nodes of their own document, are numbered anew.
    """
    merged: dict[str, Any] = {"prefix": dict(PROV_NAMESPACES)}
    for document in documents:
        for kind, items in document.items():
            into = merged.setdefault(kind, {})
            for key, body in items.items():
                if key.startswith("_:"):
                    key = f"_:{kind}{len(into) + 1}"
                into.setdefault(key, body)
    return merged
