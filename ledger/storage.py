"""Storage classes: how a Python object becomes the bytes of an artifact, and back.

A `StorageClass` names a Python type and a formatter (file extension, a writer
to bytes and a reader from bytes), and says which read parameters and which
components it understands. A `StorageClassRegistry` holds storage classes by
name and the converters between them. `default_registry()` returns a fresh
registry with the built-in classes:

======================  =================  =========  ====================================
name                    Python type        file       read parameters
======================  =================  =========  ====================================
``StructuredDataDict``  ``dict``           ``.json``  ``{"keys": [...]}``: a sub-dict
``StructuredDataList``  ``list``           ``.json``  ``{"slice": [start, stop(, step)]}``
``Text``                ``str``            ``.txt``   ``{"slice": [...]}`` (characters)
``Bytes``               ``bytes``          ``.bin``   ``{"slice": [...]}`` (bytes)
``NumpyArray``          ``numpy.ndarray``  ``.npy``   ``{"slice": [...]}`` (first axis)
======================  =================  =========  ====================================

Only ``StructuredDataDict`` has components: component ``wcs`` of a dict is its
key ``"wcs"``. JSON is written with sorted keys and no spaces, so the same
object always gives the same bytes and the same checksum. numpy is imported
only when a ``NumpyArray`` is read, written or converted.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConversionError, InvalidParameterError, LedgerError, StorageClassError

__all__ = [
    "DEFAULT_CONVERTERS",
    "DEFAULT_STORAGE_CLASSES",
    "Converter",
    "StorageClass",
    "StorageClassRegistry",
    "default_registry",
]

#: A function turning an object of one storage class into one of another.
Converter = Callable[[Any], Any]

_NUMPY_HINT = "storage class NumpyArray needs numpy: pip install 'quantum-ledger[numpy]'"


@dataclass(frozen=True)
class StorageClass:
    """A named Python type with its formatter, read parameters and components.

    Args:
        name: the storage class name used by dataset types (``"StructuredDataDict"``).
        pytype: the Python type, or its dotted name (``"numpy.ndarray"``) so that
            an optional dependency is imported only when the class is used.
        extension: the artifact's file extension, with its dot.
        formatter: a stable formatter name recorded with each artifact.
        writer: turns a valid object into the artifact's bytes.
        reader: turns the artifact's bytes back into an object.
        parameters: the read parameter names ``parameter_handler`` accepts.
        parameter_handler: applies validated read parameters to a read object.
        component_getter: extracts a named component from a read object.
    """

    name: str
    pytype: type[Any] | str
    extension: str
    formatter: str
    writer: Callable[[Any], bytes]
    reader: Callable[[bytes], Any]
    parameters: frozenset[str] = frozenset()
    parameter_handler: Callable[[Any, Mapping[str, Any]], Any] | None = None
    component_getter: Callable[[Any, str], Any] | None = None

    @property
    def type_name(self) -> str:
        """The dotted name of the Python type, for messages."""
        if isinstance(self.pytype, str):
            return self.pytype
        module = self.pytype.__module__
        qualname = self.pytype.__qualname__
        return qualname if module == "builtins" else f"{module}.{qualname}"

    def python_type(self) -> type[Any]:
        """The Python type, importing its module if it was given by name.

        Raises:
            StorageClassError: the module cannot be imported (an optional extra
                that is not installed).
        """
        if not isinstance(self.pytype, str):
            return self.pytype
        module_name, _, attr = self.pytype.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = _NUMPY_HINT if module_name == "numpy" else f"install {module_name!r}"
            raise StorageClassError(f"storage class {self.name!r}: {hint}") from e
        result: type[Any] = getattr(module, attr)
        return result

    def is_instance(self, obj: Any) -> bool:
        """True if ``obj`` is of this class's Python type (never imports anything)."""
        if isinstance(self.pytype, str):
            module_name, _, attr = self.pytype.rpartition(".")
            # An object of a type from a module nobody imported cannot exist.
            module = sys.modules.get(module_name)
            pytype = getattr(module, attr, None) if module is not None else None
            return isinstance(pytype, type) and isinstance(obj, pytype)
        return isinstance(obj, self.pytype)

    def to_bytes(self, obj: Any) -> bytes:
        """Validate ``obj`` and serialize it.

        Raises:
            StorageClassError: ``obj`` has the wrong type or cannot be serialized.
        """
        if not self.is_instance(obj):
            raise StorageClassError(
                f"cannot store a {type(obj).__name__} as storage class {self.name!r}, "
                f"which holds {self.type_name} objects; pass a {self.type_name} or use a "
                "dataset type whose storage class matches the object"
            )
        try:
            return self.writer(obj)
        except LedgerError:
            raise
        except Exception as e:
            raise StorageClassError(
                f"cannot serialize this {type(obj).__name__} as storage class {self.name!r}: {e}"
            ) from e

    def from_bytes(self, data: bytes) -> Any:
        """Deserialize an artifact's bytes (errors of the reader propagate)."""
        return self.reader(data)

    def apply_parameters(self, obj: Any, parameters: Mapping[str, Any] | None) -> Any:
        """Apply read parameters to ``obj``; no parameters returns it unchanged.

        Raises:
            InvalidParameterError: a parameter name this class does not know, or a
                value it cannot use.
        """
        if not parameters:
            return obj
        unknown = sorted(set(parameters) - self.parameters)
        if unknown or self.parameter_handler is None:
            known = ", ".join(sorted(self.parameters)) or "none"
            raise InvalidParameterError(
                f"storage class {self.name!r} does not understand read parameter(s) "
                f"{', '.join(unknown or sorted(parameters))}; it accepts: {known}"
            )
        return self.parameter_handler(obj, parameters)

    @property
    def has_components(self) -> bool:
        """True if components can be read from objects of this class."""
        return self.component_getter is not None

    def get_component(self, obj: Any, component: str) -> Any:
        """Extract ``component`` from a read object.

        Raises:
            StorageClassError: this class has no components, or the object
                lacks this one.
        """
        if self.component_getter is None:
            raise StorageClassError(
                f"storage class {self.name!r} has no components; cannot read {component!r}"
            )
        return self.component_getter(obj, component)


