"""Leases: which process records each quantum right now, and until when.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

One row per quantum, written only by the recorder: taken in the transaction
that appends an attempt's ``quantum_started``, renewed while the task runs,
released at its end (or revoked by recovery). Operational state, not
provenance: the table is mutable (no append-only triggers) and outside the
hash chain. Ledgers from before this revision simply have no rows, and
readers fall back to the host and pid of ``quantum_started``.

A frozen snapshot: it spells out its DDL instead of importing the live tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("quantum_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "token",
            sa.Text(),
            nullable=True,
            comment="boot id/process start time: tells a reused pid",
        ),
        sa.Column("started_at", sa.Text(), nullable=False, comment="UTC ISO-8601"),
        sa.Column("renewed_at", sa.Text(), nullable=False, comment="UTC ISO-8601"),
        sa.Column(
            "expires_at", sa.Text(), nullable=False, comment="UTC ISO-8601: renewed_at + timeout"
        ),
        sa.Column("released_at", sa.Text(), nullable=True, comment="UTC ISO-8601"),
        sa.Column("released_by", sa.Text(), nullable=True, comment="end, close or recover"),
        sa.PrimaryKeyConstraint("quantum_id", name="pk_leases"),
        comment="Who records each quantum now (operational state, mutable, not provenance).",
    )


def downgrade() -> None:
    op.drop_table("leases")
