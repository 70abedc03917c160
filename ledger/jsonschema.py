"""JSON Schemas of the public models, generated into ``schemas/`` (a test keeps them fresh).

Regenerate with ``python -m ledger.jsonschema schemas``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .events import Event
from .provenance import QuantumProvenanceData
from .quantum import Quantum
from .store.verify import Head, VerifyReport

__all__ = ["MODELS", "render", "write"]

#: File name in ``schemas/`` -> model.
MODELS: dict[str, type[BaseModel]] = {
    "event.json": Event,
    "head.json": Head,
    "quantum.json": Quantum,
    "quantum_provenance_data.json": QuantumProvenanceData,
    "verify_report.json": VerifyReport,
}


def render(model: type[BaseModel]) -> str:
    """The model's JSON Schema as stable, diff-friendly text."""
    schema: dict[str, Any] = model.model_json_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = directory / name
        path.write_text(render(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        sys.stdout.write(f"wrote {path}\n")
