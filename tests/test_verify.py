"""Verify: one snapshot of a ledger being written, heads of other quanta, views and triggers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ledger import Ledger, QuantumBackedButler
from ledger.recovery import recover
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