# --- the built-in formats -----------------------------------------------------


def _json_bytes(obj: Any) -> bytes:
    # Sorted keys and fixed separators: the same object always gives the same
    # bytes, so checksums are reproducible. NaN and infinity are not JSON.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _json_reader(pytype: type[Any]) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        obj = json.loads(data.decode("utf-8"))
        if not isinstance(obj, pytype):
            raise ValueError(f"artifact holds JSON {type(obj).__name__}, not {pytype.__name__}")
        return obj

    return read


def _as_slice(value: Any) -> slice:
    if isinstance(value, slice):
        return value
    if (
        isinstance(value, list | tuple)
        and 1 <= len(value) <= 3
        and all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value)
    ):
        return slice(*value)
    raise InvalidParameterError(
        f"read parameter 'slice' must be [start, stop] or [start, stop, step] "
        f"(integers or null), got {value!r}"
    )


def _slice_handler(obj: Any, parameters: Mapping[str, Any]) -> Any:
    return obj[_as_slice(parameters["slice"])]


def _keys_handler(obj: Any, parameters: Mapping[str, Any]) -> Any:
    keys = parameters["keys"]
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise InvalidParameterError(f"read parameter 'keys' must be a list of keys, got {keys!r}")
    wanted = list(keys)
    missing = [k for k in wanted if k not in obj]
    if missing:
        raise InvalidParameterError(
            f"read parameter 'keys' names keys the dict does not have: {missing!r}; "
            f"it has: {sorted(obj)!r}"
        )
    return {k: obj[k] for k in wanted}


