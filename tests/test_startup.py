"""Start-up stays cheap: ``import ledger`` and ``qledger --help`` import only what they use.

The figures (seconds) are in benchmarks/RESULTS.md; these tests pin the causes
(which modules a start imports), never a time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

import ledger
import ledger.cli
from ledger.cli import COMMANDS, main
from ledger.store import migrate

#: Heavy libraries that a start must not import unless it uses them.
HEAVY = ("sqlalchemy", "alembic", "pydantic", "rich", "structlog", "jinja2", "pglast")


def imported_by(code: str) -> set[str]:
    """The top-level packages imported by running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


def test_group_help_imports_no_command_and_no_heavy_library() -> None:
    """qledger --help lists the commands without importing their modules or heavy libraries."""
    code = (
        "import sys\nfrom ledger.cli import main\n"
        "try:\n    main(['--help'], prog_name='qledger')\nexcept SystemExit:\n    pass\n"
        "assert not [m for m in sys.modules if m.startswith('ledger.cli._') "
        "and m not in ('ledger.cli._common', 'ledger.cli._config')], sorted(sys.modules)"
    )
    assert not imported_by(code) & set(HEAVY)


def test_import_ledger_is_light_and_names_resolve_on_use() -> None:
    """import ledger imports no heavy library; each public name is there when first used."""
    assert not imported_by("import ledger") & set(HEAVY)
    fresh = imported_by("from ledger import Ledger")
    # reading a ledger at the current schema needs no Alembic, and a SQLite one no SQLAlchemy
    assert not fresh & {"alembic", "sqlalchemy"}
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None, name
    assert set(ledger.__all__) <= set(dir(ledger))
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        ledger.Nonesuch  # noqa: B018


def test_show_on_a_pipe_imports_neither_sqlalchemy_alembic_nor_structlog(tmp_path: Path) -> None:
    """qledger show on one ledger, printed to a pipe, needs no SQLAlchemy, Alembic or structlog.

    SQLAlchemy's import was most of a short command's start-up (~150 ms of 0.41 s):
    a SQLite file is read with the driver alone.
    """
    from ledger.testing import make_quantum

    fixture = make_quantum(tmp_path / "repo")
    path = tmp_path / "q.ledger"
    with ledger.QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path):
        pass
    code = (
        "from ledger.cli import main\n"
        f"try:\n    main(['show', {str(path)!r}], prog_name='qledger')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
    )
    assert not imported_by(code) & {"sqlalchemy", "alembic", "structlog", "jinja2", "pglast"}


def test_each_command_summary_is_the_commands_own() -> None:
    """The summaries --help shows without importing a command are those of the command itself."""
    ctx = click.Context(main)
    for name, (module, attribute, summary) in COMMANDS.items():
        command = getattr(importlib.import_module(f"ledger.cli.{module}"), attribute)
        assert main.get_command(ctx, name) is command
        for limit in (30, 45, 200):
            shown = click.Command(name, help=summary).get_short_help_str(limit)
            assert shown == command.get_short_help_str(limit), f"update COMMANDS[{name!r}]"


def test_every_command_of_the_package_is_registered() -> None:
    """Each click command defined in ledger/cli/ is listed in COMMANDS (so --help names it)."""
    folder = Path(ledger.cli.__file__).parent
    registered = {(module, attribute) for module, attribute, _ in COMMANDS.values()}
    for path in folder.glob("_[a-z]*.py"):
        module = importlib.import_module(f"ledger.cli.{path.stem}")
        for attribute, value in vars(module).items():
            if isinstance(value, click.Command) and value.__module__ == module.__name__:
                assert (path.stem, attribute) in registered, f"{path.stem}.{attribute}"


def test_head_revision_constant_is_the_newest_migration() -> None:
    """HEAD_REVISION, written out so reads need no Alembic, is the newest shipped revision."""
    assert migrate.head_revision() == migrate.HEAD_REVISION, "update migrate.HEAD_REVISION"


def test_version_constant_is_the_installed_one() -> None:
    """ledger.__version__ (a constant: no metadata scan at start) is the installed version."""
    assert ledger.__version__ == importlib.metadata.version("quantum-ledger")


def test_sql_json_columns_are_the_schemas_json_columns() -> None:
    """qledger sql's written-out JSON columns are every JSON column of the schema."""
    from ledger.cli._sql import JSON_COLUMNS
    from ledger.store.schema import metadata

    from_schema = {
        c.name for t in metadata.tables.values() for c in t.columns if "JSON" in (c.comment or "")
    }
    assert from_schema | {"caveats"} == JSON_COLUMNS


def test_sql_on_a_sqlite_file_imports_no_sqlalchemy(tmp_path: Path) -> None:
    """qledger sql on a SQLite file reads it with the driver: no SQLAlchemy, no Alembic."""
    from ledger.testing import make_quantum

    fixture = make_quantum(tmp_path / "repo")
    path = tmp_path / "q.ledger"
    with ledger.QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path):
        pass
    code = (
        "from ledger.cli import main\n"
        f"try:\n    main(['sql', {str(path)!r}, 'SELECT 1'], prog_name='qledger')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
    )
    assert not imported_by(code) & {"sqlalchemy", "alembic", "structlog"}
