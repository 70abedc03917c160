"""Docs that cannot go stale: schemas/*.json equal the models' JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.jsonschema import MODELS, render

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_file_is_fresh(name: str) -> None:
    """Each committed schema equals the model's model_json_schema()."""
    assert (SCHEMAS / name).read_text() == render(MODELS[name]), (
        f"schemas/{name} is stale: run 'python -m ledger.jsonschema schemas'"
    )


def test_no_orphan_schema_files() -> None:
    """Every file in schemas/ belongs to a model."""
    assert {p.name for p in SCHEMAS.glob("*.json")} == set(MODELS)
