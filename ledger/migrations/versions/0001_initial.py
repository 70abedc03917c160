"""The initial ledger schema: four tables, append-only triggers, two views.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

A frozen snapshot: it spells out its DDL instead of importing the live table
objects, so later changes to ``ledger/store/schema.py`` never rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = ("events", "datasets", "quanta")


def _message(table: str, action: str) -> str:
    return (
        f"{table} is append-only: {action} is not allowed "
        "(quantum-ledger records are immutable; append a new event instead)"
    )


def _seq() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_info",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_ledger_info"),
        comment="Schema version, library version, creation time: one row per key.",
    )
    op.create_table(
        "quanta",
        sa.Column("quantum_id", sa.String(36), nullable=False),
        sa.Column("task_label", sa.Text(), nullable=False),
        sa.Column("data_id", sa.Text(), nullable=False, comment="JSON object"),
        sa.Column("run", sa.Text(), nullable=True, comment="run of the predicted outputs, if one"),
        sa.Column("created_at", sa.Text(), nullable=False, comment="UTC ISO-8601"),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("python_version", sa.Text(), nullable=False),
        sa.Column("library_version", sa.Text(), nullable=False),
        sa.Column("datastore_name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("quantum_id", name="pk_quanta"),
        comment="One row per quantum, written once when it is first recorded.",
    )
    op.create_table(
        "datasets",
        sa.Column("quantum_id", sa.String(36), nullable=False),
        sa.Column("dataset_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, comment="input, init_input or output"),
        sa.Column("connection", sa.Text(), nullable=False, comment="key in Quantum.inputs/outputs"),
        sa.Column("position", sa.Integer(), nullable=False, comment="order within the connection"),
        sa.Column("dataset_type", sa.Text(), nullable=False),
        sa.Column("dimensions", sa.Text(), nullable=False, comment="JSON array"),
        sa.Column("storage_class", sa.Text(), nullable=False),
        sa.Column("data_id", sa.Text(), nullable=False, comment="JSON object"),
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column(
            "datastore_records", sa.Text(), nullable=True, comment="JSON: datastore -> records"
        ),
        sa.PrimaryKeyConstraint("quantum_id", "dataset_id", "role", name="pk_datasets"),
        comment="Every predicted dataset of every quantum: a quantum rebuilds from this alone.",
    )
    op.create_index("ix_datasets_dataset_id", "datasets", ["dataset_id"])
    op.create_table(
        "events",
        sa.Column("seq", _seq(), nullable=False, autoincrement=True),
        sa.Column("quantum_id", sa.String(36), nullable=False),
        sa.Column("quantum_seq", sa.Integer(), nullable=False),
        sa.Column(
            "call_id", sa.Integer(), nullable=False, comment="quantum_seq of the call's first row"
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dataset_id", sa.String(36), nullable=True),
        sa.Column(
            "outcome", sa.String(16), nullable=False, comment="ok, missing, error or rejected"
        ),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True, comment="JSON object"),
        sa.Column(
            "recorded_at", sa.Text(), nullable=False, comment="UTC ISO-8601 with microseconds"
        ),
        sa.Column("prev_hash", sa.String(64), nullable=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("quantum_id", "quantum_seq", name="uq_events_quantum_id_quantum_seq"),
        comment="The append-only log: one row per call per dataset, hash-chained per quantum.",
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()
    for statement in views(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW IF EXISTS quantum_status")
    op.execute("DROP VIEW IF EXISTS provenance")
    if dialect == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ledger_append_only()")
    else:
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_table("events")
    op.drop_index("ix_datasets_dataset_id", table_name="datasets")
    op.drop_table("datasets")
    op.drop_table("quanta")
    op.drop_table("ledger_info")


def _sqlite_triggers() -> None:
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{_message(table, action)}'); END"
            )


def _postgresql_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % is not allowed (quantum-ledger records are '
                            'immutable; append a new event instead)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    for table in _APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )


def views(dialect: str) -> list[str]:
    """The ``provenance`` and ``quantum_status`` views (revision 0001) for a dialect."""
    purge = (
        "(e.detail::jsonb ->> 'purge') = 'true'"
        if dialect == "postgresql"
        else "json_extract(e.detail, '$.purge') = 1"
    )
    # One pass: a GROUP BY over a UNION ALL of the predictions and the events;
    # membership that can be removed again (actual inputs, actual outputs) is
    # "the last add comes after the last remove", compared by quantum_seq.
    provenance = f"""
CREATE VIEW provenance AS
SELECT quantum_id, dataset_id,
       pi AS predicted_input,
       CASE WHEN pi = 1 AND ok_seen = 1 THEN 1 ELSE 0 END AS available,
       CASE WHEN get_missing = 1 OR (pi = 1 AND stored_missing = 1) THEN 1 ELSE 0 END
           AS unavailable,
       CASE WHEN pi = 1 AND get_missing = 0 AND stored_missing = 0 AND last_use > last_unused
            THEN 1 ELSE 0 END AS actual_input,
       po AS predicted_output,
       CASE WHEN last_put > last_purge THEN 1 ELSE 0 END AS actual_output
FROM (
    SELECT quantum_id, dataset_id,
           MAX(pi) AS pi, MAX(po) AS po, MAX(ok_seen) AS ok_seen,
           MAX(get_missing) AS get_missing, MAX(stored_missing) AS stored_missing,
           MAX(last_use) AS last_use, MAX(last_unused) AS last_unused,
           MAX(last_put) AS last_put, MAX(last_purge) AS last_purge
    FROM (
        SELECT d.quantum_id, d.dataset_id,
               CASE WHEN d.role IN ('input', 'init_input') THEN 1 ELSE 0 END AS pi,
               CASE WHEN d.role = 'output' THEN 1 ELSE 0 END AS po,
               0 AS ok_seen, 0 AS get_missing, 0 AS stored_missing,
               0 AS last_use, 0 AS last_unused, 0 AS last_put, 0 AS last_purge
        FROM datasets d
        UNION ALL
        SELECT e.quantum_id, e.dataset_id, 0, 0,
               CASE WHEN e.kind IN ('get', 'stored') AND e.outcome = 'ok' THEN 1 ELSE 0 END,
               CASE WHEN e.kind = 'get' AND e.outcome = 'missing' THEN 1 ELSE 0 END,
               CASE WHEN e.kind = 'stored' AND e.outcome = 'missing' THEN 1 ELSE 0 END,
               CASE WHEN e.kind IN ('get', 'get_deferred') AND e.outcome = 'ok'
                    THEN e.quantum_seq ELSE 0 END,
               CASE WHEN e.kind = 'mark_input_unused' AND e.outcome = 'ok'
                    THEN e.quantum_seq ELSE 0 END,
               CASE WHEN e.kind = 'put' AND e.outcome = 'ok' THEN e.quantum_seq ELSE 0 END,
               CASE WHEN e.kind = 'prune' AND e.outcome = 'ok' AND {purge}
                    THEN e.quantum_seq ELSE 0 END
        FROM events e
        WHERE e.dataset_id IS NOT NULL
    ) AS rows_
    GROUP BY quantum_id, dataset_id
) AS grouped
"""
    succeeded = "a.ok_seq > a.started_seq AND a.ok_seq > a.failed_seq"
    failed = "a.failed_seq > a.started_seq AND a.failed_seq > a.ok_seq"
    quantum_status = f"""
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
       t_last.hash AS last_hash
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
    return [provenance, quantum_status]
