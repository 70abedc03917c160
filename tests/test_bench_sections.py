"""benchmarks/bench_lsst.py rewrites only its own section of RESULTS.md."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_wrapper_section_replaces_itself_and_keeps_every_other_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """replace_section swaps the marked section in place, or appends it; other rows stay."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    bench = importlib.import_module("bench_lsst")
    table = "# Benchmark results\n\n| figure | ours |\n|---|---|\n| replay | 0.8 |\n"
    first = bench.replace_section(table, f"{bench.SECTION_START}\nold\n{bench.SECTION_END}\n")
    assert first.startswith(table.rstrip("\n"))
    second = bench.replace_section(
        first + "\ntrailing notes\n", f"{bench.SECTION_START}\nnew\n{bench.SECTION_END}\n"
    )
    assert "| replay | 0.8 |" in second
    assert "new" in second
    assert "old" not in second
    assert second.count(bench.SECTION_START) == 1
    assert second.rstrip().endswith("trailing notes")