def _dict_component(obj: Any, component: str) -> Any:
    try:
        return obj[component]
    except KeyError:
        raise StorageClassError(
            f"component {component!r} is not a key of this StructuredDataDict; "
            f"its keys are: {sorted(obj)!r}"
        ) from None


def _numpy() -> Any:
    """Import numpy on first use; the ``numpy`` extra is optional."""
    try:
        return importlib.import_module("numpy")
    except ImportError as e:
        raise StorageClassError(_NUMPY_HINT) from e


def _npy_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    # No pickles: an artifact must never execute code when it is read.
    _numpy().save(buffer, obj, allow_pickle=False)
    return buffer.getvalue()


def _npy_reader(data: bytes) -> Any:
    return _numpy().load(io.BytesIO(data), allow_pickle=False)


def _text_bytes(obj: Any) -> bytes:
    return str(obj).encode("utf-8")


def _text_reader(data: bytes) -> Any:
    return data.decode("utf-8")


def _identity_bytes(obj: Any) -> bytes:
    return bytes(obj)


_SLICE = frozenset({"slice"})

#: The storage classes every registry starts with (immutable: no global state).
DEFAULT_STORAGE_CLASSES: tuple[StorageClass, ...] = (
    StorageClass(
        name="StructuredDataDict",
        pytype=dict,
        extension=".json",
        formatter="ledger.json",
        writer=_json_bytes,
        reader=_json_reader(dict),
        parameters=frozenset({"keys"}),
        parameter_handler=_keys_handler,
        component_getter=_dict_component,
    ),
    StorageClass(
        name="StructuredDataList",
        pytype=list,
        extension=".json",
        formatter="ledger.json",
        writer=_json_bytes,
        reader=_json_reader(list),
        parameters=_SLICE,
        parameter_handler=_slice_handler,
    ),
    StorageClass(
        name="Text",
        pytype=str,
        extension=".txt",
        formatter="ledger.text",
        writer=_text_bytes,
        reader=_text_reader,
        parameters=_SLICE,
        parameter_handler=_slice_handler,
    ),
    StorageClass(
        name="Bytes",
        pytype=bytes,
        extension=".bin",
        formatter="ledger.bytes",
        writer=_identity_bytes,
        reader=bytes,
        parameters=_SLICE,
        parameter_handler=_slice_handler,
    ),
    StorageClass(
        name="NumpyArray",
        pytype="numpy.ndarray",
        extension=".npy",
        formatter="ledger.npy",
        writer=_npy_bytes,
        reader=_npy_reader,
        parameters=_SLICE,
        parameter_handler=_slice_handler,
    ),
)


def _list_to_array(obj: Any) -> Any:
    return _numpy().asarray(obj)


def _array_to_list(obj: Any) -> Any:
    return obj.tolist()


def _dict_to_text(obj: Any) -> Any:
    return _json_bytes(obj).decode("utf-8")


def _text_to_bytes(obj: Any) -> Any:
    return obj.encode("utf-8")


def _bytes_to_text(obj: Any) -> Any:
    return obj.decode("utf-8")


#: The converters every default registry starts with: (from, to) -> function.
DEFAULT_CONVERTERS: Mapping[tuple[str, str], Converter] = {
    ("StructuredDataList", "NumpyArray"): _list_to_array,
    ("NumpyArray", "StructuredDataList"): _array_to_list,
    ("StructuredDataDict", "Text"): _dict_to_text,
    ("Text", "Bytes"): _text_to_bytes,
    ("Bytes", "Text"): _bytes_to_text,
}


