"""The event-log schema: SQLAlchemy Core tables (one source of truth for Alembic).

Ids are canonical lowercase UUID text, data IDs and details JSON text, times
ISO-8601 text: every column reads in ``sqlite3`` without decoding. The same
tables serve a one-quantum file and a central database of millions of quanta.

Tables are never created from this module at run time: the Alembic migrations
in ``ledger/migrations`` create them, and a test holds the two equal.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "dataset_locations",
    "datasets",
    "events",
    "ingests",
    "leases",
    "ledger_info",
    "metadata",
    "quanta",
]

# Stable constraint names, so migrations on SQLite (batch mode) and PostgreSQL agree.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_UUID = String(36)
# SQLite only aliases the rowid for the exact type name INTEGER; PostgreSQL wants 64 bits.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

ledger_info = Table(
    "ledger_info",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    comment="Schema version, library version, creation time: one row per key.",
)

quanta = Table(
    "quanta",
    metadata,
    Column("quantum_id", _UUID, primary_key=True),
    Column("task_label", Text, nullable=False),
    Column("data_id", Text, nullable=False, comment="JSON object"),
    Column("run", Text, nullable=True, comment="run of the predicted outputs, if one"),
    Column("created_at", Text, nullable=False, comment="UTC ISO-8601"),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("user", Text, nullable=False),
    Column("python_version", Text, nullable=False),
    Column("library_version", Text, nullable=False),
    Column("datastore_name", Text, nullable=True),
    comment="One row per quantum, written once when it is first recorded.",
)

datasets = Table(
    "datasets",
    metadata,
    Column("quantum_id", _UUID, primary_key=True),
    Column("dataset_id", _UUID, primary_key=True),
    Column("role", String(16), primary_key=True, comment="input, init_input or output"),
    Column("connection", Text, nullable=False, comment="key in Quantum.inputs/outputs"),
    Column("position", Integer, nullable=False, comment="order within the connection"),
    Column("dataset_type", Text, nullable=False),
    Column("dimensions", Text, nullable=False, comment="JSON array"),
    Column("storage_class", Text, nullable=False),
    Column("data_id", Text, nullable=False, comment="JSON object"),
    Column("run", Text, nullable=False),
    Column("datastore_records", Text, nullable=True, comment="JSON: datastore -> records"),
    comment="Every predicted dataset of every quantum: a quantum rebuilds from this alone.",
)

events = Table(
    "events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("quantum_id", _UUID, nullable=False),
    Column("quantum_seq", Integer, nullable=False),
    Column("call_id", Integer, nullable=False, comment="quantum_seq of the call's first row"),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("dataset_id", _UUID, nullable=True),
    Column("outcome", String(16), nullable=False, comment="ok, missing, error or rejected"),
    Column("error_type", Text, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("detail", Text, nullable=True, comment="JSON object"),
    Column("recorded_at", Text, nullable=False, comment="UTC ISO-8601 with microseconds"),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("quantum_id", "quantum_seq"),
    comment="The append-only log: one row per call per dataset, hash-chained per quantum.",
)

# Lineage asks "which quanta predicted this dataset"; `datasets` is written once per
# quantum, so this index costs nothing on the per-event hot path. `events` keeps only
# its UNIQUE(quantum_id, quantum_seq): every further index there costs a page per commit.
Index("ix_datasets_dataset_id", datasets.c.dataset_id)

# --- the central ledger (revision 0003): empty in a one-quantum ledger ----------------

ingests = Table(
    "ingests",
    metadata,
    Column("quantum_id", _UUID, primary_key=True),
    Column("first_quantum_seq", Integer, primary_key=True),
    Column("last_quantum_seq", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("n_events", Integer, nullable=False),
    Column("source", Text, nullable=False, comment="path or URL the events came from"),
    Column("ingested_at", Text, nullable=False, comment="UTC ISO-8601"),
    Column("ingested_by", Text, nullable=False, comment="host:pid of the ingest"),
    comment="Each range of a quantum's events copied in by qledger ingest, and its source.",
)

dataset_locations = Table(
    "dataset_locations",
    metadata,
    Column("dataset_id", _UUID, primary_key=True),
    Column("datastore_name", Text, primary_key=True),
    Column("quantum_id", _UUID, nullable=True, comment="the producer, when known"),
    Column("dataset_type", Text, nullable=False),
    Column("storage_class", Text, nullable=False),
    Column("run", Text, nullable=False),
    Column("data_id", Text, nullable=False, comment="JSON object"),
    Column("records", Text, nullable=False, comment="JSON: table -> records"),
    Column("transferred_at", Text, nullable=False, comment="UTC ISO-8601"),
    comment="Actual outputs imported by collect_and_transfer, with their datastore records.",
)

Index(
    "ix_dataset_locations_dataset_type_run",
    dataset_locations.c.dataset_type,
    dataset_locations.c.run,
)

# --- leases (revision 0004): operational state, not provenance -----------------------

leases = Table(
    "leases",
    metadata,
    Column("quantum_id", _UUID, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("token", Text, nullable=True, comment="boot id/process start time: tells a reused pid"),
    Column("started_at", Text, nullable=False, comment="UTC ISO-8601"),
    Column("renewed_at", Text, nullable=False, comment="UTC ISO-8601"),
    Column("expires_at", Text, nullable=False, comment="UTC ISO-8601: renewed_at + timeout"),
    Column("released_at", Text, nullable=True, comment="UTC ISO-8601"),
    Column("released_by", Text, nullable=True, comment="end, close or recover"),
    comment="Who records each quantum now (operational state, mutable, not provenance).",
)
