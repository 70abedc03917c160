"""The library logs through the standard `logging` module: silent unless the application listens."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from docs_text import blocks, section

from ledger import QuantumBackedButler
from ledger.central.ingest import ingest
from ledger.testing import make_quantum

#: A quantum that leaves predicted inputs unchecked (a warning), then an ingest (info lines).
_NOISY = textwrap.dedent(
    """
    fixture = make_quantum(work / "noisy", n_inputs=3, n_missing=0, n_outputs=1)
    with QuantumBackedButler.initialize(
        work / "noisy", fixture.quantum, ledger=work / "noisy.ledger"
    ) as butler:
        butler.get(fixture.predicted_inputs[0])
        butler.extract_provenance_data()
    ingest(str(work / "central.sqlite"), [str(work / "noisy.ledger"), str(work / "missing.ledger")])
    """
)


def test_library_prints_nothing_on_stdout_or_stderr(tmp_path: Path) -> None:
    """The README's butler example, unchecked inputs and an ingest print no log line."""
    example = blocks("python", section("butler"))[0]
    script = "\n".join(
        [
            example,
            'print("--- after the example ---", flush=True)',
            "from ledger.central.ingest import ingest",
            _NOISY,
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    before, marker, after = result.stdout.partition("--- after the example ---\n")
    assert marker, result.stdout
    assert '"predicted_inputs"' in before  # the example's own print
    assert "[info" not in before, before
    assert "[warning" not in before, before
    assert after == "", after
    assert result.stderr == "", result.stderr


def test_library_warning_reaches_logging_when_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unchecked-inputs warning and ingest's info are records of the ``ledger`` loggers."""
    work = tmp_path
    with caplog.at_level(logging.INFO, logger="ledger"):
        exec(
            _NOISY,
            {
                "work": work,
                "make_quantum": make_quantum,
                "QuantumBackedButler": QuantumBackedButler,
                "ingest": ingest,
            },
        )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["ledger.butler"]
    assert warnings[0].getMessage().startswith("unchecked_inputs ")
    assert "dataset_ids=" in warnings[0].getMessage()
    infos = [r for r in caplog.records if r.name == "ledger.central.ingest"]
    assert any(r.getMessage().startswith("ingest done ") for r in infos)
    assert any("missing.ledger" in r.getMessage() for r in infos)
    assert capsys.readouterr().out == ""
