"""The §3 semantics, checked against a small reference model through all three doors.

Random sequences of every butler call run against a real butler, a real
`FileDatastore` and a real ledger file, and against `Model` — a direct
transcription of the SPEC §3 table as mutable sets, the way the original
butler kept them. After the run, `extract_provenance_data()`, a fresh
`Ledger.open(...).replay()` and the SQL view ``provenance`` must all equal the
model, and ``replay(until=...)`` must equal the model as it was at that point.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ledger import (
    DatasetExistsError,
    DatasetRef,
    Ledger,
    QuantumBackedButler,
    QuantumProvenanceData,
    UnpredictedOutputError,
)
from ledger.testing import make_quantum, make_ref


@dataclass
class Model:
    """SPEC §3 as the original butler kept it: sets mutated by each call."""

    predicted_inputs: set[uuid.UUID]
    predicted_outputs: set[uuid.UUID]
    #: ids whose artifact is present and known to the datastore.
    present: set[uuid.UUID]
    available: set[uuid.UUID] = field(default_factory=set)
    unavailable: set[uuid.UUID] = field(default_factory=set)
    actual: set[uuid.UUID] = field(default_factory=set)
    actual_outputs: set[uuid.UUID] = field(default_factory=set)
    #: outputs written by put whose record was not unstored since.
    records: set[uuid.UUID] = field(default_factory=set)

    def get(self, ref: DatasetRef) -> bool:
        if ref.id not in self.present:
            self.unavailable.add(ref.id)
            return False
        if ref.id in self.predicted_inputs:
            self.actual.add(ref.id)
            self.available.add(ref.id)
        return True

    def get_deferred(self, ref: DatasetRef) -> None:
        if ref.id in self.predicted_inputs:
            self.actual.add(ref.id)

    def stored(self, ref: DatasetRef) -> bool:
        found = ref.id in self.present
        if ref.id in self.predicted_inputs:
            (self.available if found else self.unavailable).add(ref.id)
        return found

    def mark_unused(self, ref: DatasetRef) -> None:
        self.actual.discard(ref.id)

    def put(self, ref: DatasetRef) -> str:
        if ref.id not in self.predicted_outputs:
            return "unpredicted"
        if ref.id in self.present:
            return "exists"
        self.present.add(ref.id)
        self.actual_outputs.add(ref.id)
        self.records.add(ref.id)
        return "ok"

    def prune(
        self, refs: list[DatasetRef], disassociate: bool, unstore: bool, purge: bool
    ) -> type[Exception] | None:
        if purge and (not disassociate or not unstore):
            return TypeError
        if disassociate and not purge:
            return TypeError
        if any(r.isComponent() for r in refs):
            return ValueError
        for ref in refs:
            if unstore:
                self.present.discard(ref.id)
                self.records.discard(ref.id)
            if purge:
                self.actual_outputs.discard(ref.id)
        return None

    def provenance(self) -> tuple[set[uuid.UUID], ...]:
        return (
            set(self.predicted_inputs),
            set(self.available),
            self.actual - self.unavailable,
            set(self.predicted_outputs),
            set(self.actual_outputs),
            self.records & self.actual_outputs,
        )


def _sets(p: QuantumProvenanceData) -> tuple[set[uuid.UUID], ...]:
    records = p.datastore_records.get("files")
    ids = set(records.dataset_ids) if records is not None else set()
    return (
        p.predicted_inputs,
        p.available_inputs,
        p.actual_inputs,
        p.predicted_outputs,
        p.actual_outputs,
        ids,
    )


def view_sets(path: Path, quantum_id: uuid.UUID) -> dict[str, set[uuid.UUID]]:
    """The provenance view's columns as sets of ids."""
    columns = (
        "predicted_input",
        "available",
        "unavailable",
        "actual_input",
        "predicted_output",
        "actual_output",
    )
    out: dict[str, set[uuid.UUID]] = {c: set() for c in columns}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in conn.execute(
            f"SELECT dataset_id, {', '.join(columns)} FROM provenance WHERE quantum_id = ?",
            (str(quantum_id),),
        ):
            for name, value in zip(columns, row[1:], strict=True):
                if value:
                    out[name].add(uuid.UUID(row[0]))
    finally:
        conn.close()
    return out


