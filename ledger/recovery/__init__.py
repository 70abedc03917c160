"""Recovering failed and interrupted quanta: what happened, what is left, what to do.

`recover` reads a ledger and a datastore and changes neither: for each failed or
interrupted quantum it tells how the quantum ended, its provenance as of its
last event, which outputs are written and verified, damaged, unstored or
missing, which artifacts are *orphans* (a file at a predicted output's path
with no recorded ``put``: the process died between the write and the record),
and which inputs were read.

`adopt_orphans` and `remove_orphans` act on orphans and record what they did
as new events, never by editing old ones. Retrying a quantum is
`QuantumBackedButler.resume`.
"""

from .inspection import recover
from .orphans import adopt_orphans, remove_orphans
from .report import (
    AttemptInfo,
    DatasetInfo,
    OrphanAction,
    OutputInfo,
    QuantumRecovery,
    RecoveryReport,
)

__all__ = [
    "AttemptInfo",
    "DatasetInfo",
    "OrphanAction",
    "OutputInfo",
    "QuantumRecovery",
    "RecoveryReport",
    "adopt_orphans",
    "recover",
    "remove_orphans",
]
