"""Crafted ledgers (chains recomputed): verify notices each, and no command crashes on any."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from crafted import CRAFTS, Base, Craft, base_ledger, craft
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.cli import main


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """One real ledger of two quanta for the whole module (each test copies it)."""
    return base_ledger(tmp_path_factory.mktemp("base"))


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _commands(path: Path, base: Base, tmp: Path) -> list[list[str | Path]]:
    """Every inspecting command on ``path``, and ingest into a new central ledger."""
    return [
        ["show", path],
        ["show", path, "--json"],
        ["events", path],
        ["events", path, "--json"],
        ["events", path, "--detail"],
        ["replay", path, "--quantum", base.ok[:8]],
        ["replay", path, "--quantum", base.failed[:8]],
        ["verify", path],
        ["recover", path, "--datastore", base.root],
        ["recover", path, "--datastore", base.root, "--json"],
        ["export", path],
        ["export", path, "--format", "prov-json"],
        ["head", path],
        ["sql", path, "SELECT * FROM quantum_status"],
        ["sql", path, "SELECT * FROM provenance"],
        ["lineage", path, base.output_id[:8]],
        ["ingest", tmp / "central.sqlite", path, "--no-progress", "-j", "1"],
        ["ingest", tmp / "central2.sqlite", path, "--no-progress", "-j", "1", "--no-verify"],
        ["lineage", tmp / "central2.sqlite", base.output_id[:8]],
        ["verify", tmp / "central2.sqlite"],
    ]


def _check_every_command(path: Path, base: Base, tmp: Path, name: str) -> dict[str, int]:
    """Run every command: never exit 3, one stderr line on exit 2, the file's bytes unchanged."""
    before = _digest(path)
    codes: dict[str, int] = {}
    for args in _commands(path, base, tmp):
        result = _run(*args)
        label = " ".join(str(a) for a in args if a is not path)
        codes[label] = result.exit_code
        assert result.exit_code in (0, 1, 2), (name, label, result.exit_code, result.output)
        if result.exit_code == 2:
            lines = result.stderr.splitlines()
            assert len(lines) == 1, (name, label, result.stderr)
            assert lines[0].startswith("qledger: "), (name, label, lines[0])
        assert "Traceback" not in result.stderr, (name, label)
        assert _digest(path) == before, (name, label)
    return codes


def test_the_base_ledger_is_sound(base: Base, tmp_path: Path) -> None:
    """The uncrafted copy verifies, and every command reads it (exit 0, or 1 for recover)."""
    path = craft(base, tmp_path / "plain.ledger", Craft("plain", lambda c, b: None))
    codes = _check_every_command(path, base, tmp_path, "plain")
    assert codes["verify"] == 0
    assert all(code == 0 for label, code in codes.items() if not label.startswith("recover"))


def test_the_battery_has_every_kind_of_crafted_value() -> None:
    """At least 23 kinds of crafted ledgers, each with its own name."""
    names = [c.name for c in CRAFTS]
    assert len(names) >= 23
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("how", CRAFTS, ids=[c.name for c in CRAFTS])
def test_verify_notices_every_crafted_ledger_and_no_command_crashes(
    base: Base, tmp_path: Path, how: Craft
) -> None:
    """A crafted ledger fails verify (exit 1 or 2); every command exits 0, 1 or 2, one line."""
    path = craft(base, tmp_path / f"{how.name}.ledger", how)
    codes = _check_every_command(path, base, tmp_path, how.name)
    assert codes["verify"] in (1, 2), how.name
    if codes["verify"] == 1:
        with Ledger.open(path) as led:
            assert not led.verify().ok


_JSON_COLUMNS = {
    "events.detail (put)": ("events", "detail", "kind = 'put'"),
    "events.detail (quantum_started)": ("events", "detail", "kind = 'quantum_started'"),
    "quanta.data_id": ("quanta", "data_id", "1"),
    "datasets.dimensions": ("datasets", "dimensions", "1"),
    "datasets.data_id": ("datasets", "data_id", "1"),
    "datasets.datastore_records": (
        "datasets",
        "datastore_records",
        "datastore_records IS NOT NULL",
    ),
}

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


def _as_text(value: object, depth: int) -> str:
    import json

    text = json.dumps(value)  # NaN and Infinity included, as Python writes them
    return "[" * depth + text + "]" * depth


@pytest.mark.parametrize("column", list(_JSON_COLUMNS))
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_json_values, depth=st.sampled_from([0, 0, 0, 1, 70, 3000]))
def test_fuzzed_json_in_every_json_column_never_crashes_a_command(
    base: Base, tmp_path: Path, column: str, value: object, depth: int
) -> None:
    """Any JSON (or Python's NaN JSON) in any JSON column: commands exit 0, 1 or 2, one line."""
    table, name, where = _JSON_COLUMNS[column]
    text = _as_text(value, depth)

    def edit(conn: sqlite3.Connection, b: Base) -> None:
        conn.execute(f"UPDATE {table} SET {name} = ? WHERE {where}", (text,))

    work = (
        tmp_path / f"fuzz-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    )
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    path = craft(base, work / "fuzzed.ledger", Craft("fuzz", edit))
    codes = _check_every_command(path, base, work, f"{column}={text[:60]}")
    with Ledger.open(path) as led:
        report = led.verify()
    # Whatever verify says, it says it as a report; a value readers cannot use is never "ok".
    if codes["show"] == 2 or codes["events"] == 2:
        assert not report.ok, (column, text[:80])
