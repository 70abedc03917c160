"""The central ledger: where ingested events came from, and transferred outputs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Two append-only tables, empty in a one-quantum ledger:
``ingests`` (one row per range of a quantum's events that ``qledger ingest``
copied in, naming its source, so a conflict can name both sources) and
``dataset_locations`` (the actual outputs that ``collect_and_transfer``
imported, with their datastore records). Both get the append-only triggers of
revision 0001.

A frozen snapshot: it spells out its DDL instead of importing the live tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("ingests", "dataset_locations")


def upgrade() -> None:
    op.create_table(
        "ingests",
        sa.Column("quantum_id", sa.String(36), nullable=False),
        sa.Column("first_quantum_seq", sa.Integer(), nullable=False),
        sa.Column("last_quantum_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("n_events", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="path or URL the events came from"),
        sa.Column("ingested_at", sa.Text(), nullable=False, comment="UTC ISO-8601"),
        sa.Column("ingested_by", sa.Text(), nullable=False, comment="host:pid of the ingest"),
        sa.PrimaryKeyConstraint("quantum_id", "first_quantum_seq", name="pk_ingests"),
        comment="Each range of a quantum's events copied in by qledger ingest, and its source.",
    )
    op.create_table(
        "dataset_locations",
        sa.Column("dataset_id", sa.String(36), nullable=False),
        sa.Column("datastore_name", sa.Text(), nullable=False),
        sa.Column("quantum_id", sa.String(36), nullable=True, comment="the producer, when known"),
        sa.Column("dataset_type", sa.Text(), nullable=False),
        sa.Column("storage_class", sa.Text(), nullable=False),
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column("data_id", sa.Text(), nullable=False, comment="JSON object"),
        sa.Column("records", sa.Text(), nullable=False, comment="JSON: table -> records"),
        sa.Column("transferred_at", sa.Text(), nullable=False, comment="UTC ISO-8601"),
        sa.PrimaryKeyConstraint("dataset_id", "datastore_name", name="pk_dataset_locations"),
        comment="Actual outputs imported by collect_and_transfer, with their datastore records.",
    )
    op.create_index(
        "ix_dataset_locations_dataset_type_run", "dataset_locations", ["dataset_type", "run"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # ledger_append_only() comes from revision 0001.
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
            )
    else:
        for table in _TABLES:
            for action in ("UPDATE", "DELETE"):
                message = (
                    f"{table} is append-only: {action} is not allowed "
                    "(quantum-ledger records are immutable; append a new event instead)"
                )
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_index("ix_dataset_locations_dataset_type_run", table_name="dataset_locations")
    op.drop_table("dataset_locations")
    op.drop_table("ingests")
