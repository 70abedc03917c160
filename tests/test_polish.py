"""Small things a user meets at the terminal: file modes, error names, help, choices, benchmarks."""

from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_cli import run_quantum

from ledger.cli import main
from ledger.testing import make_quantum

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process, as a user would from a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A ledger of one succeeded quantum, readable by everyone (0644)."""
    path = tmp_path / "q.ledger"
    run_quantum(make_quantum(tmp_path / "repo", visit=1, n_inputs=1, n_outputs=1), path)
    path.chmod(0o644)
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, whatever the test runner's."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- -o files ---------------------------------------------------------------------------


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("command", ["replay", "export"])
def test_output_files_respect_the_umask(ledger: Path, tmp_path: Path, command: str) -> None:
    """-o FILE is created 0666 & ~umask (0644 here), as a shell redirection would."""
    out = tmp_path / "out.json"
    assert run(command, ledger, "-o", out).exit_code == 0
    assert _mode(out) == 0o644


@pytest.mark.usefixtures("umask_022")
def test_output_of_a_private_ledger_stays_private(ledger: Path, tmp_path: Path) -> None:
    """An export of a ledger only its owner may read is only its owner's too."""
    ledger.chmod(0o600)
    out = tmp_path / "out.jsonl"
    assert run("export", ledger, "-o", out).exit_code == 0
    assert _mode(out) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_an_existing_output_keeps_its_mode(ledger: Path, tmp_path: Path) -> None:
    """Writing over an existing -o file keeps its permissions."""
    out = tmp_path / "p.json"
    out.write_text("old\n")
    out.chmod(0o640)
    assert run("replay", ledger, "-o", out).exit_code == 0
    assert _mode(out) == 0o640
    assert out.read_text().startswith("{")


@pytest.mark.parametrize("command", ["replay", "export"])
def test_an_unwritable_output_names_the_users_file(
    ledger: Path, tmp_path: Path, command: str
) -> None:
    """-o into a missing folder: one line naming FILE, never the temporary file beside it."""
    out = tmp_path / "missing" / "out.json"
    result = run(command, ledger, "-o", out)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"qledger: error: cannot write {out}: No such file or directory"
    ]
    assert ".tmp" not in result.stderr


# --- the group, choices ------------------------------------------------------------------


def test_qledger_alone_prints_help_and_exits_0() -> None:
    """qledger with no arguments prints its help (the commands) and exits 0, as git does."""
    result = subprocess.run(
        [sys.executable, "-m", "ledger"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    assert "verify" in result.stdout
    assert "Commands:" in result.stdout


def test_choices_are_case_insensitive(ledger: Path) -> None:
    """--kind PUT and --outcome OK are put and ok; --format TREE is tree."""
    result = run("events", ledger, "--kind", "PUT", "--outcome", "OK", "--json")
    assert result.exit_code == 0, result.output
    assert '"kind":"put"' in result.stdout


def test_export_format_prov_is_prov_json(ledger: Path) -> None:
    """--format prov is short for prov-json; an unknown format lists the choices."""
    short, full = run("export", ledger, "-f", "prov"), run("export", ledger, "-f", "PROV-JSON")
    assert short.exit_code == 0, short.output
    assert '"activity"' in short.stdout
    assert short.stdout == full.stdout
    refused = run("export", ledger, "-f", "xml")
    assert refused.exit_code == 2
    assert "'jsonl', 'prov-json', 'prov'" in refused.stderr


# --- benchmarks --------------------------------------------------------------------------


def test_a_quick_benchmark_run_leaves_the_committed_results_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """benchmarks/run.py --quick writes RESULTS-quick.md (ignored by git), not RESULTS.md."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    bench = importlib.import_module("run")
    assert bench.default_output(quick=False) == REPO_ROOT / "benchmarks" / "RESULTS.md"
    quick = bench.default_output(quick=True)
    assert quick == REPO_ROOT / "benchmarks" / "RESULTS-quick.md"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(quick)], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0
