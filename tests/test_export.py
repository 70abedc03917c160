"""Exports: JSON lines of every stored row; W3C PROV-JSON, validated with the ``prov`` package."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prov.model import (
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvUsage,
)

from ledger import Ledger, QuantumBackedButler
from ledger.events import chain_hash, definition_digest
from ledger.export import JSONL_FORMAT, export_jsonl, export_prov
from ledger.store.verify import dataset_columns, quanta_columns
from ledger.testing import QuantumFixture, make_quantum


def run_quantum(fixture: QuantumFixture, ledger: Path, *, fail: bool = False) -> None:
    """Check every input, read the present ones but the last, write one output (maybe fail)."""
    try:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
            found = b.stored_many(fixture.predicted_inputs)
            for ref in [r for r, present in found.items() if present][:-1]:
                b.get(ref)
            b.put({"flux": 1.5}, fixture.outputs[0])
            if fail:
                raise RuntimeError("the fit did not converge")
    except RuntimeError:
        if not fail:
            raise


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, list[QuantumFixture]]:
    """One ledger holding a succeeded and a failed quantum."""
    root = tmp_path / "repo"
    first = make_quantum(root, visit=1, n_inputs=3, n_missing=1, n_outputs=2)
    second = make_quantum(root, visit=2, n_inputs=2, n_outputs=1, output_type="coadd")
    ledger = tmp_path / "shared.ledger"
    run_quantum(first, ledger)
    run_quantum(second, ledger, fail=True)
    return ledger, [first, second]


def jsonl(ledger: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    with Ledger.open(ledger) as led:
        count = export_jsonl(led, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == count
    return [json.loads(line) for line in lines]


# --- JSON lines ---------------------------------------------------------------------------


def test_jsonl_holds_every_row_of_every_table(shared: tuple[Path, list[QuantumFixture]]) -> None:
    """The export is a header line, then every quanta, datasets and events row, in seq order."""
    ledger, _ = shared
    records = jsonl(ledger)
    header = records[0]
    assert header["record"] == "ledger"
    assert header["format"] == JSONL_FORMAT
    assert header["format_version"] == 1
    assert header["info"]["schema_version"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in records[1:]:
        by_kind.setdefault(record["record"], []).append(record)
    with Ledger.open(ledger) as led:
        counts = {
            table: next(iter(led.rows(f"SELECT count(*) FROM {table}")))[0]
            for table in ("quanta", "datasets", "events")
        }
    assert len(by_kind["quantum"]) == counts["quanta"] == 2
    assert len(by_kind["dataset"]) == counts["datasets"]
    assert len(by_kind["event"]) == counts["events"]
    seqs = [e["seq"] for e in by_kind["event"]]
    assert seqs == sorted(seqs)
    kinds = [r["record"] for r in records[1:]]
    assert kinds == sorted(kinds, key=["quantum", "dataset", "event"].index)


def test_jsonl_events_reverify_without_the_ledger(
    shared: tuple[Path, list[QuantumFixture]],
) -> None:
    """Each exported event's hash and each quantum's definition digest recompute from the lines."""
    ledger, _ = shared
    records = jsonl(ledger)
    events = [r for r in records if r["record"] == "event"]
    tips: dict[str, str | None] = {}
    for e in events:
        assert e["prev_hash"] == tips.get(e["quantum_id"])
        fields = [e[c] for c in ("quantum_id", "quantum_seq", "call_id", "attempt", "kind",
                                  "dataset_id", "outcome", "error_type", "error_message",
                                  "detail", "recorded_at", "prev_hash")]  # fmt: skip
        assert chain_hash(*fields) == e["hash"]
        tips[e["quantum_id"]] = e["hash"]
    for quantum in (r for r in records if r["record"] == "quantum"):
        qid = quantum["quantum_id"]
        rows = [r for r in records if r["record"] == "dataset" and r["quantum_id"] == qid]
        digest = definition_digest(
            [quantum[c] for c in quanta_columns()],
            ([r[c] for c in dataset_columns()] for r in rows),
        )
        started = next(e for e in events if e["quantum_id"] == qid and e["quantum_seq"] == 1)
        assert json.loads(started["detail"])["definition"] == digest


# --- W3C PROV --------------------------------------------------------------------------------


def records(document: ProvDocument, kind: type[Any]) -> list[Any]:
    """The document's records of one PROV type."""
    return list(document.get_records(kind))


def prov_document(ledger: Path) -> tuple[dict[str, Any], ProvDocument]:
    """The export as a dict, and as parsed (validated) by the prov package."""
    with Ledger.open(ledger) as led:
        exported = export_prov(led)
    text = json.dumps(exported)
    document = ProvDocument.deserialize(content=text, format="json")
    return exported, document


def test_prov_json_round_trips_through_the_prov_package(
    shared: tuple[Path, list[QuantumFixture]],
) -> None:
    """The prov package reads the export, writes it back, and reads back the same document."""
    ledger, _ = shared
    _, document = prov_document(ledger)
    again = ProvDocument.deserialize(content=document.serialize(format="json"), format="json")
    assert again == document
    assert document.get_provn()  # PROV-N rendering works too
    assert len(records(document, ProvActivity)) == 2


