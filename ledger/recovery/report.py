"""The recovery report: frozen pydantic models with a JSON form (for tables and ``--json``)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..provenance import QuantumProvenanceData
from ..store.lease import Liveness

__all__ = [
    "AttemptInfo",
    "DatasetInfo",
    "OrphanAction",
    "OrphanReason",
    "OutputInfo",
    "OutputState",
    "Process",
    "QuantumRecovery",
    "RecoveryReport",
    "Status",
]

Status = Literal["succeeded", "failed", "interrupted"]
#: Whether an interrupted quantum's process may still be running (see `ledger.store.lease`).
Process = Liveness
OutputState = Literal["verified", "damaged", "unstored", "orphan", "missing"]
OrphanReason = Literal["unrecorded_write", "pruned_not_deleted"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DatasetInfo(_Frozen):
    """One dataset of a quantum, named the way a person looks for it."""

    dataset_id: uuid.UUID
    dataset_type: str
    data_id: dict[str, int | str]
    run: str
    #: artifact path relative to the datastore root, when known.
    path: str | None = None


class OutputInfo(DatasetInfo):
    """A predicted output and the state of its artifact.

    ``verified``: recorded by a ``put`` and the file matches the record (size and
    sha256). ``damaged``: recorded, but the file is missing or differs
    (``problem`` says how). ``unstored``: an actual output whose artifact was
    unstored by a prune without purge. ``orphan``: a file at the output's path
    that no live record covers. ``missing``: never written.
    """

    state: OutputState
    problem: str | None = None
    #: for orphans: ``unrecorded_write`` (adoptable) or ``pruned_not_deleted``
    #: (the file matches what a recorded prune removed: remove it, never adopt).
    orphan_reason: OrphanReason | None = None
    #: for orphans: the file decodes with the output's storage class.
    verified: bool | None = None
    file_size: int | None = None
    checksum: str | None = None


class AttemptInfo(_Frozen):
    """One attempt of a quantum: from its ``quantum_started`` to its end, if any."""

    attempt: int
    status: Status
    started_at: str | None = None
    ended_at: str | None = None
    host: str | None = None
    pid: int | None = None
    resumed: bool = False
    skip_existing: bool = False
    clobber: bool = False
    error_type: str | None = None
    error_message: str | None = None
    caveats: list[str] = []


class QuantumRecovery(_Frozen):
    """Everything recovery knows about one quantum."""

    quantum_id: uuid.UUID
    task_label: str
    data_id: dict[str, int | str]
    run: str | None
    datastore_name: str | None
    #: how the latest attempt ended; ``interrupted`` when it has no terminal event.
    status: Status
    #: for an interrupted quantum: ``running`` (its lease is fresh, on any host),
    #: ``expired`` (its lease ran out), ``dead`` (this host, its pid is gone),
    #: ``closed`` (closed without an end), or, for a ledger without a lease,
    #: ``possibly still running`` (this host, pid alive) or ``unknown``; else None.
    process: Process | None
    #: who recorded the latest attempt (the lease holder when there is one)
    host: str | None
    pid: int | None
    #: when the latest attempt's lease expires (or expired), if it has one
    lease_expires_at: str | None = None
    attempts: int
    attempt_history: list[AttemptInfo]
    error_type: str | None
    error_message: str | None
    traceback: str | None
    caveats: list[str]
    started_at: str | None
    ended_at: str | None
    last_quantum_seq: int
    last_event_at: str | None
    #: the replay of every event so far (all attempts), as `Ledger.replay` gives it.
    provenance: QuantumProvenanceData
    inputs_read: list[DatasetInfo]
    inputs_unavailable: list[DatasetInfo]
    outputs_verified: list[OutputInfo]
    outputs_damaged: list[OutputInfo]
    outputs_unstored: list[OutputInfo]
    outputs_missing: list[OutputInfo]
    orphans: list[OutputInfo]
    #: what `Ledger.verify` found wrong with this quantum's chain (edited rows, gaps).
    chain_problems: list[str]

    @property
    def needs_attention(self) -> bool:
        """Not a clean success: failed, interrupted, damaged, orphans or a broken chain."""
        problems = self.outputs_damaged or self.orphans or self.chain_problems
        return self.status != "succeeded" or bool(problems)


class RecoveryReport(_Frozen):
    """The result of `recover`: one entry per failed or interrupted (or named) quantum."""

    ledger: str
    datastore_root: str
    datastore_name: str
    quanta: list[QuantumRecovery]
    #: True when no quantum reported needs attention (the CLI's exit code 0).
    ok: bool


class OrphanAction(_Frozen):
    """What `adopt_orphans` or `remove_orphans` did with one orphan."""

    quantum_id: uuid.UUID
    dataset_id: uuid.UUID
    path: str | None
    action: Literal["adopted", "removed", "skipped"]
    #: why it was skipped, or None.
    reason: str | None = None
    #: the quantum_seq of the event that records the action.
    quantum_seq: int | None = None
