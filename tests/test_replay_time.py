"""Replay "until a time" on a ledger whose clock went backwards: always a state that existed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from ledger import Ledger, QuantumBackedButler, QuantumProvenanceData
from ledger.cli import main
from ledger.store.log import EventLog, PendingCall
from ledger.testing import QuantumFixture, make_quantum


@dataclass
class Skewed:
    """A ledger recorded while the clock jumped forward an hour and then came back."""

    fixture: QuantumFixture
    path: Path
    started: datetime
    #: the time stamp of the second get, an hour ahead of the events around it
    ahead: datetime


def _skewed(tmp_path: Path) -> Skewed:
    """Start, get input 0, get input 1 (clock an hour ahead), put output 0 (clock back)."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    path = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    butler.get(fixture.inputs[0])
    started = datetime.now(UTC)
    ahead = started + timedelta(hours=1)
    # The second read happened while the host's clock was an hour ahead.
    with EventLog(path) as log:
        entry = (str(fixture.inputs[1].id), "ok", None, None, None)
        stamp = ahead.isoformat(timespec="microseconds")
        log.append(PendingCall(str(butler.quantum_id), 1, "get", [entry], recorded_at=stamp))
    butler.put({"flux": 1.0}, fixture.outputs[0])  # the clock is back: stamped before `ahead`
    butler.finish()
    return Skewed(fixture, path, started, ahead)


def test_replay_until_a_time_is_a_prefix_in_seq_order(tmp_path: Path) -> None:
    """A time between the skewed stamps gives the state before the first later event."""
    skewed = _skewed(tmp_path)
    first, second = skewed.fixture.inputs
    (output,) = skewed.fixture.outputs
    with Ledger.open(skewed.path) as led:
        assert led.verify().ok
        kinds = [
            (e.kind.value, e.recorded_at > skewed.ahead - timedelta(minutes=30))
            for e in led.events()
        ]
        halfway = led.replay(until=skewed.ahead - timedelta(minutes=30))
        at_ahead = led.replay(until=skewed.ahead)
    # the put is stamped before the halfway time, but comes after the get stamped later
    assert kinds == [
        ("quantum_started", False),
        ("get", False),
        ("get", True),
        ("put", False),
        ("quantum_succeeded", False),
    ]
    assert halfway.actual_inputs == {first.id}
    assert halfway.actual_outputs == set()  # never an output without the input read before it
    assert at_ahead.actual_inputs == {first.id, second.id}
    assert at_ahead.actual_outputs == {output.id}


def test_events_until_a_time_follow_the_same_rule(tmp_path: Path) -> None:
    """Ledger.events(until=TIME) lists exactly the events replay folds for that time."""
    skewed = _skewed(tmp_path)
    halfway = skewed.ahead - timedelta(minutes=30)
    with Ledger.open(skewed.path) as led:
        one = [e.kind.value for e in led.events(led.quantum_ids()[0], until=halfway)]
        every = [e.kind.value for e in led.events(until=halfway)]
    assert one == every == ["quantum_started", "get"]


def test_cli_replay_until_a_time_uses_the_same_rule(tmp_path: Path) -> None:
    """qledger replay --until TIME prints the same prefix state as Ledger.replay."""
    skewed = _skewed(tmp_path)
    halfway = (skewed.ahead - timedelta(minutes=30)).isoformat()
    result = CliRunner().invoke(main, ["replay", str(skewed.path), "--until", halfway])
    assert result.exit_code == 0, result.output
    printed = QuantumProvenanceData.direct(**json.loads(result.stdout))
    assert printed.actual_outputs == set()
    assert printed.actual_inputs == {skewed.fixture.inputs[0].id}
