"""The architecture: module imports only point downward (STYLE rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ledger"

#: Lower layers first; a module may import only modules of its own layer or below.
LAYERS: list[set[str]] = [
    {"errors", "_version", "_logging"},
    {"model"},
    {"records"},
    {"quantum"},
    {"storage"},
    {"pathguard", "sources"},
    {"datastore"},
    {"config"},
    {"events"},
    {"provenance"},
    {"store.connect"},
    {"store.schema"},
    {"store.validate"},
    {"store.migrate", "migrations"},
    {"store.readonly"},
    {"store.catalog"},
    {"store.log"},
    {"store.lease"},
    {"store.verify"},
    {"store.ledger"},
    {"store.query"},
    {"identity"},
    {"recording"},
    {"recorder"},
    {"butler"},
    {"recovery", "lsst"},
    {"central", "export", "jsonschema", "testing"},
    {"campaign"},
    {"_demo", "_cli_central", "cli", "__main__", "__init__"},
]


def _layer(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if module in names or module.split(".")[0] in names:
            return index
    raise AssertionError(f"ledger.{module} is not placed in a layer of tests/test_layers.py")


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[str]:
    """Modules of the package imported at module level (function-level imports are lazy)."""
    tree = ast.parse(path.read_text())
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                names = [target] if node.module else [".".join([*base, a.name]) for a in node.names]
                found.extend(n for n in names if n)
            elif node.module and node.module.startswith("ledger."):
                found.append(node.module.removeprefix("ledger."))
        elif isinstance(node, ast.If):  # TYPE_CHECKING blocks do not count at run time
            continue
    return found


def test_imports_point_downward() -> None:
    """No module imports a module from a higher layer."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = _module_name(path)
        if module in ("store", "__init__") or module.endswith("__init__"):
            continue
        for target in _imports(path, module):
            if target in ("store", ""):
                continue
            if _layer(target) > _layer(module):
                problems.append(f"ledger.{module} imports ledger.{target} from a higher layer")
    assert not problems, "\n".join(problems)


def test_only_the_lsst_module_imports_lsst() -> None:
    """The core never imports lsst.*; only the ledger/lsst/ package may."""
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "lsst":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("lsst") for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                # A relative import (``from ..lsst import run``) is ledger.lsst, not lsst.
                assert node.level or not (node.module or "").startswith("lsst"), path
