"""benchmarks/bench_cli.py: its own section of RESULTS.md, kept by run.py and by the others."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_a_section_is_replaced_in_place_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_section replaces only its own section; kept_sections finds each section."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    common = importlib.import_module("common")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n| the main table |\n")
    common.write_section(results, "cli", "## Command line\n\nfirst")
    common.write_section(results, "other", "## Other\n\nkept")
    common.write_section(results, "cli", "## Command line\n\nsecond")
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n| the main table |\n")
    assert "second" in text
    assert "first" not in text
    assert text.count("<!-- section:cli -->") == 1
    kept = common.kept_sections(results)
    assert kept.index("## Command line") < kept.index("## Other")
    assert "| the main table |" not in kept
    assert "## Other" not in common.kept_sections(results, skip={"other"})  # run.py writes it


def test_the_cli_benchmark_is_importable_and_names_its_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench_cli.py (start-up and output at 1,000,000 events) imports and writes section 'cli'."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    bench = importlib.import_module("bench_cli")
    assert bench.SECTION == "cli"
    assert callable(bench.startup_figures)
    assert callable(bench.output_figures)
