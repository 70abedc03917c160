"""Butler configuration: a root directory, a mapping, or a YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import LedgerError, QuantumBackedButler
from ledger.config import datastore_from_config
from ledger.testing import make_quantum, make_ref


def test_yaml_config_with_relative_root_name_and_storage_classes(tmp_path: Path) -> None:
    """A YAML file sets root (relative to the file), name and an extra storage class."""
    config = tmp_path / "butler.yaml"
    config.write_text(
        "root: repo\nname: primary\nstorage_classes:\n  Catalog:\n    like: StructuredDataList\n"
    )
    ds = datastore_from_config(config)
    assert ds.name == "primary"
    assert Path(ds.root) == tmp_path / "repo"
    ref = make_ref("catalog", 1, storage_class="Catalog")
    ds.put([1, 2, 3], ref)
    assert ds.get(ref) == [1, 2, 3]


def test_butler_reads_inputs_through_the_named_datastore(tmp_path: Path) -> None:
    """The butler uses the records of the datastore its config names."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1, datastore_name="primary")
    config = {"root": str(fixture.root), "name": "primary"}
    with QuantumBackedButler.initialize(config, fixture.quantum) as butler:
        assert butler.get(fixture.inputs[0])["visit"] == 1
    other = {"root": str(fixture.root), "name": "other"}
    with (
        QuantumBackedButler.initialize(other, fixture.quantum) as butler,
        pytest.raises(LookupError),
    ):
        butler.get(fixture.inputs[0])


def test_config_without_root_is_refused(tmp_path: Path) -> None:
    """A mapping or YAML file without 'root' says what is missing."""
    with pytest.raises(LedgerError, match="'root'"):
        datastore_from_config({"name": "x"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(LedgerError, match=r"bad\.yaml"):
        datastore_from_config(bad)
