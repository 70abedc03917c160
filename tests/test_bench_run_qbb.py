"""benchmarks/bench_run_qbb.py writes only its own section of RESULTS.md."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_run_qbb_section_names_each_variant_and_its_ratio(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The section shows the three variants with ratios to bare; other sections stay."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    bench = importlib.import_module("bench_run_qbb")
    common = importlib.import_module("common")
    result = {
        "quanta": 20, "rounds": 2, "bare": 100.0, "recorded": 180.0, "shared": 130.0,
        "all": {"bare": [100.0, 100.0], "recorded": [180.0, 180.0], "shared": [130.0, 130.0]},
    }  # fmt: skip
    body = bench.section(result, tmp_path)
    assert "| recorded, one ledger per quantum | 180.0 | 1.80 |" in body
    assert "| recorded, one ledger for the run | 130.0 | 1.30 |" in body
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- section:other -->\nkept\n<!-- /section:other -->\n")
    common.write_section(results, bench.SECTION, body)
    common.write_section(results, bench.SECTION, body)
    text = results.read_text()
    assert "kept" in text
    assert text.count("<!-- section:run-qbb -->") == 1
