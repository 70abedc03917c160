"""Crash and concurrency tests: real subprocesses, real SIGKILL, one shared ledger file."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger import Ledger, LedgerBusyError, QuantumBackedButler
from ledger.testing import make_quantum

WORKER = str(Path(__file__).with_name("workers.py"))
KILLS = 20


def _run_and_kill(tmp: Path, durability: str, delay: float) -> tuple[str, list[str]]:
    """Start the crash worker, SIGKILL it after ``delay`` seconds; return its quantum and ACKs."""
    proc = subprocess.Popen(
        [sys.executable, WORKER, "crash", str(tmp / "repo"), str(tmp / "q.ledger"), durability],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    # Wait for the quantum to start, then let it run for a random while.
    deadline = time.monotonic() + 30
    while not any(line.startswith("QUANTUM") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(5)
    qid = next(line.split()[1] for line in lines if line.startswith("QUANTUM"))
    return qid, [line for line in lines if line.startswith("ACK")]


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_sigkill_never_loses_an_acknowledged_call(tmp_path: Path, durability: str) -> None:
    """After SIGKILL at random moments the ledger opens, verifies, and holds every ACKed call."""
    rng = random.Random(1234)
    acked_runs = 0
    for attempt in range(KILLS):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        qid, acks = _run_and_kill(run, durability, rng.uniform(0.0, 0.4))
        with Ledger.open(run / "q.ledger") as led:
            report = led.verify()
            assert report.ok, report.problems
            recorded = [
                (e.kind.value, str(e.dataset_id), e.outcome.value)
                for e in led.events(qid)
                if e.dataset_id is not None
            ]
        acknowledged = [tuple(line.split()[2:5]) for line in acks]
        acked_runs += bool(acknowledged)
        assert recorded[: len(acknowledged)] == acknowledged
        # The replay holds every acknowledged put as an actual output.
        with Ledger.open(run / "q.ledger") as led:
            outputs = led.replay(qid).actual_outputs
        assert {a[1] for a in acknowledged if a[0] == "put"} <= {str(o) for o in outputs}
    assert acked_runs >= KILLS // 2, "most kills must land in the middle of the quantum"


def test_batch_mode_loses_at_most_the_unflushed_tail(tmp_path: Path) -> None:
    """In batch mode a SIGKILL loses only calls after the last flush; the chain still verifies."""
    qid, acks = _run_and_kill(tmp_path, "batch", 0.5)
    with Ledger.open(tmp_path / "q.ledger") as led:
        assert led.verify().ok
        recorded = [e for e in led.events(qid) if e.dataset_id is not None]
    assert recorded, "at least one batch was flushed before the kill"
    assert len(acks) - len(recorded) < 50 + 3  # batch_size=50 events, plus one call in flight
    assert [(e.kind.value, str(e.dataset_id)) for e in recorded] == [
        tuple(line.split()[2:4]) for line in acks[: len(recorded)]
    ]


def test_four_processes_share_one_ledger(tmp_path: Path) -> None:
    """Four writers on one file: nothing lost, no 'database is locked', every chain verifies."""
    ledger = tmp_path / "shared.ledger"
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "append", str(ledger), "5", "40", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    quanta = [line.split()[1] for stdout, _ in outputs for line in stdout.splitlines()]
    assert len(quanta) == 20
    with Ledger.open(ledger) as led:
        report = led.verify()
        assert report.ok, report.problems
        assert report.quanta == 20
        for qid in quanta:
            events = list(led.events(qid))
            # started + 40 stored + succeeded, numbered 1..42 without gaps
            assert [e.quantum_seq for e in events] == list(range(1, 43))
            assert led.head(qid).terminal == "quantum_succeeded"


def test_a_second_writer_is_refused_while_a_batch_writer_holds_the_ledger(tmp_path: Path) -> None:
    """A batch-mode writer owns the ledger; a second writer gets LedgerBusyError, nothing lost."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    first = QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=path, durability="batch"
    )
    first.stored(fixture.inputs[0])
    with pytest.raises(LedgerBusyError, match="batch"):
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    first.finish()
    with Ledger.open(path) as led:
        assert led.verify().ok
        assert [e.kind.value for e in led.events()] == [
            "quantum_started",
            "stored",
            "quantum_succeeded",
        ]
