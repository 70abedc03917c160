"""Docs that cannot go stale: the butler, replay, SQL and central examples answer as stated."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from docs_text import blocks
from docs_text import section as docs_section

from ledger import Ledger, QuantumBackedButler
from ledger.testing import make_quantum


def _blocks(language: str, section: str) -> list[str]:
    return blocks(language, docs_section(section))


@pytest.mark.parametrize("section", ["butler"])
def test_python_examples_run(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python examples run as written, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    blocks = _blocks("python", section) + _blocks("python", "replay")
    assert blocks
    for block in blocks:
        exec(compile(block, f"README.md[{section}]", "exec"), namespace)
        work = namespace.get("work")
        if isinstance(work, Path):
            os.chdir(work)  # later examples name files relative to the example's folder


def test_sql_examples_execute_and_answer(tmp_path: Path) -> None:
    """Every SQL example in the schema section runs on a real ledger and returns rows."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_missing=1, n_outputs=2)
    path = tmp_path / "q.ledger"
    try:
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as b:
            b.stored_many(fixture.predicted_inputs)
            b.get(fixture.inputs[0])
            b.put({"a": 1}, fixture.outputs[0])
            b.put({"a": 2}, fixture.outputs[1])
            b.pruneDatasets([fixture.outputs[1]], disassociate=False, unstore=True)
            raise RuntimeError("the task failed")
    except RuntimeError:
        pass
    with Ledger.open(path) as led:
        qid = str(led.quantum_ids()[0])
    queries = _blocks("sql", "sql")
    assert len(queries) >= 5
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    params = {"quantum_id": qid, "dataset_id": str(fixture.outputs[0].id)}
    answered = 0
    for sql in queries:
        rows = conn.execute(sql, params).fetchall()
        answered += bool(rows)
    conn.close()
    # Every query but the "interrupted" one has an answer on this ledger.
    assert answered >= len(queries) - 1


def test_central_example_runs_and_its_queries_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The central-ledger section's Python runs as written; each of its SQL queries answers."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    blocks = _blocks("python", "central")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md[central]", "exec"), namespace)
    rows = list(namespace["follow"]("central.sqlite"))  # type: ignore[operator]
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    raw = namespace["run"].refs["raw"][0]  # type: ignore[attr-defined]
    queries = _blocks("sql", "central")
    assert len(queries) >= 3
    conn = sqlite3.connect("file:central.sqlite?mode=ro", uri=True)
    for sql in queries:
        assert conn.execute(sql, {"dataset_id": str(raw.id)}).fetchall(), sql
    conn.close()