FLAGS = st.tuples(st.booleans(), st.booleans(), st.booleans())


class ButlerMachine(RuleBasedStateMachine):
    """Random call sequences against the butler and the reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qledger-sem-"))
        fixture = make_quantum(
            self.tmp / "repo", n_inputs=3, n_missing=1, n_outputs=3, n_init_inputs=1
        )
        self.fixture = fixture
        self.ledger_path = self.tmp / "q.ledger"
        self.butler = QuantumBackedButler.initialize(
            fixture.root, fixture.quantum, ledger=self.ledger_path
        )
        self.unpredicted = [make_ref("raw", 99), make_ref("calexp", 99)]
        self.inputs = fixture.predicted_inputs
        self.outputs = fixture.outputs
        self.all_refs = [*self.inputs, *self.outputs, *self.unpredicted]
        self.model = Model(
            predicted_inputs={r.id for r in self.inputs},
            predicted_outputs={r.id for r in self.outputs},
            present={r.id for r in [*fixture.inputs, *fixture.init_inputs]},
        )
        #: (quantum_seq after the step, model sets at that point)
        self.snapshots: list[tuple[int, tuple[set[uuid.UUID], ...]]] = []

    def _snapshot(self) -> None:
        seq = self._tip()
        self.snapshots.append((seq, tuple(set(s) for s in self.model.provenance())))

    def _tip(self) -> int:
        rows = list(
            self.butler._log.query(
                "SELECT MAX(quantum_seq) FROM events WHERE quantum_id = ?",
                [str(self.butler.quantum_id)],
            )
        )
        return int(rows[0][0])

    refs = st.integers(min_value=0, max_value=20)

    def _pick(self, i: int, pool: list[DatasetRef] | None = None) -> DatasetRef:
        pool = pool or self.all_refs
        return pool[i % len(pool)]

    @rule(i=refs, component=st.booleans())
    def get(self, i: int, component: bool) -> None:
        ref = self._pick(i)
        if component:
            ref = ref.makeComponentRef("visit")
        expected = self.model.get(ref)
        try:
            value = self.butler.get(ref)
        except (LookupError, OSError):
            assert not expected
        else:
            assert expected
            if component:
                assert value == ref.data_id["visit"]
        self._snapshot()

    @rule(i=refs, load=st.booleans())
    def get_deferred(self, i: int, load: bool) -> None:
        ref = self._pick(i)
        self.model.get_deferred(ref)
        handle = self.butler.getDeferred(ref)
        if load:
            expected = self.model.get(ref)
            try:
                handle.get()
            except (LookupError, OSError):
                assert not expected
            else:
                assert expected
        self._snapshot()

    @rule(i=refs)
    def stored(self, i: int) -> None:
        ref = self._pick(i)
        assert self.butler.stored(ref) == self.model.stored(ref)
        self._snapshot()

    @rule(picks=st.lists(refs, max_size=5, unique=True))
    def stored_many(self, picks: list[int]) -> None:
        chosen = list({self._pick(i) for i in picks})
        result = self.butler.stored_many(chosen)
        assert result == {ref: self.model.stored(ref) for ref in chosen}
        self._snapshot()

    @rule(i=refs)
    def mark_unused(self, i: int) -> None:
        ref = self._pick(i)
        self.model.mark_unused(ref)
        self.butler.markInputUnused(ref)
        self._snapshot()

    @rule(i=refs)
    def put(self, i: int) -> None:
        ref = self._pick(i, [*self.outputs, *self.unpredicted, *self.inputs[:1]])
        first = self.fixture.datastore.artifact_path(ref)
        before = first.read_bytes() if first.exists() else None
        expected = self.model.put(ref)
        try:
            self.butler.put({"visit": ref.data_id["visit"], "written": str(ref.id)}, ref)
        except UnpredictedOutputError as e:
            assert expected == "unpredicted"
            assert str(e) == "Cannot put dataset that was not predicted as an output."
        except DatasetExistsError:
            assert expected == "exists"
            assert before is not None
            assert first.read_bytes() == before, "the first artifact must stay intact"
        else:
            assert expected == "ok"
        self._snapshot()

    @rule(
        picks=st.lists(refs, min_size=1, max_size=3, unique=True),
        flags=FLAGS,
        component=st.booleans(),
    )
    def prune(self, picks: list[int], flags: tuple[bool, bool, bool], component: bool) -> None:
        disassociate, unstore, purge = flags
        chosen = list({self._pick(i) for i in picks})
        if component:
            chosen[0] = chosen[0].makeComponentRef("visit")
        expected = self.model.prune(chosen, disassociate, unstore, purge)
        try:
            self.butler.pruneDatasets(
                chosen, disassociate=disassociate, unstore=unstore, purge=purge, tags=()
            )
        except (TypeError, ValueError) as e:
            assert expected is type(e)
        else:
            assert expected is None
        self._snapshot()

    @precondition(lambda self: self.fixture.inputs)
    @rule(i=refs)
    def artifact_disappears(self, i: int) -> None:
        """An input's file vanishes mid-quantum (someone else deleted it)."""
        ref = self._pick(i, self.fixture.inputs)
        path = self.fixture.datastore.artifact_path(ref)
        if path.exists():
            os.remove(path)
        self.model.present.discard(ref.id)

    @invariant()
    def butler_matches_model(self) -> None:
        assert _sets(self.butler.extract_provenance_data()) == self.model.provenance()

    def teardown(self) -> None:
        try:
            self.butler.finish()
            qid = self.butler.quantum_id
            with Ledger.open(self.ledger_path) as led:
                assert _sets(led.replay()) == self.model.provenance()
                assert _sets(led.replay(qid)) == self.model.provenance()
                for seq, expected in self.snapshots[:: max(1, len(self.snapshots) // 5)]:
                    assert _sets(led.replay(qid, until=seq)) == expected
                assert led.verify().ok
            view = view_sets(self.ledger_path, qid)
            model = self.model
            assert view["predicted_input"] == model.predicted_inputs
            assert view["available"] == model.available
            assert view["unavailable"] == model.unavailable
            assert view["actual_input"] == model.actual - model.unavailable
            assert view["predicted_output"] == model.predicted_outputs
            assert view["actual_output"] == model.actual_outputs
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


ButlerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestButlerSemantics = ButlerMachine.TestCase


def test_model_agrees_on_a_hand_written_sequence(tmp_path: Path) -> None:
    """A fixed sequence covering every call gives the provenance the SPEC table predicts."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_missing=1, n_outputs=2)
    a, b = fixture.inputs
    (gone,) = fixture.missing
    out1, out2 = fixture.outputs
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        assert butler.stored_many([a, b, gone]) == {a: True, b: True, gone: False}
        butler.get(a)
        butler.getDeferred(b)
        butler.markInputUnused(b)
        with pytest.raises(LookupError):
            butler.get(gone)
        butler.put({"x": 1}, out1)
        butler.put({"x": 2}, out2)
        butler.pruneDatasets([out2], disassociate=False, unstore=True)
        prov = butler.extract_provenance_data()
    assert prov.available_inputs == {a.id, b.id}
    assert prov.actual_inputs == {a.id}
    assert prov.actual_outputs == {out1.id, out2.id}
    assert set(prov.datastore_records["files"].dataset_ids) == {out1.id}
    with Ledger.open(path) as led:
        assert led.replay() == prov
