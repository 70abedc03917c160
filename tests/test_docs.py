"""Docs that cannot go stale: every example in README.md and docs/ runs, and the site builds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from docs_text import ROOT, blocks, doc_files, section
from test_cli import _run_session

from ledger import Ledger
from ledger.central import collect_and_transfer, ingest
from ledger.cli import main
from ledger.testing import run_pipeline

#: The fence languages the pages may use. Examples (python, sql, console) are run
#: below; text is output shown beside an example; bash is the README's two commands
#: and commands to adapt (a server's address, your own files), which show no output;
#: postgresql is SQL for a PostgreSQL server (tests/test_security.py runs it there);
#: toml is a qledger config file (tests/test_settings.py loads it).
_LANGUAGES = {"python", "sql", "console", "bash", "text", "yaml", "postgresql", "toml"}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _with(language: str) -> list[Path]:
    return [p for p in doc_files() if blocks(language, p.read_text())]


def test_pages_use_only_known_fences() -> None:
    """Every fenced block names a language the tests know how to treat."""
    for path in doc_files():
        for language in re.findall(r"^```(\S*)$", path.read_text(), flags=re.M):
            if language:
                assert language in _LANGUAGES, f"{_name(path)}: ```{language}"


@pytest.mark.parametrize("path", _with("python"), ids=_name)
def test_python_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's Python examples run as written, in order, in one namespace, in an empty folder."""
    text = path.read_text()
    if "from lsst" in text and importlib.util.find_spec("lsst.daf.butler") is None:
        pytest.skip("the page's example needs the lsst extra")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for n, block in enumerate(blocks("python", text)):
        exec(compile(block, f"{_name(path)}[python {n}]", "exec"), namespace)


@pytest.fixture(scope="module")
def central_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A central ledger of a small pipeline with a failure, outputs transferred."""
    work = tmp_path_factory.mktemp("central")
    run = run_pipeline(work / "repo", work / "ledgers", fail={("calibrate", 2, 1)})
    target = work / "central.sqlite"
    assert ingest(str(target), [str(p) for p in run.ledgers]).ok
    with Ledger.open(target) as central:
        quanta = [central.quantum(q) for q in central.quantum_ids()]
        provenance = [central.replay(q.id) for q in quanta]
    collect_and_transfer(str(target), quanta, provenance)
    params = {"quantum_id": str(quanta[0].id), "dataset_id": str(run.refs["raw"][0].id)}
    return target, params


@pytest.mark.parametrize("path", _with("sql"), ids=_name)
def test_sql_examples_execute(path: Path, central_ledger: tuple[Path, dict[str, str]]) -> None:
    """Every SQL example of a page runs on a real central ledger, read-only."""
    target, params = central_ledger
    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        for sql in blocks("sql", path.read_text()):
            conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("path", _with("console"), ids=_name)
def test_console_sessions_print_what_they_show(path: Path, tmp_path: Path) -> None:
    """A page's console sessions start from the demo and, run for real, print what they show."""
    for n, block in enumerate(blocks("console", path.read_text())):
        assert block.startswith("$ qledger demo"), f"{_name(path)}: console block {n}"
        (tmp_path / str(n)).mkdir()
        _run_session(block, tmp_path / str(n))


def test_site_builds_strict(tmp_path: Path) -> None:
    """mkdocs build --strict succeeds: every page, link and docstring is in order."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


def test_demo_size_is_what_the_docs_say(tmp_path: Path) -> None:
    """The demo's pipeline size, and how many quanta run at first, agree with its help and docs."""
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    ((ran, total),) = re.findall(r"ran (\d+) of the pipeline's (\d+) quanta", result.output)
    assert len(list((tmp_path / "demo" / "ledgers").glob("*.ledger"))) == int(total)
    assert f"{total}-quantum pipeline" in section("cli")
    assert f"{ran} quanta run at first" in section("cli")
    help_text = " ".join(CliRunner().invoke(main, ["demo", "--help"]).output.split())
    assert f"A pipeline of {total} quanta" in help_text
    assert f"so {ran} run at first" in help_text
