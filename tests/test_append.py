"""The append path: writers that share one quantum's chain keep it whole."""

from __future__ import annotations

from pathlib import Path

from ledger import Ledger, QuantumBackedButler
from ledger.store.log import EventLog, PendingCall
from ledger.testing import make_quantum


def test_two_writers_on_one_quantum_keep_one_chain(tmp_path: Path) -> None:
    """Appends to one quantum from two connections interleave into one unbroken chain."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    qid = str(butler.quantum_id)
    other = EventLog(path)
    other_input = str(fixture.inputs[1].id)
    for _ in range(5):
        # Each writer's remembered tip is stale after the other one's append.
        assert butler.stored(fixture.inputs[0])
        other.append(PendingCall(qid, 1, "stored", [(other_input, "ok", None, None, None)]))
    butler.get(fixture.inputs[0])
    other.close()
    butler.finish()
    with Ledger.open(path) as led:
        assert led.verify().ok
        seqs = [event.quantum_seq for event in led.events(qid)]
        provenance = led.replay(qid)
    assert seqs == list(range(1, 14))  # start, 10 stored, get, end
    assert provenance.available_inputs == {ref.id for ref in fixture.inputs}
    assert provenance.actual_inputs == {fixture.inputs[0].id}


def test_a_batch_continues_the_chain_it_wrote(tmp_path: Path) -> None:
    """Consecutive batches of one writer chain onto each other, across flushes."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=path, durability="batch", batch_size=3
    )
    for _ in range(10):
        butler.stored(fixture.inputs[0])
    butler.finish()
    with Ledger.open(path) as led:
        assert led.verify().ok
        assert [e.quantum_seq for e in led.events()] == list(range(1, 13))
