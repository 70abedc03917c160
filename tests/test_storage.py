"""Storage classes, their formatters, parameters, components and converters."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import (
    ConversionError,
    InvalidParameterError,
    LedgerError,
    StorageClassError,
)
from ledger.storage import (
    DEFAULT_STORAGE_CLASSES,
    StorageClass,
    StorageClassRegistry,
    default_registry,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_dicts = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
json_lists = st.lists(json_values, max_size=6)


@pytest.fixture
def registry() -> StorageClassRegistry:
    """A fresh default registry."""
    return default_registry()


def _round_trip(registry: StorageClassRegistry, name: str, obj: Any) -> Any:
    storage_class = registry.get(name)
    return storage_class.from_bytes(storage_class.to_bytes(obj))


# --- round trips ---------------------------------------------------------------


@given(obj=json_dicts)
def test_dict_round_trip(obj: dict[str, Any]) -> None:
    """Any JSON-able dict survives StructuredDataDict's writer and reader."""
    assert _round_trip(default_registry(), "StructuredDataDict", obj) == obj


@given(obj=json_lists)
def test_list_round_trip(obj: list[Any]) -> None:
    """Any JSON-able list survives StructuredDataList's writer and reader."""
    assert _round_trip(default_registry(), "StructuredDataList", obj) == obj


@given(obj=st.text())
def test_text_round_trip(obj: str) -> None:
    """Any text survives the Text storage class as UTF-8, newlines untouched."""
    storage_class = default_registry().get("Text")
    assert storage_class.to_bytes(obj) == obj.encode("utf-8")
    assert storage_class.from_bytes(storage_class.to_bytes(obj)) == obj


@given(obj=st.binary())
def test_bytes_round_trip(obj: bytes) -> None:
    """Bytes are stored exactly as given."""
    storage_class = default_registry().get("Bytes")
    assert storage_class.to_bytes(obj) == obj
    assert storage_class.from_bytes(obj) == obj


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.linspace(0.0, 1.0, 7, dtype=np.float32),
        np.array([], dtype=np.float64),
        np.array([True, False]),
    ],
)
def test_numpy_round_trip(registry: StorageClassRegistry, array: Any) -> None:
    """Arrays of several dtypes and shapes survive the .npy format exactly."""
    result = _round_trip(registry, "NumpyArray", array)
    assert result.dtype == array.dtype
    assert result.shape == array.shape
    np.testing.assert_array_equal(result, array)


@given(obj=json_dicts)
def test_json_is_canonical(obj: dict[str, Any]) -> None:
    """The same dict gives the same bytes whatever its key order: sorted, no spaces."""
    storage_class = default_registry().get("StructuredDataDict")
    reordered = dict(reversed(list(obj.items())))
    data = storage_class.to_bytes(obj)
    assert storage_class.to_bytes(reordered) == data
    assert (
        data == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_builtin_classes_and_extensions(registry: StorageClassRegistry) -> None:
    """The default registry ships the five SPEC classes with their extensions."""
    expected = {
        "StructuredDataDict": ".json",
        "StructuredDataList": ".json",
        "Text": ".txt",
        "Bytes": ".bin",
        "NumpyArray": ".npy",
    }
    assert {sc.name: sc.extension for sc in registry} == expected
    assert registry.names() == sorted(expected)


# --- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        ("StructuredDataDict", "a string"),
        ("StructuredDataList", {"a": 1}),
        ("Text", b"bytes"),
        ("Bytes", "text"),
        ("NumpyArray", [1, 2, 3]),
    ],
)
def test_wrong_type_is_refused(registry: StorageClassRegistry, name: str, obj: Any) -> None:
    """An object of the wrong Python type is refused with a message naming both."""
    with pytest.raises(StorageClassError, match=name) as info:
        registry.get(name).to_bytes(obj)
    assert type(obj).__name__ in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [{"a": {1, 2}}, {"a": float("nan")}, {"a": object()}],
)
def test_unserializable_dict_is_refused(registry: StorageClassRegistry, obj: Any) -> None:
    """A dict holding non-JSON values (sets, NaN, objects) gives a StorageClassError."""
    with pytest.raises(StorageClassError, match="cannot serialize"):
        registry.get("StructuredDataDict").to_bytes(obj)


def test_object_array_is_refused(registry: StorageClassRegistry) -> None:
    """Arrays that would need pickling are refused: artifacts never hold pickles."""
    with pytest.raises(StorageClassError, match="cannot serialize"):
        registry.get("NumpyArray").to_bytes(np.array([{"a": 1}], dtype=object))


def test_storage_class_is_hashable() -> None:
    """Storage classes are frozen and hashable, so they can key dicts and sets."""
    assert len(set(DEFAULT_STORAGE_CLASSES)) == len(DEFAULT_STORAGE_CLASSES)
    with pytest.raises(AttributeError):
        DEFAULT_STORAGE_CLASSES[0].name = "other"  # type: ignore[misc]


# --- parameters ----------------------------------------------------------------


