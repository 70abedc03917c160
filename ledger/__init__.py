"""quantum-ledger: every butler call of a quantum is an immutable event; provenance is replay.

The public face is re-exported here; everything else is reachable from its
module, and names with a leading underscore are implementation details.
Names are imported when first used (PEP 562), so that ``import ledger.errors``
or the ``qledger`` command line do not pay for the butler, SQLAlchemy and
Alembic when they do not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ButlerClosedError,
    ConversionError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeMismatchError,
    DatastoreMismatchError,
    IngestConflictError,
    InvalidHeadError,
    LedgerBusyError,
    LedgerChangedError,
    LedgerCorruptError,
    LedgerDiskFullError,
    LedgerError,
    LedgerNotFoundError,
    LedgerNotReadableError,
    LedgerReadOnlyError,
    LedgerUnavailableError,
    LedgerUrlError,
    MalformedDetailError,
    MalformedRowError,
    NotACentralLedgerError,
    NotALedgerError,
    NotARegularFileError,
    OutOfRangeError,
    OverwriteRefusedError,
    PathEscapeError,
    QuantumStillRunningError,
    SchemaTooNewError,
    SchemaTooOldError,
    SettingsError,
    StorageClassError,
    TamperedError,
    UnknownAttemptError,
    UnknownQuantumError,
    UnpredictedOutputError,
)

if TYPE_CHECKING:
    from .butler import DeferredDatasetHandle, QuantumBackedButler
    from .datastore import FileDatastore
    from .events import Event, EventKind, Outcome
    from .model import DataId, DatasetRef, DatasetType
    from .provenance import QuantumProvenanceData
    from .quantum import Quantum
    from .records import (
        DatastoreRecordData,
        SerializedDatastoreRecordData,
        StoredFileInfo,
    )
    from .storage import StorageClass
    from .store.lease import LeasePolicy
    from .store.ledger import Head, Ledger, VerifyReport

#: Where each lazily imported public name lives.
_LAZY = {
    "DataId": ".model",
    "DatasetRef": ".model",
    "DatasetType": ".model",
    "DatastoreRecordData": ".records",
    "DeferredDatasetHandle": ".butler",
    "Event": ".events",
    "EventKind": ".events",
    "FileDatastore": ".datastore",
    "Head": ".store.ledger",
    "LeasePolicy": ".store.lease",
    "Ledger": ".store.ledger",
    "Outcome": ".events",
    "Quantum": ".quantum",
    "QuantumBackedButler": ".butler",
    "QuantumProvenanceData": ".provenance",
    "SerializedDatastoreRecordData": ".records",
    "StorageClass": ".storage",
    "StoredFileInfo": ".records",
    "VerifyReport": ".store.ledger",
}

__all__ = [
    "ButlerClosedError",
    "ConversionError",
    "DataId",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetRef",
    "DatasetType",
    "DatasetTypeMismatchError",
    "DatastoreMismatchError",
    "DatastoreRecordData",
    "DeferredDatasetHandle",
    "Event",
    "EventKind",
    "FileDatastore",
    "Head",
    "IngestConflictError",
    "InvalidHeadError",
    "LeasePolicy",
    "Ledger",
    "LedgerBusyError",
    "LedgerChangedError",
    "LedgerCorruptError",
    "LedgerDiskFullError",
    "LedgerError",
    "LedgerNotFoundError",
    "LedgerNotReadableError",
    "LedgerReadOnlyError",
    "LedgerUnavailableError",
    "LedgerUrlError",
    "MalformedDetailError",
    "MalformedRowError",
    "NotACentralLedgerError",
    "NotALedgerError",
    "NotARegularFileError",
    "OutOfRangeError",
    "Outcome",
    "OverwriteRefusedError",
    "PathEscapeError",
    "Quantum",
    "QuantumBackedButler",
    "QuantumProvenanceData",
    "QuantumStillRunningError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SerializedDatastoreRecordData",
    "SettingsError",
    "StorageClass",
    "StorageClassError",
    "StoredFileInfo",
    "TamperedError",
    "UnknownAttemptError",
    "UnknownQuantumError",
    "UnpredictedOutputError",
    "VerifyReport",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (and keep it here)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