def test_prov_used_and_generated_are_the_actual_inputs_and_outputs(
    shared: tuple[Path, list[QuantumFixture]],
) -> None:
    """used = each quantum's actual inputs, wasGeneratedBy = its actual outputs, as replay says."""
    ledger, _ = shared
    _, document = prov_document(ledger)
    used: dict[str, set[str]] = {}
    for record in records(document, ProvUsage):
        args = dict(record.formal_attributes)
        activity = str(args[next(k for k in args if str(k) == "prov:activity")])
        entity = str(args[next(k for k in args if str(k) == "prov:entity")])
        used.setdefault(activity.split(":", 1)[1], set()).add(entity.split(":", 1)[1])
    generated: dict[str, set[str]] = {}
    for record in records(document, ProvGeneration):
        args = dict(record.formal_attributes)
        activity = str(args[next(k for k in args if str(k) == "prov:activity")])
        entity = str(args[next(k for k in args if str(k) == "prov:entity")])
        generated.setdefault(activity.split(":", 1)[1], set()).add(entity.split(":", 1)[1])
    with Ledger.open(ledger) as led:
        for qid in led.quantum_ids():
            provenance = led.replay(qid)
            assert used.get(str(qid), set()) == {str(i) for i in provenance.actual_inputs}
            assert generated.get(str(qid), set()) == {str(i) for i in provenance.actual_outputs}
    entities = {str(r.identifier).split(":", 1)[1] for r in records(document, ProvEntity)}
    assert entities == set().union(*used.values(), *generated.values())


def test_prov_activities_carry_times_status_and_the_executor(
    shared: tuple[Path, list[QuantumFixture]],
) -> None:
    """Quanta have start/end times and status; the executor is an associated SoftwareAgent."""
    ledger, _ = shared
    exported, document = prov_document(ledger)
    with Ledger.open(ledger) as led:
        status = {str(row["quantum_id"]): row for row in led.status()}
    for activity in records(document, ProvActivity):
        qid = str(activity.identifier).split(":", 1)[1]
        assert activity.get_startTime() is not None
        assert activity.get_endTime() is not None
        attributes = exported["activity"][f"quantum:{qid}"]
        assert attributes["qledger:status"] == status[qid]["status"]
        assert attributes["prov:startTime"] == status[qid]["started_at"]
    failed = [a for a in exported["activity"].values() if a["qledger:status"] == "failed"]
    assert failed[0]["qledger:error_type"] == "RuntimeError"
    (agent,) = records(document, ProvAgent)
    attributes = {str(k): v for k, v in agent.attributes}
    assert str(attributes["prov:type"]) == "prov:SoftwareAgent"
    for key in ("host", "pid", "user", "python_version", "library_version"):
        assert f"qledger:{key}" in attributes, key
    assert len(records(document, ProvAssociation)) == 2


def test_prov_output_entities_name_their_artifacts(
    shared: tuple[Path, list[QuantumFixture]],
) -> None:
    """A generated dataset's entity carries its type, data ID and the artifact's path and sha256."""
    ledger, fixtures = shared
    exported, _ = prov_document(ledger)
    output = fixtures[0].outputs[0]
    entity = exported["entity"][f"dataset:{output.id}"]
    assert entity["qledger:dataset_type"] == output.dataset_type.name
    assert json.loads(entity["qledger:data_id"]) == dict(output.data_id)
    assert len(entity["qledger:checksum"]) == 64
    assert (fixtures[0].root / entity["qledger:path"]).is_file()


def test_prov_of_a_retried_quantum_counts_its_attempts(tmp_path: Path) -> None:
    """A resumed quantum is one activity with attempts = 2 and both attempts' outputs."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    ledger = tmp_path / "q.ledger"
    run_quantum(fixture, ledger, fail=True)
    with QuantumBackedButler.resume(fixture.root, ledger, skip_existing=True) as butler:
        butler.get(fixture.inputs[0])
        butler.put({"flux": 1.5}, fixture.outputs[0])
        butler.put({"flux": 2.5}, fixture.outputs[1])
    exported, document = prov_document(ledger)
    (activity,) = exported["activity"].values()
    assert activity["qledger:attempts"] == 2
    assert activity["qledger:status"] == "succeeded"
    assert len(records(document, ProvGeneration)) == 2


def test_the_library_writes_prov_without_importing_prov(tmp_path: Path) -> None:
    """export_prov is plain JSON: the prov package is only a test dependency."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    run_quantum(fixture, tmp_path / "q.ledger")
    code = (
        "import sys, json; from ledger import Ledger; from ledger.export import export_prov; "
        "led = Ledger.open(sys.argv[1]); json.dumps(export_prov(led)); "
        "print(any(m == 'prov' or m.startswith('prov.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "q.ledger")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"
