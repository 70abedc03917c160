"""The domain model: data IDs, dataset types and dataset refs.

All models are frozen pydantic v2 models and hashable, so refs can live in sets
and be dictionary keys, exactly as upstream's do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic_core import core_schema

__all__ = ["DATASET_ID_NAMESPACE", "DataId", "DataIdValue", "DatasetRef", "DatasetType"]

DataIdValue = int | str

#: Namespace of the deterministic dataset ids (uuid5). Changing it changes every id.
DATASET_ID_NAMESPACE = uuid.UUID("5b6a5c4e-0f3d-4a8e-9d7c-7e1f1a2b3c4d")


class DataId(Mapping[str, DataIdValue]):
    """An immutable, hashable mapping from dimension name to value.

    Keys are kept sorted so that two data IDs with the same items are equal,
    hash alike and serialize to the same JSON text.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, DataIdValue] | None = None, /) -> None:
        source = dict(items or {})
        for key, value in source.items():
            if not isinstance(key, str):
                raise TypeError(f"data ID keys must be strings, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TypeError(f"data ID value for {key!r} must be int or str, got {value!r}")
        self._items: dict[str, DataIdValue] = dict(sorted(source.items()))
        self._hash = hash(tuple(self._items.items()))

    def __getitem__(self, key: str) -> DataIdValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DataId):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"DataId({self._items!r})"

    def to_json(self) -> str:
        """Canonical JSON text: sorted keys, no spaces."""
        return json.dumps(self._items, separators=(",", ":"))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        value_schema = core_schema.union_schema(
            [core_schema.int_schema(strict=True), core_schema.str_schema(strict=True)]
        )
        from_mapping = core_schema.no_info_after_validator_function(
            cls, core_schema.dict_schema(core_schema.str_schema(), value_schema)
        )
        return core_schema.json_or_python_schema(
            json_schema=from_mapping,
            python_schema=core_schema.union_schema(
                [core_schema.is_instance_schema(cls), from_mapping]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: dict(value._items)
            ),
        )


class DatasetType(BaseModel):
    """A named kind of dataset: its dimensions and its storage class."""

    model_config = ConfigDict(frozen=True)

    name: str
    dimensions: tuple[str, ...] = ()
    storage_class: str

    def component(self) -> str | None:
        """The component name (``"calexp.wcs"`` gives ``"wcs"``), or None."""
        _, _, component = self.name.partition(".")
        return component or None

    def parent_name(self) -> str:
        """The name of the composite this type is a component of (or its own name)."""
        return self.name.partition(".")[0]

    def is_component(self) -> bool:
        """True for a component dataset type such as ``calexp.wcs``."""
        return "." in self.name

    def make_component(self, component: str, storage_class: str | None = None) -> DatasetType:
        """The component dataset type ``<name>.<component>``."""
        return DatasetType(
            name=f"{self.name}.{component}",
            dimensions=self.dimensions,
            storage_class=storage_class or self.storage_class,
        )


def _default_dataset_id(dataset_type_name: str, data_id: DataId, run: str) -> uuid.UUID:
    return uuid.uuid5(DATASET_ID_NAMESPACE, f"{dataset_type_name}\x00{data_id.to_json()}\x00{run}")


class DatasetRef(BaseModel):
    """A reference to one dataset: type, data ID, run, and a UUID.

    When ``id`` is omitted it is the uuid5 of (dataset type name, data ID,
    run), so the same dataset gets the same id in every process. A component
    ref keeps its parent's id, as upstream's do.
    """

    model_config = ConfigDict(frozen=True)

    dataset_type: DatasetType
    data_id: DataId
    run: str
    id: uuid.UUID = None  # type: ignore[assignment]  # filled in by the validator below

    @model_validator(mode="before")
    @classmethod
    def _fill_id(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("id") is None:
            values = dict(values)
            dataset_type = values.get("dataset_type")
            if isinstance(dataset_type, Mapping):
                dataset_type = DatasetType.model_validate(dataset_type)
            data_id = values.get("data_id")
            run = values.get("run")
            if isinstance(dataset_type, DatasetType) and data_id is not None and run is not None:
                values["id"] = _default_dataset_id(
                    dataset_type.parent_name(), DataId(data_id), str(run)
                )
        return values

    def __hash__(self) -> int:
        # Equal refs have equal ids, and hashing the id alone is ~10x cheaper than
        # hashing every field: refs are dict keys on the butler's hot path.
        return hash(self.id)

    # Upstream spells these in camelCase; executors written for it use them.
    @property
    def datasetType(self) -> DatasetType:
        """Upstream's name for `dataset_type`."""
        return self.dataset_type

    @property
    def dataId(self) -> DataId:
        """Upstream's name for `data_id`."""
        return self.data_id

    def isComponent(self) -> bool:
        """True when this ref points at a component of a composite dataset."""
        return self.dataset_type.is_component()

    def makeComponentRef(self, component: str, storage_class: str | None = None) -> DatasetRef:
        """A ref to one component of this dataset, with the same id."""
        return DatasetRef(
            dataset_type=self.dataset_type.make_component(component, storage_class),
            data_id=self.data_id,
            run=self.run,
            id=self.id,
        )

    def __str__(self) -> str:
        items = ", ".join(f"{k}: {v!r}" for k, v in self.data_id.items())
        return f"{self.dataset_type.name}@{{{items}}} [id={self.id}, run={self.run}]"
