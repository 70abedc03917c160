"""What an upstream datastore holds and writes, read for the ledger without slowing a put.

Upstream's ``put`` returns the ref, not the datastore record it wrote, and
reading the record back (``export_records``) costs about half a put. The
`DatastoreTap` learns it from the datastore's own in-memory path instead: each
file datastore of the chain passes every record it registers through
``addStoredItemInfo(refs, infos, ...)``, and the tap wraps that method of
*this* datastore instance to note the records of the put in progress, after
the datastore stored them. Should a release change that path (nothing noted for
a put that succeeded), the tap reads the records back as before: slower,
never wrong. ``tests/test_lsst.py`` pins that the in-memory path is taken.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..recorder import Records
from ..records import RECORDS_TABLE
from .convert import record_dict

__all__ = ["DatastoreTap"]


def _children(datastore: Any) -> list[Any]:
    """The datastores of a chain, depth first (a lone datastore is its own chain)."""
    inner = getattr(datastore, "datastores", None)
    if not inner:
        return [datastore]
    return [leaf for child in inner for leaf in _children(child)]


class DatastoreTap:
    """The upstream butler's datastore, as the ledger needs it.

    Args:
        butler: the upstream ``LimitedButler`` (its ``_datastore``).
    """

    def __init__(self, butler: Any) -> None:
        self._datastore = butler._datastore
        #: The names upstream's extract_provenance_data keys its records by: every
        #: datastore of the chain that exports records (file datastores), in order.
        self.names: tuple[str, ...] = tuple(self._datastore.export_records([]))
        if not self.names:
            self.names = tuple(butler.get_datastore_names())
        #: The opaque table of each, where not upstream's default (``file_datastore_records``).
        self.tables: dict[str, str] = {}
        for child in _children(self._datastore):
            table = getattr(getattr(child, "_table", None), "name", None)
            name = getattr(child, "name", None)
            if name in self.names and isinstance(table, str) and table != RECORDS_TABLE:
                self.tables[name] = table
        #: Records noted for the put in progress, as upstream's objects (None: no put).
        self._noting: dict[str, list[Any]] | None = None
        self._noting_id: uuid.UUID | None = None
        for child in _children(self._datastore):
            register = getattr(child, "addStoredItemInfo", None)
            if callable(register) and getattr(child, "name", None) in self.names:
                child.addStoredItemInfo = self._noter(child.name, register)

    def _noter(self, name: str, register: Callable[..., Any]) -> Callable[..., Any]:
        """``register`` (a datastore's addStoredItemInfo), also noting what it stored."""

        @functools.wraps(register)
        def noted(refs: Iterable[Any], infos: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
            refs, infos = list(refs), list(infos)
            result = register(refs, infos, *args, **kwargs)
            if self._noting is not None:
                for ref, info in zip(refs, infos, strict=False):
                    if ref.id == self._noting_id:
                        # Converted after the put returns: nothing of ours may fail in it.
                        self._noting.setdefault(name, []).append(info)
            return result

        return noted

    def put(self, ref: Any, write: Callable[[], Any]) -> tuple[Any, Records]:
        """Run ``write`` (upstream's put of ``ref``): its result and the records it wrote."""
        self._noting, self._noting_id = {}, ref.id
        try:
            result = write()
            noted = self._noting
        finally:
            self._noting, self._noting_id = None, None
        written = {name: [record_dict(i) for i in infos] for name, infos in noted.items()}
        if not written:  # the in-memory path said nothing: read the records back
            written = self.held([ref]).get(ref.id, {})
        return result, written or {self.names[0] if self.names else "datastore": []}

    def held(self, refs: Iterable[Any]) -> dict[uuid.UUID, dict[str, list[dict[str, Any]]]]:
        """Per dataset id, the records each datastore holds now (read back, not guessed)."""
        found: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
        for name, data in self._datastore.export_records(list(refs)).items():
            for dataset_id, tables in data.records.items():
                rows = [record_dict(i) for infos in tables.values() for i in infos]
                if rows:
                    found.setdefault(dataset_id, {})[name] = rows
        return found

    def exists(self, ref: Any) -> bool:
        """Whether the artifact of ``ref`` exists."""
        return bool(self._datastore.exists(ref))
