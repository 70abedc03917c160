"""The butler records straight into a PostgreSQL ledger: same events, same replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger import Ledger, QuantumBackedButler
from ledger.testing import make_quantum

pytestmark = pytest.mark.postgres


def test_butler_on_postgres_replays_like_sqlite(tmp_path: Path, postgres_url: str) -> None:
    """The same calls into a SQLite file and a PostgreSQL URL give the same provenance."""
    results = {}
    for name, target in (("sqlite", str(tmp_path / "q.ledger")), ("postgres", postgres_url)):
        fixture = make_quantum(tmp_path / f"repo-{name}", n_inputs=3, n_missing=1, n_outputs=2)
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=target) as b:
            b.stored_many(fixture.predicted_inputs)
            for ref in fixture.inputs:
                b.get(ref)
            with pytest.raises(LookupError):
                b.get(fixture.missing[0])
            b.markInputUnused(fixture.inputs[0])
            b.put({"x": 1}, fixture.outputs[0])
            extracted = b.extract_provenance_data()
        with Ledger.open(target) as led:
            assert led.replay() == extracted
            report = led.verify()
            assert report.ok, report.problems
            (status,) = led.status()
            kinds = [e.kind.value for e in led.events()]
        assert status["status"] == "succeeded"
        results[name] = (extracted, kinds)
    assert results["sqlite"] == results["postgres"]


def test_postgres_view_matches_replay(tmp_path: Path, postgres_url: str) -> None:
    """The provenance view on PostgreSQL gives the sets the replay gives."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_missing=1, n_outputs=2)
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=postgres_url) as b:
        b.stored_many(fixture.predicted_inputs)
        b.get(fixture.inputs[0])
        b.put({"x": 1}, fixture.outputs[0])
        b.put({"x": 2}, fixture.outputs[1])
        b.pruneDatasets([fixture.outputs[1]], unstore=True, purge=True)
        prov = b.extract_provenance_data()
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT dataset_id, available, actual_input, actual_output FROM provenance")
        ).all()
    engine.dispose()
    assert {r[0] for r in rows if r[1]} == {str(i) for i in prov.available_inputs}
    assert {r[0] for r in rows if r[2]} == {str(i) for i in prov.actual_inputs}
    assert {r[0] for r in rows if r[3]} == {str(i) for i in prov.actual_outputs}
