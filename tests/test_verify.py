"""Verify: one snapshot of a ledger being written, heads of other quanta, views and triggers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, QuantumBackedButler
from ledger.recovery import recover
from ledger.store.migrate import HEAD_REVISION
from ledger.testing import make_quantum

WORKERS = Path(__file__).resolve().parent / "workers.py"


def test_verify_of_a_ledger_being_written_reports_no_false_tampering(tmp_path: Path) -> None:
    """Verify and recover read one snapshot: a writer appending meanwhile is no tampering."""
    path = tmp_path / "shared.ledger"
    first = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    with QuantumBackedButler.initialize(first.root, first.quantum, ledger=path) as butler:
        butler.stored(first.inputs[0])
    writer = subprocess.Popen(
        [sys.executable, str(WORKERS), "append", str(path), "300", "1", "w"],
        stdout=subprocess.PIPE,
        text=True,
    )
    false_reports: list[list[str]] = []
    checks = 0
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().startswith("QUANTUM")  # it is writing now
        while writer.poll() is None and checks < 40:
            with Ledger.open(path) as led:
                report = led.verify()
            checks += 1
            if not report.ok:
                false_reports.append(report.problems)
            if checks % 8 == 0:  # recover verifies too, then reads on in the same snapshot
                # the quanta still open are the writer's, run with its own datastore
                recovered = recover(path, tmp_path / "repo-w")
                false_reports += [q.chain_problems for q in recovered.quanta if q.chain_problems]
    finally:
        writer.kill()
        writer.wait()
    assert checks >= 10, "the writer finished before verify ran often enough"
    assert false_reports == []


def _run_one(tmp_path: Path, name: str, visit: int) -> tuple[Path, str]:
    """A finished one-quantum ledger and its quantum id."""
    fixture = make_quantum(tmp_path / f"repo{visit}", visit=visit, n_inputs=1, n_outputs=1)
    path = tmp_path / name
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        butler.stored(fixture.inputs[0])
    return path, str(butler.quantum_id)


def test_a_head_of_another_ledgers_quantum_is_not_called_a_cut_off_tail(tmp_path: Path) -> None:
    """verify --head with another ledger's head says the ledger holds no such quantum."""
    mine, my_qid = _run_one(tmp_path, "a.ledger", 1)
    other, other_qid = _run_one(tmp_path, "b.ledger", 2)
    with Ledger.open(other) as led:
        foreign = led.head()
    with Ledger.open(mine) as led:
        report = led.verify(foreign)
    assert not report.ok
    (problem,) = report.problems
    assert "cut off" not in problem
    assert f"holds no such quantum (it holds {my_qid})" in problem, problem
    assert other_qid in problem


def test_a_head_naming_this_quantum_with_another_quantums_hash_names_that_quantum(
    tmp_path: Path,
) -> None:
    """A head whose hash is another quantum's event names that quantum, not a rewritten chain."""
    path = tmp_path / "shared.ledger"
    qids = []
    for visit in (1, 2):
        fixture = make_quantum(tmp_path / "repo", visit=visit, n_inputs=1, n_outputs=1)
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as b:
            for _ in range(visit):
                b.stored(fixture.inputs[0])
        qids.append(str(b.quantum_id))
    with Ledger.open(path) as led:
        second = led.head(qids[1])
        first = led.head(qids[0])
        crossed = second.model_copy(update={"quantum_id": first.quantum_id})
        report = led.verify(crossed)
    (problem,) = report.problems
    assert f"that head is quantum {qids[1]}'s" in problem, problem
    assert "cut off" not in problem
    assert "rewritten" not in problem


def _failed_quantum_on_postgres(tmp_path: Path, url: str) -> None:
    """Record one quantum that fails into the PostgreSQL ledger at ``url``."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)

    def run() -> None:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=url) as butler:
            butler.get(fixture.inputs[0])
            raise RuntimeError("the task failed")

    with pytest.raises(RuntimeError):
        run()


def _lying_status_view(url: str) -> None:
    """Replace quantum_status on the server with one that calls every quantum succeeded."""
    engine = create_engine(url)
    with engine.begin() as conn:
        sql = conn.execute(text("SELECT pg_get_viewdef('quantum_status'::regclass)")).scalar_one()
        start, end = sql.index("CASE"), sql.index("AS status")
        conn.execute(
            text(
                f"CREATE OR REPLACE VIEW quantum_status AS {sql[:start]} 'succeeded'::text "
                f"{sql[end:]}".rstrip().rstrip(";")
            )
        )
    engine.dispose()


@pytest.mark.postgres
def test_a_replaced_view_on_postgres_is_reported(tmp_path: Path, postgres_url: str) -> None:
    """A quantum_status that calls a failed quantum succeeded fails verify on PostgreSQL."""
    _failed_quantum_on_postgres(tmp_path, postgres_url)
    with Ledger.open(postgres_url) as led:
        assert led.verify().ok
    _lying_status_view(postgres_url)
    with Ledger.open(postgres_url) as led:
        report = led.verify()
        (status,) = led.status()
    assert not report.ok
    assert any("view quantum_status differs" in p for p in report.problems), report.problems
    assert status["status"] == "failed"  # the library never trusts the view


@pytest.mark.postgres
def test_a_view_replaced_by_the_same_definition_passes(tmp_path: Path, postgres_url: str) -> None:
    """Re-creating a view with the shipped text (an upgrade, a restore) is no tampering."""
    _failed_quantum_on_postgres(tmp_path, postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        sql = conn.execute(text("SELECT pg_get_viewdef('provenance'::regclass)")).scalar_one()
        conn.execute(text(f"CREATE OR REPLACE VIEW provenance AS {sql.rstrip().rstrip(';')}"))
        conn.execute(text("DROP VIEW quantum_status"))
    engine.dispose()
    with Ledger.open(postgres_url) as led:
        report = led.verify()
    assert report.problems == [
        f"{led.where}: the view quantum_status that schema revision {HEAD_REVISION} creates is "
        "missing (its rows may not say what the events say; readers compute from the events)"
    ]


@pytest.mark.postgres
def test_verify_without_temp_privilege_compares_rows_and_writes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """A role that may not create temporary views still has a lying view reported; no trace."""
    _failed_quantum_on_postgres(tmp_path, postgres_url)
    _lying_status_view(postgres_url)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    database = make_url(postgres_url).database
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
        before = conn.execute(text("SELECT COUNT(*) FROM pg_class")).scalar_one()
    try:
        reader = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
        as_reader = create_engine(reader)
        with pytest.raises(DBAPIError, match="permission denied"), as_reader.connect() as conn:
            conn.execute(text("CREATE TEMP VIEW probe AS SELECT 1"))
        as_reader.dispose()
        with Ledger.open(reader) as led:
            report = led.verify()
        assert any("view quantum_status differs" in p for p in report.problems), report.problems
        with admin.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM pg_class")).scalar_one() == before
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()
