"""The schema objects a ledger must hold: what the shipped migrations create, and nothing less.

The views (``provenance``, ``quantum_status``) and the append-only triggers
are part of what a ledger promises, yet they live in the file like any row: a
ledger can carry its own ``quantum_status`` that calls a failed quantum
succeeded, or lack the trigger that refuses an UPDATE. `schema_problems`
compares the ledger's catalog with what the migrations create for its schema
revision (whitespace aside) and names each difference.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import TYPE_CHECKING

from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from . import migrate

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["expected_sqlite_objects", "schema_problems"]

#: Tables whose triggers are the ledger's own: a trigger on them that no migration made is foreign.
_TABLES = ("events", "datasets", "quanta", "ingests", "dataset_locations", "ledger_info")


def _normal(sql: str | None) -> str:
    """SQL text with its whitespace normalised (an upgrade may indent differently)."""
    return " ".join((sql or "").replace("(", " ( ").replace(")", " ) ").split()).replace('"', "")


@functools.cache
def expected_sqlite_objects(revision: str) -> dict[tuple[str, str], str]:
    """(type, name) -> normalised SQL of every object the migrations create up to ``revision``."""
    conn = sqlite3.connect(":memory:")
    try:
        engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
        with engine.begin() as sa_conn:
            migrate.upgrade(sa_conn, revision)
        return {
            (kind, name): _normal(sql)
            for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master")
        }
    finally:
        conn.close()


def schema_problems(ledger: Ledger, revision: str) -> list[str]:
    """Each way the ledger's views, triggers, tables and indexes differ from the shipped ones."""
    if ledger.dialect == "sqlite":
        return _sqlite_problems(ledger, revision)
    if ledger.dialect == "postgresql":
        return _postgresql_problems(ledger, revision)
    return []


def _sqlite_problems(ledger: Ledger, revision: str) -> list[str]:
    if revision not in migrate.known_revisions():
        return []  # Ledger.open refused it already; ingest reports it
    expected = expected_sqlite_objects(revision)
    actual = {
        (kind, name): (table, _normal(sql))
        for kind, name, table, sql in ledger.rows(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
        )
    }
    problems = []
    for (kind, name), sql in sorted(expected.items()):
        found = actual.get((kind, name))
        if found is None:
            problems.append(
                f"the {kind} {name} that schema revision {revision} creates is missing "
                f"({_consequence(kind)})"
            )
        elif found[1] != sql:
            problems.append(
                f"the {kind} {name} differs from the one schema revision {revision} creates "
                f"({_consequence(kind)})"
            )
    for (kind, name), (table, _) in sorted(actual.items()):
        if kind == "trigger" and (kind, name) not in expected and table in _TABLES:
            problems.append(f"the trigger {name} on {table} was not made by quantum-ledger")
    return problems


def _consequence(kind: str) -> str:
    return {
        "view": "its rows may not say what the events say; readers compute from the events",
        "trigger": "the table is no longer protected against UPDATE or DELETE",
    }.get(kind, "the ledger's schema was changed")


#: The PostgreSQL triggers revision 0001 and 0003 create, by table.
_PG_TRIGGERS = {
    f"{table}_{suffix}"
    for table in ("events", "datasets", "quanta")
    for suffix in ("append_only", "no_truncate")
}
_PG_CENTRAL_TRIGGERS = {
    f"{table}_{suffix}"
    for table in ("ingests", "dataset_locations")
    for suffix in ("append_only", "no_truncate")
}


def _postgresql_problems(ledger: Ledger, revision: str) -> list[str]:
    """On PostgreSQL: every append-only trigger present, enabled, and calling our function."""
    found = {
        name: (enabled, function)
        for name, enabled, function in ledger.rows(
            "SELECT t.tgname, t.tgenabled, p.proname FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
        )
    }
    central = revision not in ("0001", "0002")  # revision 0003 made the central tables
    wanted = _PG_TRIGGERS | (_PG_CENTRAL_TRIGGERS if central else set())
    problems = []
    for name in sorted(wanted):
        state = found.get(name)
        if state is None:
            problems.append(f"the trigger {name} is missing ({_consequence('trigger')})")
        elif state[0] == "D" or state[1] != "ledger_append_only":
            problems.append(
                f"the trigger {name} is disabled or changed ({_consequence('trigger')})"
            )
    return problems
