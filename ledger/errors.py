"""The error tree of quantum-ledger.

Every error the library raises on purpose is a `LedgerError`. Where a caller
written for the upstream butler expects a builtin exception type (``put`` of an
unpredicted output raises ``RuntimeError``; a component ref in
``pruneDatasets`` raises ``ValueError``), the subclass also inherits that
builtin so both ``except`` clauses work. This module imports nothing.
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorruptError",
    "ButlerClosedError",
    "ConversionError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetTypeMismatchError",
    "DatastoreMismatchError",
    "IngestConflictError",
    "InvalidHeadError",
    "InvalidParameterError",
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
    "MissingDependencyError",
    "NoWorkFound",
    "NotACentralLedgerError",
    "NotALedgerError",
    "NotARegularFileError",
    "OutOfRangeError",
    "OverwriteRefusedError",
    "PathEscapeError",
    "QuantumGraphError",
    "QuantumStillRunningError",
    "QueryError",
    "QueryRefusedError",
    "QueryTimeoutError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SettingsError",
    "StorageClassError",
    "TamperedError",
    "UnboundQuantumError",
    "UnknownAttemptError",
    "UnknownQuantumError",
    "UnpredictedOutputError",
]


class LedgerError(Exception):
    """Root of every error raised on purpose by quantum-ledger."""


# --- opening and reading a ledger -------------------------------------------


class LedgerNotFoundError(LedgerError, FileNotFoundError):
    """The ledger file does not exist (and the caller did not ask to create it)."""


class LedgerUnavailableError(LedgerError):
    """The ledger's database server cannot be reached, or the connection to it was lost.

    Refused, down, a wrong address, no answer within the connect timeout, or a
    session ended by the server mid-command (restarted, ``pg_terminate_backend``).
    """


class LedgerUrlError(LedgerError, ValueError):
    """A ledger URL that cannot be used: malformed, an unknown database, or no driver."""


class NotALedgerError(LedgerError):
    """The file is not SQLite, or is SQLite without the ledger tables."""


class LedgerCorruptError(LedgerError):
    """The ledger is truncated, damaged, or holds rows the library cannot read."""


class MalformedRowError(LedgerCorruptError):
    """A row holds a value no recorder writes: a wrong type, a bad id, time or JSON."""


class MalformedDetailError(MalformedRowError):
    """An event's ``detail`` column is not valid JSON (or not the JSON its kind records)."""


class SchemaTooOldError(LedgerError):
    """The ledger's schema is older than the library's; ``qledger upgrade`` fixes it."""


class SchemaTooNewError(LedgerError):
    """The ledger was written by a newer library; this one refuses to touch it."""


class TamperedError(LedgerCorruptError):
    """A hash chain does not verify: a row was edited, removed or reordered."""


class LedgerDiskFullError(LedgerError):
    """The filesystem (or database server) holding the ledger has no space left.

    Nothing recorded is lost: a ``batch``-mode writer keeps its buffered events
    and writes them, in order, on the next ``flush`` or ``close`` once there is
    space again.
    """


class LedgerReadOnlyError(LedgerError):
    """A write was attempted on a ledger opened for reading, or one this user may not write."""


class LedgerNotReadableError(LedgerError, PermissionError):
    """The ledger cannot be read without writing, or without a permission this user lacks.

    Readers never write (not even SQLite's ``-shm``): a WAL whose ``-shm`` is
    missing, a rollback journal left by a dead writer, or a file without read
    permission is this error, naming what a user with write access can do.
    """


class LedgerChangedError(LedgerError):
    """A writer changed a ledger file while it was read without locks; read it again.

    A ledger that no writer holds is read ``immutable`` (no locks, no files). If
    a writer starts and checkpoints meanwhile, what was read could mix two
    moments, so it is refused; a second read sees the writer and reads safely.
    """


class LedgerBusyError(LedgerError):
    """Another writer holds the ledger (e.g. a second writer in ``batch`` mode)."""


class UnknownQuantumError(LedgerError, LookupError):
    """The ledger holds no quantum with that id, or several when one was implied."""


class UnknownAttemptError(LedgerError, LookupError):
    """A quantum has no such attempt (``replay(attempt=5)`` of a quantum run twice)."""


class IngestConflictError(LedgerError):
    """Two sources disagree on the same ``(quantum_id, quantum_seq)``."""


class QueryError(LedgerError):
    """A query given to ``qledger sql`` does not parse or fails (an unknown table, ...)."""


