"""quantum-ledger: every butler call of a quantum is an immutable event; provenance is replay.

The public face is re-exported here; everything else is reachable from its
module, and names with a leading underscore are implementation details.
"""

from ._version import __version__
from .butler import DeferredDatasetHandle, QuantumBackedButler
from .datastore import FileDatastore
from .errors import (
    ConversionError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeMismatchError,
    DatastoreMismatchError,
    IngestConflictError,
    InvalidHeadError,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerDiskFullError,
    LedgerError,
    LedgerNotFoundError,
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
from .events import Event, EventKind, Outcome
from .model import DataId, DatasetRef, DatasetType
from .provenance import QuantumProvenanceData
from .quantum import Quantum
from .records import DatastoreRecordData, SerializedDatastoreRecordData, StoredFileInfo
from .storage import StorageClass
from .store.lease import LeasePolicy
from .store.ledger import Head, Ledger, VerifyReport

__all__ = [
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
    "LedgerCorruptError",
    "LedgerDiskFullError",
    "LedgerError",
    "LedgerNotFoundError",
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