class StorageClassRegistry:
    """Storage classes by name, and the converters between them."""

    def __init__(
        self,
        storage_classes: Iterable[StorageClass] = (),
        converters: Mapping[tuple[str, str], Converter] | None = None,
    ) -> None:
        self._classes: dict[str, StorageClass] = {}
        self._converters: dict[tuple[str, str], Converter] = {}
        for storage_class in storage_classes:
            self.register(storage_class)
        for (source, target), func in (converters or {}).items():
            self.register_converter(source, target, func)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[StorageClass]:
        return iter(self._classes.values())

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"StorageClassRegistry({sorted(self._classes)!r})"

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)

    def copy(self) -> StorageClassRegistry:
        """An independent registry with the same classes and converters."""
        return StorageClassRegistry(self._classes.values(), self._converters)

    def register(self, storage_class: StorageClass, *, replace: bool = False) -> StorageClass:
        """Add a storage class; registering the same definition twice is a no-op.

        Raises:
            StorageClassError: another class has that name and ``replace`` is false.
        """
        existing = self._classes.get(storage_class.name)
        if existing is not None and existing != storage_class and not replace:
            raise StorageClassError(
                f"a different storage class named {storage_class.name!r} is already "
                "registered; pass replace=True to replace it"
            )
        self._classes[storage_class.name] = storage_class
        return storage_class

    def get(self, name: str | StorageClass) -> StorageClass:
        """The storage class of that name.

        Raises:
            StorageClassError: no class of that name is registered.
        """
        key = name.name if isinstance(name, StorageClass) else name
        try:
            return self._classes[key]
        except KeyError:
            raise StorageClassError(
                f"unknown storage class {key!r}; registered: {', '.join(self.names())}. "
                "Register it with StorageClassRegistry.register(StorageClass(...)) and pass "
                "the registry as FileDatastore(..., storage_classes=registry)"
            ) from None

    def for_object(self, obj: Any) -> StorageClass | None:
        """The first registered class whose Python type ``obj`` has, or None."""
        for storage_class in self._classes.values():
            if storage_class.is_instance(obj):
                return storage_class
        return None

    def register_converter(
        self, from_name: str, to_name: str, func: Converter, *, replace: bool = False
    ) -> None:
        """Register ``func`` to convert objects of ``from_name`` into ``to_name``.

        Raises:
            StorageClassError: a name is not registered, or a different converter
                exists for the pair and ``replace`` is false.
        """
        self.get(from_name)
        self.get(to_name)
        existing = self._converters.get((from_name, to_name))
        if existing is not None and existing is not func and not replace:
            raise StorageClassError(
                f"a converter from {from_name!r} to {to_name!r} is already registered; "
                "pass replace=True to replace it"
            )
        self._converters[(from_name, to_name)] = func

    def has_converter(self, from_name: str, to_name: str) -> bool:
        """True if ``convert`` can go from one class to the other."""
        return from_name == to_name or (from_name, to_name) in self._converters

    def convert(self, obj: Any, from_name: str, to_name: str) -> Any:
        """Convert ``obj`` from one storage class to another (same name: unchanged).

        Raises:
            StorageClassError: a name is not registered.
            ConversionError: no converter for the pair, the converter failed, or
                it returned an object of the wrong type.
        """
        source, target = self.get(from_name), self.get(to_name)
        if source.name == target.name:
            return obj
        func = self._converters.get((source.name, target.name))
        if func is None:
            available = sorted(t for s, t in self._converters if s == source.name)
            raise ConversionError(
                f"no converter from storage class {source.name!r} to {target.name!r} "
                f"(from {source.name!r} one can convert to: {', '.join(available) or 'nothing'}); "
                f"register one with registry.register_converter({source.name!r}, "
                f"{target.name!r}, func)"
            )
        try:
            result = func(obj)
        except LedgerError:
            raise
        except Exception as e:
            raise ConversionError(
                f"converting {source.name!r} to {target.name!r} failed: {e}"
            ) from e
        if not target.is_instance(result):
            raise ConversionError(
                f"the converter from {source.name!r} to {target.name!r} returned a "
                f"{type(result).__name__}, not a {target.type_name}"
            )
        return result


def default_registry() -> StorageClassRegistry:
    """A fresh registry with the built-in storage classes and converters."""
    return StorageClassRegistry(DEFAULT_STORAGE_CLASSES, DEFAULT_CONVERTERS)
