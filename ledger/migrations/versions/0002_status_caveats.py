"""Success caveats in ``quantum_status``: a ``caveats`` column.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

A succeeded quantum's ``caveats`` is the JSON array text recorded in its
``quantum_succeeded`` detail (upstream's ``QuantumSuccessCaveats``: ``no_work``,
``some_outputs_missing``, ``all_outputs_missing``), ``[]`` when it has none;
NULL for a failed or interrupted quantum. The column comes last, so the
positions of the columns of revision 0001 do not move.

A frozen snapshot: it spells out the whole view instead of importing 0001's
text, and its downgrade puts 0001's view back as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS quantum_status")
    op.execute(quantum_status(op.get_bind().dialect.name, caveats=True))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS quantum_status")
    op.execute(quantum_status(op.get_bind().dialect.name, caveats=False))


def views(dialect: str) -> list[str]:
    """The views this revision leaves (for verify's comparison with a ledger's own)."""
    return [quantum_status(dialect, caveats=True)]


def quantum_status(dialect: str, *, caveats: bool) -> str:
    """The ``quantum_status`` view; without ``caveats`` exactly revision 0001's."""
    # Both give the array's text as written: the butler writes compact JSON, and
    # PostgreSQL's json (not jsonb) keeps a value's text, so the dialects agree.
    extract = (
        "(t_ok.detail::json -> 'caveats')::text"
        if dialect == "postgresql"
        else "json_extract(t_ok.detail, '$.caveats')"
    )
    succeeded = "a.ok_seq > a.started_seq AND a.ok_seq > a.failed_seq"
    failed = "a.failed_seq > a.started_seq AND a.failed_seq > a.ok_seq"
    caveats_column = (
        f",\n       CASE WHEN {succeeded} THEN COALESCE({extract}, '[]') END AS caveats"
        if caveats
        else ""
    )
    return f"""
CREATE VIEW quantum_status AS
SELECT q.quantum_id, q.task_label, q.data_id,
       CASE WHEN {succeeded} THEN 'succeeded' WHEN {failed} THEN 'failed'
            ELSE 'interrupted' END AS status,
       COALESCE(a.attempts, 0) AS attempts,
       COALESCE(a.n_events, 0) AS n_events,
       COALESCE(a.n_get, 0) AS n_get,
       COALESCE(a.n_put, 0) AS n_put,
       COALESCE(a.n_stored, 0) AS n_stored,
       a.started_at,
       CASE WHEN {succeeded} THEN t_ok.recorded_at WHEN {failed} THEN t_failed.recorded_at
            END AS ended_at,
       CASE WHEN {failed} THEN t_failed.error_type END AS error_type,
       CASE WHEN {failed} THEN t_failed.error_message END AS error_message,
       a.last_seq,
       t_last.hash AS last_hash{caveats_column}
FROM quanta q
LEFT JOIN (
    SELECT quantum_id,
           MAX(attempt) AS attempts,
           COUNT(*) AS n_events,
           SUM(CASE WHEN kind = 'get' THEN 1 ELSE 0 END) AS n_get,
           SUM(CASE WHEN kind = 'put' THEN 1 ELSE 0 END) AS n_put,
           SUM(CASE WHEN kind = 'stored' THEN 1 ELSE 0 END) AS n_stored,
           MAX(CASE WHEN kind = 'quantum_started' THEN quantum_seq ELSE 0 END) AS started_seq,
           MAX(CASE WHEN kind = 'quantum_succeeded' THEN quantum_seq ELSE 0 END) AS ok_seq,
           MAX(CASE WHEN kind = 'quantum_failed' THEN quantum_seq ELSE 0 END) AS failed_seq,
           MIN(CASE WHEN kind = 'quantum_started' THEN recorded_at END) AS started_at,
           MAX(quantum_seq) AS last_seq
    FROM events
    GROUP BY quantum_id
) AS a ON a.quantum_id = q.quantum_id
LEFT JOIN events t_ok ON t_ok.quantum_id = q.quantum_id AND t_ok.quantum_seq = a.ok_seq
LEFT JOIN events t_failed
       ON t_failed.quantum_id = q.quantum_id AND t_failed.quantum_seq = a.failed_seq
LEFT JOIN events t_last ON t_last.quantum_id = q.quantum_id AND t_last.quantum_seq = a.last_seq
"""
