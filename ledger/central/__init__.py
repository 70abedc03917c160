"""The central ledger: many quanta in one database, and questions across them.

`ingest` merges ledger files into a SQLite file or a PostgreSQL database;
`collect_and_transfer` imports the actual outputs of many quanta with their
datastore records; `lineage` walks producers and readers with recursive SQL.
"""

from .ingest import (
    SOURCE_SUFFIXES,
    DuplicateProducers,
    IngestReport,
    Producer,
    SourceProblem,
    expand_sources,
    ingest,
)
from .lineage import Lineage, LineageDataset, LineageEdge, LineageQuantum, lineage
from .transfer import TransferReport, collect_and_transfer

__all__ = [
    "SOURCE_SUFFIXES",
    "DuplicateProducers",
    "IngestReport",
    "Lineage",
    "LineageDataset",
    "LineageEdge",
    "LineageQuantum",
    "Producer",
    "SourceProblem",
    "TransferReport",
    "collect_and_transfer",
    "expand_sources",
    "ingest",
    "lineage",
]