def test_dict_keys_parameter(registry: StorageClassRegistry) -> None:
    """StructuredDataDict's ``keys`` parameter returns the sub-dict of those keys."""
    storage_class = registry.get("StructuredDataDict")
    obj = {"a": 1, "b": 2, "c": 3}
    assert storage_class.apply_parameters(obj, {"keys": ["c", "a"]}) == {"c": 3, "a": 1}


def test_dict_keys_parameter_missing_key(registry: StorageClassRegistry) -> None:
    """Asking for keys the dict lacks names them and the keys it has."""
    with pytest.raises(InvalidParameterError, match=r"\['z'\]"):
        registry.get("StructuredDataDict").apply_parameters({"a": 1}, {"keys": ["a", "z"]})


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        ("StructuredDataList", [0, 1, 2, 3, 4]),
        ("Text", "01234"),
        ("Bytes", b"01234"),
    ],
)
def test_slice_parameter(registry: StorageClassRegistry, name: str, obj: Any) -> None:
    """``slice`` takes [start, stop] or [start, stop, step], nulls allowed."""
    storage_class = registry.get(name)
    assert storage_class.apply_parameters(obj, {"slice": [1, 3]}) == obj[1:3]
    assert storage_class.apply_parameters(obj, {"slice": [None, None, 2]}) == obj[::2]
    assert storage_class.apply_parameters(obj, {"slice": (2, None)}) == obj[2:]


def test_numpy_slice_parameter(registry: StorageClassRegistry) -> None:
    """NumpyArray's ``slice`` cuts along the first axis."""
    array = np.arange(20).reshape(5, 4)
    result = registry.get("NumpyArray").apply_parameters(array, {"slice": [1, 3]})
    np.testing.assert_array_equal(result, array[1:3])


@pytest.mark.parametrize("value", [5, "1:3", [1, 2, 3, 4], [1.5, 2], [True, 2]])
def test_bad_slice_value(registry: StorageClassRegistry, value: Any) -> None:
    """A malformed ``slice`` value is an InvalidParameterError that shows the expected form."""
    with pytest.raises(InvalidParameterError, match=r"\[start, stop\]"):
        registry.get("StructuredDataList").apply_parameters([1, 2], {"slice": value})


def test_unknown_parameter(registry: StorageClassRegistry) -> None:
    """An unknown parameter name is refused, listing the ones the class accepts."""
    with pytest.raises(InvalidParameterError, match=r"bogus.*accepts: keys") as info:
        registry.get("StructuredDataDict").apply_parameters({"a": 1}, {"bogus": 1})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, LedgerError)


def test_no_parameters_is_identity(registry: StorageClassRegistry) -> None:
    """None or an empty mapping of parameters returns the object itself."""
    obj = {"a": 1}
    storage_class = registry.get("StructuredDataDict")
    assert storage_class.apply_parameters(obj, None) is obj
    assert storage_class.apply_parameters(obj, {}) is obj


# --- components ----------------------------------------------------------------


def test_dict_component(registry: StorageClassRegistry) -> None:
    """A StructuredDataDict component is the value of that key."""
    storage_class = registry.get("StructuredDataDict")
    assert storage_class.has_components
    assert storage_class.get_component({"wcs": [1, 2], "psf": 3}, "wcs") == [1, 2]


def test_missing_component(registry: StorageClassRegistry) -> None:
    """A component that is not a key is a StorageClassError listing the keys."""
    with pytest.raises(StorageClassError, match=r"'nope'.*\['psf', 'wcs'\]"):
        registry.get("StructuredDataDict").get_component({"wcs": 1, "psf": 2}, "nope")


def test_class_without_components(registry: StorageClassRegistry) -> None:
    """Classes without components say so when one is asked for."""
    storage_class = registry.get("Text")
    assert not storage_class.has_components
    with pytest.raises(StorageClassError, match="has no components"):
        storage_class.get_component("abc", "x")


# --- the registry --------------------------------------------------------------


def test_unknown_name_lists_registered(registry: StorageClassRegistry) -> None:
    """Asking for an unknown class says which names exist and how to register one."""
    with pytest.raises(StorageClassError) as info:
        registry.get("Exposure")
    message = str(info.value)
    assert "'Exposure'" in message
    assert "StructuredDataDict" in message
    assert "register" in message
    assert not isinstance(info.value, LookupError)  # a caller error, not a missing dataset


def test_register_custom_class(registry: StorageClassRegistry) -> None:
    """A custom class can be registered, found by name or object, and re-registered idempotently."""
    custom = StorageClass(
        name="Csv",
        pytype=str,
        extension=".csv",
        formatter="test.csv",
        writer=lambda obj: obj.encode(),
        reader=lambda data: data.decode(),
    )
    assert registry.register(custom) is custom
    assert registry.register(custom) is custom
    assert registry.get("Csv") is custom
    assert registry.get(custom) is custom
    assert "Csv" in registry


