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
import re
import sqlite3
from typing import TYPE_CHECKING

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
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

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
    """On PostgreSQL: the views as shipped, and every append-only trigger in place."""
    if revision not in migrate.known_revisions():
        return []
    return _postgresql_view_problems(ledger, revision) + _postgresql_trigger_problems(
        ledger, revision
    )


@functools.cache
def shipped_views(revision: str, dialect: str) -> dict[str, str]:
    """View name -> the SELECT the migrations up to ``revision`` define it as, for ``dialect``.

    Each migration that creates views says which through its ``views(dialect)``
    function; a later revision's definition replaces an earlier one.
    """
    script = migrate.script_directory()
    found: dict[str, str] = {}
    for step in reversed(list(script.iterate_revisions(revision, "base"))):
        views = getattr(step.module, "views", None)
        for statement in views(dialect) if views is not None else ():
            match = re.fullmatch(r"\s*CREATE VIEW (\w+) AS\s+(.*?)\s*", statement, re.DOTALL)
            assert match is not None, f"revision {step.revision}: a view is CREATE VIEW x AS"
            found[match.group(1)] = match.group(2)
    return found


def _postgresql_view_problems(ledger: Ledger, revision: str) -> list[str]:
    """Each view whose definition is not the shipped one.

    The server keeps a view as a parse tree and prints it back normalised
    (``pg_get_viewdef``), so the ledger's view is compared with the shipped SQL
    as the same server prints it: the shipped definition is created as a
    temporary view in a transaction that is rolled back (nothing of the ledger
    is written; it needs only the TEMP privilege every role has by default).
    Where even that is refused (a read-only standby, a role without TEMP), the
    views' rows are compared with the shipped definitions' rows instead: that
    catches a view that lies about this ledger today, not one that would lie
    about rows still to come.
    """
    from sqlalchemy.exc import DBAPIError

    expected = shipped_views(revision, "postgresql")
    present = {
        name
        for (name,) in ledger.rows(
            "SELECT relname FROM pg_class WHERE relkind = 'v' "
            "AND relnamespace = current_schema()::regnamespace"
        )
    }
    compared = {name: body for name, body in expected.items() if name in present}
    try:
        differs = _definitions_differ(ledger, compared)
    except DBAPIError:
        differs = {name: _rows_differ(ledger, name, body) for name, body in compared.items()}
    problems = []
    for name in sorted(expected):
        if name not in present:
            problems.append(
                f"the view {name} that schema revision {revision} creates is missing "
                f"({_consequence('view')})"
            )
        elif differs[name]:
            problems.append(
                f"the view {name} differs from the one schema revision {revision} creates "
                f"({_consequence('view')})"
            )
    return problems


def _definitions_differ(ledger: Ledger, views: dict[str, str]) -> dict[str, bool]:
    """View name -> whether the server prints it differently from the shipped definition.

    The server's printout is not always a fixed point: a view re-created from
    it (as ``pg_dump`` restores views) may print with its casts moved. So the
    printouts of the shipped view, of the view made from that printout, and so
    on until it repeats, are all the shipped view.
    """
    from sqlalchemy import text

    result = {}
    with ledger.server_connection() as conn:
        try:
            for name, body in views.items():
                theirs = conn.execute(
                    text(
                        "SELECT pg_get_viewdef(to_regclass(quote_ident(current_schema()) "
                        "|| '.' || quote_ident(:n)))"
                    ),
                    {"n": name},
                ).scalar_one()
                ours: list[str] = []
                for step in range(4):
                    temp = f"qledger_shipped_{name}_{step}"
                    conn.execute(text(f"CREATE TEMP VIEW {temp} AS {body}"))
                    printed = conn.execute(
                        text("SELECT pg_get_viewdef(to_regclass('pg_temp.' || :t))"), {"t": temp}
                    ).scalar_one()
                    if printed in ours:
                        break
                    ours.append(printed)
                    body = printed.rstrip().rstrip(";")
                result[name] = theirs not in ours
        finally:
            conn.rollback()
    return result


def _rows_differ(ledger: Ledger, name: str, body: str) -> bool:
    """Whether the view's rows differ from the shipped definition's, today."""
    ((count,),) = ledger.rows(
        f"SELECT COUNT(*) FROM ((SELECT * FROM {name} EXCEPT ALL ({body})) "
        f"UNION ALL (({body}) EXCEPT ALL SELECT * FROM {name})) AS differing"
    )
    return bool(count)


def _postgresql_trigger_problems(ledger: Ledger, revision: str) -> list[str]:
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
