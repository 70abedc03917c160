"""Status a person can trust: attempts that exist, and datasets with two producers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, QuantumBackedButler, UnknownAttemptError
from ledger.cli import main
from ledger.testing import QuantumFixture, make_quantum


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def quantum_id(ledger: Path) -> str:
    """The id of the ledger's only quantum."""
    with Ledger.open(ledger) as led:
        return str(led.quantum_ids()[0])


def two_attempts(tmp_path: Path) -> tuple[QuantumFixture, Path]:
    """A quantum that failed once and succeeded on its second attempt."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    ledger = tmp_path / "q.ledger"
    with pytest.raises(RuntimeError):
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
            b.get(fixture.inputs[0])
            b.put({"x": 1}, fixture.outputs[0])
            raise RuntimeError("first attempt fails")
    with QuantumBackedButler.resume(fixture.root, ledger, skip_existing=True) as b:
        b.get(fixture.inputs[0])
        b.put({"x": 1}, fixture.outputs[0])
        b.put({"x": 2}, fixture.outputs[1])
    return fixture, ledger


# --- attempts -----------------------------------------------------------------------


def test_replay_of_an_attempt_never_made_is_refused_by_the_library(tmp_path: Path) -> None:
    """Ledger.replay(attempt=5) of a 2-attempt quantum raises UnknownAttemptError naming 1..2."""
    fixture, ledger = two_attempts(tmp_path)
    qid = quantum_id(ledger)
    with Ledger.open(ledger) as led:
        assert led.replay(attempt=2).actual_outputs == {r.id for r in fixture.outputs}
        for bad in (5, 3, 0):
            with pytest.raises(UnknownAttemptError) as info:
                led.replay(attempt=bad)
            assert f"quantum {qid} has attempts 1..2" in str(info.value)
            assert f"no attempt {bad}" in str(info.value)
        with pytest.raises(UnknownAttemptError, match="attempts 1..2 in its quanta"):
            list(led.events(attempt=7))
        with pytest.raises(UnknownAttemptError, match="has attempts 1..2"):
            list(led.events(qid, attempt=3))


def test_replay_attempt_out_of_range_is_one_line_exit_2(tmp_path: Path) -> None:
    """qledger replay --attempt 5 of a 2-attempt quantum: one error line, exit 2, no JSON."""
    fixture, ledger = two_attempts(tmp_path)
    result = run("replay", ledger, "--attempt", "5")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("qledger: error: ")
    assert f"quantum {quantum_id(ledger)} has attempts 1..2" in line
    assert run("events", ledger, "--attempt", "3").exit_code == 2
    replayed = json.loads(run("replay", ledger, "--attempt", "1").stdout)
    assert replayed["actual_outputs"] == [str(fixture.outputs[0].id)]