class QueryRefusedError(QueryError):
    """A query that could write, leave its read-only session, or call an unsafe function."""


class QueryTimeoutError(QueryError):
    """A query ran longer than its timeout and was stopped."""


class QuantumStillRunningError(LedgerBusyError):
    """The quantum's latest attempt may still be running, so this step is refused.

    Raised by a new attempt (``initialize`` / ``resume``) and by recovery's
    adopt / remove while the running attempt's lease is fresh (on any host),
    or, for a ledger without a lease, while its pid lives on this host.
    """


class NotACentralLedgerError(LedgerError):
    """Ingest was pointed at a butler's ledger, not a central one: it would change it for good."""


# --- arguments and files given by the caller ---------------------------------


class OverwriteRefusedError(LedgerError):
    """An output path names a ledger, or an input of the same command: writing would destroy it."""


class OutOfRangeError(LedgerError, ValueError):
    """A number beyond what a ledger can hold (a quantum_seq, attempt or seq past 2**63 - 1)."""


class SettingsError(LedgerError, ValueError):
    """A ``QLEDGER_*`` environment variable or the qledger config file holds what cannot be used."""


class InvalidHeadError(LedgerError, ValueError):
    """A head given to verify (file or inline) is not the JSON that ``qledger head`` prints."""


# --- the butler and its datastore -------------------------------------------


class UnpredictedOutputError(LedgerError, RuntimeError):
    """``put`` of a dataset that the quantum did not predict as an output."""


class DatasetExistsError(LedgerError, RuntimeError):
    """An artifact for this dataset already exists; it is never overwritten."""


class DatasetNotFoundError(LedgerError, LookupError):
    """The datastore has no record of the dataset."""


class DatasetTypeMismatchError(LedgerError, ValueError):
    """A ref's dataset type differs from the one the quantum predicted for its id."""


class ButlerClosedError(LedgerError):
    """A call on a butler after its ``close()``: refused before it reached any datastore."""


class PathEscapeError(LedgerError):
    """A datastore record's path is absolute or leaves the datastore root.

    Deliberately not a ValueError: pydantic would wrap it in a ValidationError
    and callers would lose the named class.
    """


class DatastoreMismatchError(LedgerError):
    """The datastore root given is missing, or is not the datastore a quantum ran with.

    The butler records the identity of its datastore (the id in the root's
    ``.qledger-datastore`` file) when a quantum starts; recovery, ``verify
    --datastore`` and a retry refuse a root that does not carry it.
    """


class StorageClassError(LedgerError, ValueError):
    """An unknown storage class, or an object of the wrong type for one.

    Not a LookupError on purpose: a misconfigured storage class is an error of
    the caller, not a dataset that is missing (which the butler would record as
    unavailable).
    """


class ConversionError(LedgerError, TypeError):
    """No converter is registered between two storage classes, or it failed."""


class InvalidParameterError(LedgerError, ValueError):
    """A read parameter the storage class does not know, or a request it cannot honour."""


class MissingDependencyError(LedgerError, ImportError):
    """An optional package a feature needs is not installed (the message names the extra)."""


class ArtifactCorruptError(LedgerError, OSError):
    """An artifact's size, checksum or content does not match its datastore record.

    An OSError so that the butler counts a damaged artifact as unavailable, as it
    does a missing one.
    """


class NotARegularFileError(ArtifactCorruptError):
    """A FIFO, device, directory or socket where an artifact (always a regular file) should be.

    Found before anything is read from it, so it never blocks; an OSError, as
    `ArtifactCorruptError`, so the butler counts the dataset as unavailable.
    """


# --- running an upstream quantum graph (ledger.lsst) -------------------------


class QuantumGraphError(LedgerError):
    """A quantum graph that cannot be read, or quantum ids (``--qgraph-node-id``) not in it."""


class UnboundQuantumError(LedgerError):
    """The butler factory was called for another quantum than the one its executor runs."""


# --- signals from tasks (not errors of the library) ---------------------------


class NoWorkFound(Exception):  # noqa: N818 -- upstream's name (lsst.pipe.base.NoWorkFound)
    """Raised by a task that finds nothing to do: a success with the ``no_work`` caveat.

    Not a `LedgerError`: the task raises it, not the library. The butler treats
    any exception whose class (or a base class) is named ``NoWorkFound`` the same
    way, so upstream's ``lsst.pipe.base.NoWorkFound`` needs no import here.
    """
