"""One recording layer: what each call records is decided in `ledger.recorder` alone.

Both butlers (ours over `FileDatastore`, `ledger.lsst.RecordingButler` over an
upstream butler) hand the recorder the operation; neither builds events itself.
A closed butler refuses every call before it reaches the datastore.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ledger import ButlerClosedError, Ledger, QuantumBackedButler
from ledger.testing import make_quantum

PACKAGE = Path(__file__).resolve().parent.parent / "ledger"


def _butler_modules() -> list[Path]:
    """The butlers: ours and every module of the upstream wrapper."""
    wrapper = PACKAGE / "lsst"
    found = [PACKAGE / "butler.py"]
    found += sorted(wrapper.glob("*.py")) if wrapper.is_dir() else [PACKAGE / "lsst.py"]
    return found


def test_butlers_decide_no_outcome_and_append_no_event() -> None:
    """No butler module names an outcome, builds a pending call or appends to the log."""
    problems = []
    for path in _butler_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id in ("Outcome", "PendingCall", "Entry"):
                problems.append(f"{path.name}:{node.lineno} uses {node.id}")
            if isinstance(node, ast.Attribute) and node.attr == "append":
                owner = node.value
                if isinstance(owner, ast.Attribute) and owner.attr in ("_log", "log"):
                    problems.append(f"{path.name}:{node.lineno} appends to the log itself")
    assert not problems, "\n".join(problems)


def test_calls_after_close_are_refused_before_the_datastore(tmp_path: Path) -> None:
    """After close, put/get/stored raise ButlerClosedError; no artifact is written, no event."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    butler.close()
    (output,) = fixture.outputs
    with pytest.raises(ButlerClosedError, match="after close"):
        butler.put({"a": 1}, output)
    assert not butler.datastore.exists(output)
    assert not butler.datastore.artifact_path(output).exists()
    for call in (butler.get, butler.stored, butler.markInputUnused):
        with pytest.raises(ButlerClosedError):
            call(fixture.inputs[0])
    with pytest.raises(ButlerClosedError):
        butler.stored_many(fixture.inputs)
    with pytest.raises(ButlerClosedError):
        butler.pruneDatasets([output], disassociate=True, unstore=True, purge=True)
    with Ledger.open(path) as led:
        assert [e.kind for e in led.events()] == ["quantum_started"]
        assert led.verify().ok


def test_finish_after_close_without_an_end_is_a_clear_error(tmp_path: Path) -> None:
    """finish() after close() without an end raises ButlerClosedError, not a corrupt-ledger one."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    butler.close()
    with pytest.raises(ButlerClosedError, match="interrupted"):
        butler.finish()
    butler.close()  # closing again is harmless
    with Ledger.open(path) as led:
        assert led.status()[0]["status"] == "interrupted"


def test_finish_then_close_records_the_end_once(tmp_path: Path) -> None:
    """finish() then close() and finish() again: one quantum_succeeded, nothing raised."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    butler.finish()
    butler.close()
    butler.finish()
    with Ledger.open(path) as led:
        assert [e.kind for e in led.events()] == ["quantum_started", "quantum_succeeded"]
