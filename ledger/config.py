"""Butler configuration: a datastore root, a mapping, or a YAML file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .datastore import FileDatastore
from .errors import LedgerError
from .storage import StorageClassRegistry, default_registry

__all__ = ["Config", "datastore_from_config"]

#: What ``QuantumBackedButler.initialize`` accepts as ``config``.
Config = str | os.PathLike[str] | Mapping[str, Any]


def _registry(settings: Any, where: str) -> StorageClassRegistry | None:
    """Storage classes from config: a registry, or ``{name: {like: ..., pytype: ...}}``."""
    if settings is None or isinstance(settings, StorageClassRegistry):
        return settings
    if not isinstance(settings, Mapping):
        raise LedgerError(f"{where}: 'storage_classes' must be a mapping of name -> settings")
    registry = default_registry()
    for name, spec in settings.items():
        spec = spec or {}
        base = registry.get(str(spec.get("like", "StructuredDataDict")))
        registry.register(
            dataclasses.replace(base, name=str(name), pytype=spec.get("pytype", base.pytype)),
            replace=True,
        )
    return registry


def datastore_from_config(config: Config) -> FileDatastore:
    """Build the datastore from a root directory, a mapping, or a YAML file.

    A mapping (or YAML file) has ``root`` and optionally ``name`` (default
    ``"files"``), ``fsync`` (default true) and ``storage_classes``: a
    `StorageClassRegistry`, or a mapping ``{Name: {like: StructuredDataDict,
    pytype: "builtins.dict"}}`` that registers more classes using the formatter
    of the class they are ``like``.
    """
    where = "datastore config"
    if not isinstance(config, Mapping):
        path = Path(config)
        if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
            return FileDatastore(path)
        where = str(path)
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, Mapping):
            raise LedgerError(f"datastore config {path} must be a mapping with a 'root' key")
        config = dict(loaded)
        if "root" in config and not Path(str(config["root"])).is_absolute():
            config["root"] = path.parent / str(config["root"])  # relative to the file
    if "root" not in config:
        raise LedgerError(f"{where} needs a 'root' key (the datastore directory)")
    return FileDatastore(
        Path(str(config["root"])),
        name=str(config.get("name", "files")),
        fsync=bool(config.get("fsync", True)),
        storage_classes=_registry(config.get("storage_classes"), where),
    )
