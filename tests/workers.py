"""Subprocess workers for the crash and concurrency tests (run as scripts, not collected).

``python tests/workers.py crash REPO LEDGER DURABILITY`` runs a long quantum and
prints ``ACK <n> <kind> <dataset_id>`` after each call returns, so the parent
knows exactly which calls were acknowledged before it sends SIGKILL.

``python tests/workers.py append LEDGER N_QUANTA N_CALLS TAG`` records quanta
into a shared ledger as fast as it can.

``python tests/workers.py hold ROOT QUANTUM_JSON LEDGER INTERVAL TIMEOUT`` holds a
quantum open (short leases) with an unrecorded output file, until stdin gets a line.

``python tests/workers.py race ROOT QUANTUM_JSON LEDGER GO MODE`` starts the quantum
(``initialize`` or ``resume``) as soon as the file GO exists and holds it open.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ledger import FileDatastore, LeasePolicy, LedgerError, Quantum, QuantumBackedButler
from ledger.testing import make_quantum


def crash(repo: str, ledger: str, durability: str) -> None:
    """Run calls forever (until killed), acknowledging each on stdout."""
    fixture = make_quantum(Path(repo), n_inputs=5, n_missing=1, n_outputs=400)
    butler = QuantumBackedButler.initialize(
        fixture.root,
        fixture.quantum,
        ledger=ledger,
        durability=durability,  # type: ignore[arg-type]
        batch_size=50,
    )
    print(f"QUANTUM {butler.quantum_id}", flush=True)
    n = 0
    inputs = fixture.predicted_inputs
    for i, out in enumerate(fixture.outputs):
        ref = inputs[i % len(inputs)]
        found = butler.stored(ref)
        n += 1
        print(f"ACK {n} stored {ref.id} {'ok' if found else 'missing'}", flush=True)
        try:
            butler.get(ref)
            outcome = "ok"
        except LookupError:
            outcome = "missing"
        n += 1
        print(f"ACK {n} get {ref.id} {outcome}", flush=True)
        butler.put({"i": i}, out)
        n += 1
        print(f"ACK {n} put {out.id} ok", flush=True)
    butler.finish()
    print("DONE", flush=True)


def append(ledger: str, n_quanta: int, n_calls: int, tag: str) -> None:
    """Record ``n_quanta`` quanta of ``n_calls`` stored calls each into a shared ledger."""
    base = Path(ledger).parent / f"repo-{tag}"
    for q in range(n_quanta):
        fixture = make_quantum(base, task_label=f"t{tag}", visit=q, n_inputs=2, n_outputs=1)
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
            for i in range(n_calls):
                b.stored(fixture.inputs[i % 2])
        print(f"QUANTUM {b.quantum_id}", flush=True)


def hold(root: str, quantum_json: str, ledger: str, interval: str, timeout: str) -> None:
    """Start a quantum with short leases, write one output behind the butler's back, hold.

    The second output's file exists but its put is not recorded yet (as between a
    write and its record); the quantum is held open until stdin gets a line, then
    finished.
    """
    quantum = Quantum.model_validate_json(Path(quantum_json).read_text())
    policy = LeasePolicy(interval=float(interval), timeout=float(timeout))
    butler = QuantumBackedButler.initialize(root, quantum, ledger=ledger, lease=policy)
    outputs = list(quantum.iter_predicted_outputs())
    butler.put({"n": 0}, outputs[0])
    FileDatastore(root).put({"n": 1}, outputs[1])
    print("READY", flush=True)
    sys.stdin.readline()
    butler.finish()
    print("DONE", flush=True)


def race(root: str, quantum_json: str, ledger: str, go: str, mode: str) -> None:
    """Start (``initialize`` or ``resume``) a quantum as soon as ``go`` exists; hold it open."""
    quantum = Quantum.model_validate_json(Path(quantum_json).read_text())
    print("READY", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        if mode == "initialize":
            butler = QuantumBackedButler.initialize(root, quantum, ledger=ledger)
        else:
            butler = QuantumBackedButler.resume(root, ledger)
    except LedgerError as e:
        print(f"REFUSED {type(e).__name__} {e}", flush=True)
        return
    print(f"STARTED {butler.attempt}", flush=True)
    sys.stdin.readline()
    butler.finish()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "crash":
        crash(args[0], args[1], args[2])
    elif command == "append":
        append(args[0], int(args[1]), int(args[2]), args[3])
    elif command == "hold":
        hold(*args)
    elif command == "race":
        race(*args)
    else:
        raise SystemExit(f"unknown worker command {command!r}")
