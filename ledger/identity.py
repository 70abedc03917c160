"""Which datastore a quantum ran with: the root's identity file, recorded in the ledger.

The butler writes ``.qledger-datastore`` (JSON: a random ``id``, the ``name``
and ``created_at``) into its datastore root the first time it starts a quantum
there, and records that identity in the detail of every ``quantum_started``
event (``"datastore_identity": {"id": ..., "name": ..., "root": ...}``).
Recovery, ``verify --datastore`` and a retry check the root they are given
against it before they read or write anything: a root that does not exist, or
carries another id or none, is refused with `DatastoreMismatchError`. The id
travels with the root, so a datastore that was moved or restored elsewhere is
still recognised.

Quanta recorded before identities existed name none. For them a root is
accepted when it exists and holds at least one artifact the quantum recorded
(its inputs' records, the records of its live outputs), or when the quantum
recorded no artifact at all.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ._logging import get_logger
from .datastore import FileDatastore
from .errors import DatastoreMismatchError, PathEscapeError
from .events import EventKind, utc_now
from .records import check_relative_path
from .store.ledger import Ledger

__all__ = [
    "IDENTITY_FILE",
    "DatastoreIdentity",
    "check_datastore_identity",
    "ensure_identity",
    "read_identity",
    "recorded_identity",
    "require_root",
    "started_detail",
]

_log = get_logger(__name__)

#: The identity file's name, at the top of a datastore root.
IDENTITY_FILE = ".qledger-datastore"
#: An identity file is a few lines; anything much larger is not one.
_MAX_SIZE = 1 << 16
_OVERRIDE = "or pass check_datastore=False (qledger: --no-datastore-check) to use this root anyway"


class DatastoreIdentity(BaseModel):
    """The content of a root's identity file."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    #: the name of the datastore that created the file (informative).
    name: str
    created_at: str | None = None


def read_identity(datastore: FileDatastore) -> DatastoreIdentity | None:
    """The identity in the datastore's root; None when the root has no identity file.

    Raises:
        DatastoreMismatchError: the file is there but is not an identity file
            (unreadable, not a regular file, not the JSON the butler writes).
    """
    where = datastore.guard.absolute(IDENTITY_FILE)
    try:
        data = datastore.guard.read_bytes(IDENTITY_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, PathEscapeError) as e:
        raise DatastoreMismatchError(f"datastore identity file {where} cannot be read: {e}") from e
    try:
        if len(data) > _MAX_SIZE:
            raise ValueError(f"{len(data)} bytes")
        return DatastoreIdentity.model_validate(json.loads(data))
    except (ValueError, ValidationError) as e:
        raise DatastoreMismatchError(
            f"datastore identity file {where} is not one quantum-ledger writes "
            f"({str(e).splitlines()[0]}); ledgers that recorded this root's identity "
            "cannot recognise it any more: restore the file from a backup"
        ) from e


def ensure_identity(datastore: FileDatastore) -> DatastoreIdentity | None:
    """The root's identity, written first if the root has none (creating the root).

    None when it cannot be written (a read-only root, say): the quantum then
    runs without a recorded identity, as quanta did before identities existed.

    Raises:
        DatastoreMismatchError: the identity file there is damaged.
    """
    found = read_identity(datastore)
    if found is not None:
        return found
    identity = DatastoreIdentity(id=uuid.uuid4(), name=datastore.name, created_at=utc_now())
    text = identity.model_dump_json(indent=2) + "\n"
    try:
        written = datastore.guard.write_new(IDENTITY_FILE, text.encode(), fsync=datastore.fsync)
    except (OSError, PathEscapeError) as e:
        _log.warning("datastore_identity_not_written", root=str(datastore.root), error=str(e))
        return None
    # Another process may have written its own a moment ago: theirs is the identity.
    return identity if written else read_identity(datastore)


def started_detail(datastore: FileDatastore, identity: DatastoreIdentity) -> dict[str, Any]:
    """What a ``quantum_started`` detail records about the datastore."""
    return {
        "datastore_identity": {
            "id": str(identity.id),
            "name": datastore.name,
            "root": str(datastore.root),
        }
    }


def recorded_identity(led: Ledger, quantum_id: str) -> dict[str, Any] | None:
    """The datastore identity the quantum's latest attempt recorded, if any attempt did.

    Raises:
        MalformedDetailError: a ``quantum_started`` row breaks the ledger's rules
            (rows are checked as every reader checks them).
    """
    found: dict[str, Any] | None = None
    for event in led.events(quantum_id, kind=EventKind.QUANTUM_STARTED.value):
        value = (event.detail or {}).get("datastore_identity")
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            found = value
    return found


def require_root(datastore: FileDatastore, context: str = "") -> None:
    """Refuse a datastore root that does not exist (``context`` goes into the message).

    Raises:
        DatastoreMismatchError: the root is not a directory.
    """
    if not datastore.root.is_dir():
        raise DatastoreMismatchError(
            f"datastore root {datastore.root} does not exist{context}: check the path, {_OVERRIDE}"
        )


def check_datastore_identity(led: Ledger, quantum_id: str, datastore: FileDatastore) -> None:
    """Refuse a datastore root that is missing or is not the one the quantum ran with.

    Raises:
        DatastoreMismatchError: the root does not exist, or carries another
            identity (or none) than the quantum recorded; for a quantum that
            recorded none, no artifact it recorded is found under the root.
        MalformedDetailError: a ``quantum_started`` detail is not JSON.
    """
    recorded = recorded_identity(led, quantum_id)
    ran_with = f" (recorded: {recorded.get('root')})" if recorded is not None else ""
    quantum = f"quantum {quantum_id} in {led.target}"
    require_root(datastore, f"; {quantum} ran with another root{ran_with}")
    if recorded is not None:
        found = read_identity(datastore)
        if found is None or str(found.id) != recorded["id"]:
            has = "has no identity file" if found is None else f"is datastore {found.id}"
            raise DatastoreMismatchError(
                f"datastore root {datastore.root} {has}, but {quantum} ran with datastore "
                f"{recorded['id']}{ran_with}: give the root it ran with, {_OVERRIDE}"
            )
        return
    paths = _recorded_paths(led, quantum_id, datastore.name)
    if paths and not any(_present(datastore, path) for path in paths):
        raise DatastoreMismatchError(
            f"none of the {len(paths)} artifacts {quantum} recorded is under datastore root "
            f"{datastore.root}, so it is not the root the quantum ran with (the ledger names "
            f"none: it was recorded before datastore identities): give the root it ran "
            f"with, {_OVERRIDE}"
        )


def _recorded_paths(led: Ledger, quantum_id: str, name: str) -> list[str]:
    """Paths of the artifacts a quantum recorded in datastore ``name``: inputs, live outputs."""
    data = led.quantum(quantum_id).datastore_records.get(name)
    paths = [r.path for records in data.records.values() for r in records] if data else []
    for record_name, rows in led.fold(quantum_id).records.values():
        if record_name == name:
            paths.extend(row["path"] for row in rows if isinstance(row.get("path"), str))
    return paths


def _present(datastore: FileDatastore, path: str) -> bool:
    try:
        return datastore.guard.locate(check_relative_path(path))[1] is not None
    except PathEscapeError:
        return False
