"""A small campaign for the watch and report tests: failures, a retry, hostile text.

Not a test module: imported by tests/test_campaign_*.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ledger import Ledger, QuantumBackedButler
from ledger.testing import PipelineRun, make_quantum, run_pipeline

#: calibrate v2 d1 fails and is retried (attempt 2 succeeds); calibrate v3 d0 fails for good.
RETRIED = ("calibrate", 2, 1)
FAILED = ("calibrate", 3, 0)

#: Untrusted text in a ledger: if a report ever ran it, it would mark the page.
SCRIPT_LABEL = '<script>document.body.setAttribute("data-pwned", "label")</script>evil'
IMG_MESSAGE = "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\"> boom"


@dataclass
class Campaign:
    """Where the campaign is: its datastore, its ledger folder, and what ran."""

    root: Path
    ledgers: Path
    run: PipelineRun

    @property
    def sources(self) -> list[str]:
        """Every ledger file, sorted."""
        return sorted(str(p) for p in self.ledgers.glob("*.ledger"))


def make_campaign(where: Path, *, hostile: bool = True) -> Campaign:
    """Run the pipeline with two failures, retry one, and add an interrupted hostile quantum."""
    root, ledgers = where / "repo", where / "ledgers"
    run = run_pipeline(root, ledgers, fail={RETRIED, FAILED})
    task, visit, detector = RETRIED
    path = ledgers / f"{task}-v{visit}-d{detector}.ledger"
    with QuantumBackedButler.resume(root, path, skip_existing=True) as butler:
        calexp = next(r for r in run.refs["calexp"] if dict(r.data_id)["visit"] == visit
                      and dict(r.data_id)["detector"] == detector)  # fmt: skip
        butler.put({"pixels": [1, 2, 3], "zero_point": 27.0}, calexp)
    if hostile:
        # A quantum whose label is a script, killed mid-way (interrupted) ...
        fixture = make_quantum(where / "hostile", task_label=SCRIPT_LABEL, visit=9)
        butler = QuantumBackedButler.initialize(
            fixture.root, fixture.quantum, ledger=ledgers / "hostile-interrupted.ledger"
        )
        butler.get(fixture.inputs[0])
        butler.close()  # no end recorded: interrupted
        # ... and one that fails with markup in its message.
        fixture = make_quantum(where / "hostile", task_label=SCRIPT_LABEL, visit=8)
        try:
            with QuantumBackedButler.initialize(
                fixture.root, fixture.quantum, ledger=ledgers / "hostile-failed.ledger"
            ) as butler:
                butler.get(fixture.inputs[0])
                raise ValueError(IMG_MESSAGE)
        except ValueError:
            pass
    return Campaign(root=root, ledgers=ledgers, run=run)


def add_raw_rows(
    target: Path, quanta: list[tuple[object, ...]], events: list[tuple[object, ...]]
) -> None:
    """Append rows to a SQLite ledger behind the library's back (an edited, hostile ledger)."""
    with sqlite3.connect(target) as conn:
        conn.executemany(f"INSERT INTO quanta VALUES ({', '.join('?' * 11)})", quanta)
        conn.executemany(
            "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
            "outcome, error_type, error_message, detail, recorded_at, prev_hash, hash) "
            f"VALUES ({', '.join('?' * 13)})",
            events,
        )
    conn.close()


def status_counts(target: str) -> dict[str, dict[str, int]]:
    """Task -> status -> quanta, and ``retried``, from the ``quantum_status`` view."""
    counts: dict[str, dict[str, int]] = defaultdict(
        lambda: {"succeeded": 0, "failed": 0, "interrupted": 0, "retried": 0}
    )
    with Ledger.open(target) as led:
        for row in led.status():
            counts[row["task_label"]][row["status"]] += 1
            counts[row["task_label"]]["retried"] += row["attempts"] > 1
    return {task: dict(c) for task, c in counts.items()}


def folder_counts(folder: Path) -> dict[str, dict[str, int]]:
    """The same, summed over every ledger file of a folder."""
    total: dict[str, dict[str, int]] = defaultdict(
        lambda: {"succeeded": 0, "failed": 0, "interrupted": 0, "retried": 0}
    )
    for path in sorted(folder.glob("*.ledger")):
        for task, counts in status_counts(str(path)).items():
            for key, n in counts.items():
                total[task][key] += n
    return {task: dict(c) for task, c in total.items()}


def snapshot_counts(snapshot: dict[str, object]) -> dict[str, dict[str, int]]:
    """Task -> status -> quanta, and ``retried``, from a ``qledger watch --json`` snapshot."""
    tasks = snapshot["tasks"]
    assert isinstance(tasks, dict)
    return {
        task: {k: v for k, v in counts.items() if k != "total"} for task, counts in tasks.items()
    }


def last_json(text: str) -> dict[str, object]:
    """The last JSON line of some output."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value
