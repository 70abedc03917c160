"""`FileDatastore`: artifacts as files under a root, found only through records.

Each dataset is one file whose path, relative to the root, is derived from its
run, dataset type, data ID and id. Writes are atomic and never replace an
existing artifact: the bytes go to an unnamed temporary file in the target
directory, are fsynced, and are then hard-linked to the final name (which fails
if that name exists, even when another process won the race); a failed write
leaves nothing behind. Reads go only through the records this datastore wrote
or imported. Every file operation goes through one `PathGuard`, which resolves
the path at the moment of use and refuses any that a symlink leads out of the
root; only regular files are ever opened as artifacts.

Records live in memory in each instance; several instances (in several
processes) may share one root, since the files are the only shared state.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._logging import get_logger
from .errors import (
    ArtifactCorruptError,
    ConversionError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidParameterError,
    LedgerError,
    NotARegularFileError,
    PathEscapeError,
)
from .model import DatasetRef
from .pathguard import PathGuard, file_kind
from .records import (
    DatastoreRecordData,
    SerializedDatastoreRecordData,
    StoredFileInfo,
    check_relative_path,
)
from .storage import StorageClass, StorageClassRegistry, default_registry

__all__ = ["FileDatastore", "RecordsInput"]

_log = get_logger(__name__)

#: What `FileDatastore.import_records` accepts for one datastore name.
RecordsInput = DatastoreRecordData | SerializedDatastoreRecordData | Mapping[str, Any]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
#: Longest path component we write: file systems stop at 255 bytes.
_MAX_COMPONENT = 120
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _safe(text: str) -> str:
    """One path component made of safe characters, never empty, never dot-led."""
    safe = _UNSAFE.sub("_", text)
    # A leading dot would make '.', '..' or hidden files; temp files use that prefix.
    safe = re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe)
    if len(safe) > _MAX_COMPONENT:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        safe = f"{safe[: _MAX_COMPONENT - 13]}-{digest}"
    return safe or "_"


class FileDatastore:
    """A datastore of one file per dataset under ``root``.

    Args:
        root: the directory holding the artifacts (created on the first put).
        name: the datastore's name in exported records and in quanta.
        storage_classes: the registry of storage classes and converters; a fresh
            `default_registry()` when None.
        fsync: fsync each artifact and its directory before ``put`` returns.
        verify_checksums: also check each artifact's sha256 when it is read
            (its size is always checked).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str = "files",
        storage_classes: StorageClassRegistry | None = None,
        fsync: bool = True,
        *,
        verify_checksums: bool = False,
    ) -> None:
        self.root = Path(root).absolute()
        self.name = name
        self.storage_classes = (
            storage_classes if storage_classes is not None else default_registry()
        )
        self.fsync = fsync
        self.verify_checksums = verify_checksums
        #: Every file operation below the root goes through it.
        self.guard = PathGuard(self.root)
        self._records: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
        self._trash: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}

    def __repr__(self) -> str:
        return f"FileDatastore({str(self.root)!r}, name={self.name!r})"

    # --- paths --------------------------------------------------------------------

    def _checked_path(self, relative: str) -> Path:
        """The absolute path of a record path from outside, refusing any that leaves the root."""
        check_relative_path(relative)
        return Path(self._locate(relative)[0])

    def _locate(self, relative: str) -> tuple[str, os.stat_result | None]:
        """The absolute path of a checked record path, and its stat (None if missing).

        Raises PathEscapeError if a symlink below the root leads out of it.
        """
        path, info, _ = self.guard.locate(relative)
        return path, info

    def _relative_path(self, ref: DatasetRef, storage_class: StorageClass) -> str:
        """``{run}/{type}/{k}={v}_..._{id}{ext}``, each component sanitised."""
        run_parts = [_safe(part) for part in ref.run.split("/") if part] or ["_"]
        data_id = "_".join(f"{_safe(k)}={_safe(str(v))}" for k, v in ref.data_id.items())
        # The id alone makes the name unique, so a long data ID may be cut short.
        stem = f"{data_id[:_MAX_COMPONENT]}_{ref.id}" if data_id else str(ref.id)
        # Not _safe(): an extension keeps its leading dot, and it cannot hold a '/'.
        extension = _UNSAFE.sub("_", storage_class.extension)
        parts = [*run_parts, _safe(ref.dataset_type.parent_name()), stem + extension]
        return "/".join(parts)

    def artifact_path(self, ref: DatasetRef) -> Path:
        """The absolute path of the ref's artifact: its record's, else where put would write.

        Raises:
            StorageClassError: there is no record and the ref's storage class is unknown.
            PathEscapeError: the record's path leaves the root.
        """
        record = self._find(ref, self._records) or self._find(ref, self._trash)
        if record is not None:
            return self._checked_path(record.path)
        storage_class = self.storage_classes.get(ref.dataset_type.storage_class)
        return self.root / self._relative_path(ref, storage_class)

    # --- records ------------------------------------------------------------------

    @staticmethod
    def _find(
        ref: DatasetRef, table: Mapping[uuid.UUID, tuple[StoredFileInfo, ...]]
    ) -> StoredFileInfo | None:
        """The record to read for ``ref``: its own component's, else the whole dataset's."""
        by_component = {record.component: record for record in table.get(ref.id, ())}
        component = ref.dataset_type.component()
        own = by_component.get(component) if component is not None else None
        return own or by_component.get(None)

    def records_for(self, ref: DatasetRef) -> tuple[StoredFileInfo, ...]:
        """Every live (not trashed) record of the ref's dataset; empty if none."""
        return self._records.get(ref.id, ())

    def export_records(self, refs: Iterable[DatasetRef]) -> dict[str, DatastoreRecordData]:
        """The live records of ``refs``, keyed by this datastore's name.

        Refs without a live record are left out; a component ref gives its
        dataset's records.
        """
        selected: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
        for ref in refs:
            records = self._records.get(ref.id)
            if records:
                selected[ref.id] = records
        return {self.name: DatastoreRecordData(records=selected)}

    def import_records(self, records: Mapping[str, RecordsInput]) -> None:
        """Import the records filed under this datastore's name; other names are ignored.

        Accepts `DatastoreRecordData`, its serialized model, or the serialized
        dict form, as found in ``QuantumProvenanceData.datastore_records``. The
        batch is checked as a whole before any of it is imported.

        Raises:
            PathEscapeError: a record path is absolute, climbs with ``..``, or
                resolves outside the root; nothing is imported.
        """
        batch: dict[uuid.UUID, tuple[StoredFileInfo, ...]] = {}
        for name, data in records.items():
            if name != self.name:
                continue
            parsed = DatastoreRecordData.from_simple(data)
            for dataset_id, rows in parsed.records.items():
                for row in rows:
                    self._checked_path(row.path)
                if rows:
                    batch[dataset_id] = rows
        self._records.update(batch)
        for dataset_id in batch:
            self._trash.pop(dataset_id, None)

    def forget(self, refs: Iterable[DatasetRef]) -> None:
        """Drop the records of ``refs`` (trashed ones too) without touching any file."""
        for ref in refs:
            self._records.pop(ref.id, None)
            self._trash.pop(ref.id, None)

    # --- reading ------------------------------------------------------------------

    def exists(self, ref: DatasetRef) -> bool:
        """True if the ref has a live record and its artifact is a file."""
        return self.mexists([ref])[ref]

    def mexists(self, refs: Iterable[DatasetRef]) -> dict[DatasetRef, bool]:
        """`exists` for many refs.

        Raises:
            PathEscapeError: a record's path resolves outside the root.
        """
        result: dict[DatasetRef, bool] = {}
        for ref in refs:
            record = self._find(ref, self._records)
            info = self._locate(record.path)[1] if record is not None else None
            result[ref] = info is not None and stat.S_ISREG(info.st_mode)
        return result

    def get(
        self,
        ref: DatasetRef,
        parameters: Mapping[str, Any] | None = None,
        storageClass: str | StorageClass | None = None,
    ) -> Any:
        """Read a dataset (or one component of it) through its record.

        Parameters are applied by the storage class of what is read (the stored
        one, or for a component the class matching the component's type). The
        result is then converted to ``storageClass`` if given, else to the ref's
        storage class when it differs from the stored one (for a component ref,
        only when its storage class differs from its parent's).

        Raises:
            DatasetNotFoundError: no live record (a LookupError).
            FileNotFoundError: the record exists but its file does not.
            ArtifactCorruptError: the file's size (or checksum, if verified)
                differs from the record, or it cannot be decoded (an OSError).
            PathEscapeError: the record's path resolves outside the root.
            StorageClassError: an unknown storage class or component.
            InvalidParameterError: a read parameter the storage class does not know.
            ConversionError: no converter to the requested storage class.
        """
        record = self._find(ref, self._records)
        if record is None:
            raise DatasetNotFoundError(
                f"datastore {self.name!r} has no record of dataset {ref}; it was never "
                "written here, its records were not imported, or it was trashed"
            )
        stored = self.storage_classes.get(record.storage_class)
        obj = self._decode(stored, self._read(record), self.guard.absolute(record.path))
        current: StorageClass | None = stored
        component = ref.dataset_type.component()
        if component is not None and record.component is None:
            obj = stored.get_component(obj, component)
            current = self.storage_classes.for_object(obj)
        target = storageClass
        # A component dataset type inherits its parent's storage class unless
        # one was given: only a different one is a request to convert.
        if target is None and (
            component is None or ref.dataset_type.storage_class != record.storage_class
        ):
            target = ref.dataset_type.storage_class
        if current is None:  # a component of a type no storage class handles (an int, say)
            what = (
                f"component {component!r} of {ref} is a {type(obj).__name__}, "
                "which no storage class handles"
            )
            if parameters:
                raise InvalidParameterError(f"{what}: it takes no read parameters")
            if target is None or self.storage_classes.get(target).is_instance(obj):
                return obj
            raise ConversionError(f"{what}: it cannot be converted to {target!r}")
        obj = current.apply_parameters(obj, parameters)
        if target is None:
            return obj
        return self.storage_classes.convert(
            obj, current.name, self.storage_classes.get(target).name
        )

    def _read(self, record: StoredFileInfo) -> bytes:
        """The artifact's bytes, after checking their size (and checksum) against the record."""
        path = self.guard.absolute(record.path)
        data = self.guard.read_bytes(record.path)
        if record.file_size >= 0 and len(data) != record.file_size:
            raise ArtifactCorruptError(
                errno.EIO,
                f"artifact is {len(data)} bytes but its record says {record.file_size}; "
                "it was modified or truncated after it was written",
                str(path),
            )
        if (
            self.verify_checksums
            and record.checksum
            and _SHA256_HEX.fullmatch(record.checksum)
            and hashlib.sha256(data).hexdigest() != record.checksum
        ):
            raise ArtifactCorruptError(
                errno.EIO, "artifact's sha256 differs from its record", str(path)
            )
        return data

    @staticmethod
    def _decode(storage_class: StorageClass, data: bytes, path: str | Path) -> Any:
        """Deserialize an artifact; a reader failure means the artifact is damaged."""
        try:
            return storage_class.from_bytes(data)
        except LedgerError:
            raise
        except Exception as e:
            raise ArtifactCorruptError(
                errno.EIO, f"artifact cannot be decoded as {storage_class.name!r}: {e}", str(path)
            ) from e

    def verify_record(self, record: StoredFileInfo) -> str | None:
        """Check one record's artifact: present, right size, right checksum.

        Returns None when it is fine, else one line saying what is wrong and
        where. Checksums that are not sha256 hex (from other datastores) are
        not checked.
        """
        where = f"artifact {record.path!r} of dataset {record.dataset_id}"
        try:
            check_relative_path(record.path)
            digest = hashlib.sha256()
            with os.fdopen(self.guard.open_read(record.path), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if record.file_size >= 0 and size != record.file_size:
                    return f"{where} is {size} bytes, its record says {record.file_size}"
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except PathEscapeError as e:
            return str(e)
        except NotARegularFileError:
            info = self._locate(record.path)[1]
            kind = file_kind(info.st_mode) if info is not None else "not a regular file"
            return f"{where} is {kind}, not a regular file; it was not read"
        except FileNotFoundError:
            return f"{where} is missing from {self.root}"
        except OSError as e:
            return f"{where} cannot be read: {e}"
        if (
            record.checksum
            and _SHA256_HEX.fullmatch(record.checksum)
            and digest.hexdigest() != record.checksum
        ):
            return f"{where} has sha256 {digest.hexdigest()}, its record says {record.checksum}"
        return None

    # --- writing ------------------------------------------------------------------

    def put(self, obj: Any, ref: DatasetRef) -> StoredFileInfo:
        """Write ``obj`` as the ref's artifact, atomically, and record it.

        The object is validated and serialized before anything touches the
        disk. An existing artifact is never replaced.

        Returns:
            The record written (sha256 checksum and size of the bytes written).

        Raises:
            InvalidParameterError: ``ref`` is a component ref.
            StorageClassError: unknown storage class, or ``obj`` of the wrong type.
            DatasetExistsError: the artifact exists already; it is left intact.
            PathEscapeError: the target directory resolves outside the root.
            OSError: the write failed; nothing is left (no partial artifact, no
                temporary file, no directory this put created).
        """
        if ref.isComponent():
            raise InvalidParameterError(
                f"cannot put component ref {ref}; put the whole {ref.dataset_type.parent_name()!r}"
            )
        storage_class = self.storage_classes.get(ref.dataset_type.storage_class)
        data = storage_class.to_bytes(obj)
        relative = self._relative_path(ref, storage_class)
        existing = self._find(ref, self._records)
        if existing is not None and existing.path != relative and self.guard.lexists(existing.path):
            raise self._exists_error(ref, existing.path)
        # One walk checks that the name is free and writes; the link refuses a
        # name that another process took in between.
        if not self.guard.write_new(relative, data, fsync=self.fsync):
            raise self._exists_error(ref, relative)
        return self._record(ref, storage_class, relative, data)

    def _record(
        self, ref: DatasetRef, storage_class: StorageClass, relative: str, data: bytes
    ) -> StoredFileInfo:
        """Record the artifact ``data`` of ``ref`` as live."""
        record = StoredFileInfo(
            dataset_id=ref.id,
            path=relative,
            formatter=storage_class.formatter,
            storage_class=storage_class.name,
            component=None,
            checksum=hashlib.sha256(data).hexdigest(),
            file_size=len(data),
        )
        self._records[ref.id] = (record,)
        # A trashed record of this id points at this very file: forget it, or
        # emptyTrash would delete the artifact just recorded.
        self._trash.pop(ref.id, None)
        return record

    def adopt(self, ref: DatasetRef) -> StoredFileInfo:
        """Record an artifact already at the ref's path that has no record (an orphan).

        The file is checked to decode as the ref's storage class first. A ref
        that already has a live record gets that record back.

        Raises:
            FileNotFoundError: there is no artifact at the ref's path.
            ArtifactCorruptError: it does not decode as the ref's storage class
                (`NotARegularFileError`: it is not a regular file).
            PathEscapeError: a symlink leads out of the root.
        """
        existing = self._find(ref, self._records)
        if existing is not None:
            return existing
        if ref.isComponent():
            raise InvalidParameterError(f"cannot adopt component ref {ref}; adopt its dataset")
        storage_class = self.storage_classes.get(ref.dataset_type.storage_class)
        relative = self._relative_path(ref, storage_class)
        path = self._checked_path(relative)
        data = self.guard.read_bytes(relative)
        self._decode(storage_class, data, path)
        return self._record(ref, storage_class, relative, data)

    def artifact_at(self, ref: DatasetRef) -> tuple[str, bytes] | None:
        """The path (relative to the root) and bytes of the file where ``ref`` is put, if any.

        Whatever the records say: this is how an orphan (a file without a
        recorded put) is found. Only a regular file is read.

        Raises:
            StorageClassError: the ref's storage class is unknown.
            PathEscapeError: a symlink leads out of the root.
            NotARegularFileError: a FIFO, device, directory or socket is there.
        """
        storage_class = self.storage_classes.get(ref.dataset_type.storage_class)
        relative = self._relative_path(ref, storage_class)
        try:
            return relative, self.guard.read_bytes(relative)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove_artifact(self, relative: str) -> bool:
        """Delete the file at ``relative`` (no record changes); False if nothing was there.

        Raises:
            PathEscapeError: a symlink leads out of the root; nothing is deleted.
        """
        return self.guard.unlink(check_relative_path(relative))

    def _exists_error(self, ref: DatasetRef, relative: str) -> DatasetExistsError:
        return DatasetExistsError(
            f"dataset {ref} already has an artifact at {relative!r} under {self.root}; "
            "it is never overwritten: prune it (unstore) first to write it again"
        )

    # --- removal ------------------------------------------------------------------

    def trash(
        self, ref_or_refs: DatasetRef | Iterable[DatasetRef], ignore_errors: bool = True
    ) -> None:
        """Mark datasets for deletion: they vanish from exists/get/export at once.

        Raises:
            InvalidParameterError: a component ref (trash the whole dataset).
            DatasetNotFoundError: a ref has no live record and ``ignore_errors``
                is false; nothing is trashed then.
        """
        refs = [ref_or_refs] if isinstance(ref_or_refs, DatasetRef) else list(ref_or_refs)
        for ref in refs:
            if ref.isComponent():
                raise InvalidParameterError(f"cannot trash component ref {ref}; trash its dataset")
        if not ignore_errors:
            unknown = [str(ref) for ref in refs if ref.id not in self._records]
            if unknown:
                raise DatasetNotFoundError(
                    f"datastore {self.name!r} has no record of: {'; '.join(unknown)}"
                )
        for ref in refs:
            records = self._records.pop(ref.id, None)
            if records:
                self._trash[ref.id] = records

    def emptyTrash(self, ignore_errors: bool = True) -> None:
        """Delete the artifacts of trashed datasets; already-missing files are fine.

        A file that cannot be deleted stays in the trash for the next call
        (logged), or raises when ``ignore_errors`` is false.
        """
        # Deletions are not fsynced: one lost in a crash leaves an orphan file,
        # which recovery reports, never a record whose file silently vanished.
        for dataset_id, records in list(self._trash.items()):
            failed = False
            for record in records:
                try:
                    self.guard.unlink(record.path)
                except (OSError, PathEscapeError) as e:
                    if not ignore_errors:
                        raise
                    _log.warning(
                        "artifact_not_deleted", datastore=self.name, path=record.path, error=str(e)
                    )
                    failed = True
            if not failed:
                del self._trash[dataset_id]
        # Empty directories stay: another process may be writing into them.