def test_register_conflict(registry: StorageClassRegistry) -> None:
    """A different class under an existing name needs replace=True."""
    other = StorageClass(
        name="Text",
        pytype=str,
        extension=".md",
        formatter="test.md",
        writer=lambda obj: obj.encode(),
        reader=lambda data: data.decode(),
    )
    with pytest.raises(StorageClassError, match="replace=True"):
        registry.register(other)
    registry.register(other, replace=True)
    assert registry.get("Text").extension == ".md"


def test_registries_are_independent() -> None:
    """default_registry() and copy() give independent registries: no global state."""
    first = default_registry()
    first.register_converter("Bytes", "StructuredDataList", list)
    assert not default_registry().has_converter("Bytes", "StructuredDataList")
    copy = first.copy()
    copy.register_converter("Text", "StructuredDataList", list)
    assert copy.has_converter("Bytes", "StructuredDataList")
    assert not first.has_converter("Text", "StructuredDataList")


def test_for_object(registry: StorageClassRegistry) -> None:
    """for_object finds the class of an object's type, or None."""
    assert registry.for_object({"a": 1}).name == "StructuredDataDict"  # type: ignore[union-attr]
    assert registry.for_object(np.zeros(2)).name == "NumpyArray"  # type: ignore[union-attr]
    assert registry.for_object(3) is None


# --- conversion ----------------------------------------------------------------


def test_list_to_numpy(registry: StorageClassRegistry) -> None:
    """The shipped StructuredDataList -> NumpyArray converter gives an array."""
    result = registry.convert([[1, 2], [3, 4]], "StructuredDataList", "NumpyArray")
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, [[1, 2], [3, 4]])


def test_dict_to_text(registry: StorageClassRegistry) -> None:
    """StructuredDataDict -> Text gives the canonical JSON text."""
    assert registry.convert({"b": 1, "a": 2}, "StructuredDataDict", "Text") == '{"a":2,"b":1}'


def test_same_class_is_identity(registry: StorageClassRegistry) -> None:
    """Converting to the same class returns the object unchanged."""
    obj = {"a": 1}
    assert registry.convert(obj, "StructuredDataDict", "StructuredDataDict") is obj


def test_missing_converter(registry: StorageClassRegistry) -> None:
    """No converter: a ConversionError naming both classes and how to register one."""
    with pytest.raises(ConversionError) as info:
        registry.convert({"a": 1}, "StructuredDataDict", "NumpyArray")
    message = str(info.value)
    assert "'StructuredDataDict'" in message
    assert "'NumpyArray'" in message
    assert "register_converter('StructuredDataDict', 'NumpyArray', func)" in message
    assert isinstance(info.value, TypeError)


def test_custom_converter(registry: StorageClassRegistry) -> None:
    """A registered converter is used by convert."""
    registry.register_converter("StructuredDataDict", "StructuredDataList", lambda d: sorted(d))
    assert registry.convert({"b": 1, "a": 2}, "StructuredDataDict", "StructuredDataList") == [
        "a",
        "b",
    ]


def test_converter_for_unknown_class(registry: StorageClassRegistry) -> None:
    """Converters can only be registered between registered classes."""
    with pytest.raises(StorageClassError, match="'Nope'"):
        registry.register_converter("Text", "Nope", str)


def test_failing_converter(registry: StorageClassRegistry) -> None:
    """A converter that raises becomes a ConversionError chained to the cause."""
    with pytest.raises(ConversionError, match="failed") as info:
        registry.convert(b"\xff\xfe", "Bytes", "Text")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_converter_wrong_result(registry: StorageClassRegistry) -> None:
    """A converter returning the wrong type is caught."""
    registry.register_converter("Text", "StructuredDataDict", lambda s: [s])
    with pytest.raises(ConversionError, match="returned a list"):
        registry.convert("x", "Text", "StructuredDataDict")


# --- numpy is optional ---------------------------------------------------------


def test_numpy_missing_message(
    registry: StorageClassRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without numpy, NumpyArray use says how to install the extra."""
    data = registry.get("NumpyArray").to_bytes(np.arange(3))
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(StorageClassError, match=r"pip install 'quantum-ledger\[numpy\]'"):
        registry.get("NumpyArray").from_bytes(data)
    with pytest.raises(StorageClassError, match=r"quantum-ledger\[numpy\]"):
        registry.convert([1], "StructuredDataList", "NumpyArray")
    with pytest.raises(StorageClassError, match=r"quantum-ledger\[numpy\]"):
        registry.get("NumpyArray").python_type()


def test_type_check_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking an object against a lazily typed class never imports its module."""
    lazy = StorageClass(
        name="Lazy",
        pytype="not_a_real_module_xyz.Thing",
        extension=".x",
        formatter="test.lazy",
        writer=bytes,
        reader=bytes,
    )
    assert not lazy.is_instance(object())
    assert "not_a_real_module_xyz" not in sys.modules
    with pytest.raises(StorageClassError, match="Lazy"):
        lazy.to_bytes(b"x")
