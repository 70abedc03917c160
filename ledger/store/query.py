"""Read-only queries for people (``qledger sql``): one statement that can only read.

Whoever writes the query may be hostile, so every layer assumes the others failed:

SQLite: the file is opened read-only by the reader's rule (`ledger.store.readonly`)
with ``query_only``; an authorizer
allows reading only (SELECT, reading tables, recursive CTEs, pragmas that only
describe) and calls only of the functions in `SAFE_SQLITE_FUNCTIONS`; Python's
driver runs one statement per call. A progress handler stops the query at its
timeout and on Ctrl-C.

PostgreSQL: the query is parsed by PostgreSQL's own parser (pglast) and
refused unless it is exactly one SELECT, VALUES or TABLE statement (or EXPLAIN
of one, or SHOW) with no data-modifying CTE, no SELECT INTO, no row locks, no
call of a function outside `SAFE_POSTGRES_FUNCTIONS` and no relation of the
server's catalogs (``pg_*``). The checked text is then sent, byte for byte, as a
prepared statement (the extended protocol refuses a second statement) in a
``READ ONLY`` transaction of a session whose ``default_transaction_read_only``
is on, with a ``statement_timeout``; psycopg cancels the query on Ctrl-C. None of
that replaces a role that cannot write: the threat model (docs) says how
to give inspection its own read-only role, and ``role=`` runs the query as it.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import LedgerError, QueryError, QueryRefusedError, QueryTimeoutError
from . import connect, migrate
from .connect import is_sqlite_target, sqlite_path
from .ledger import Ledger
from .readonly import SQLiteReader

__all__ = [
    "DEFAULT_QUERY_TIMEOUT_S",
    "SAFE_POSTGRES_FUNCTIONS",
    "SAFE_SQLITE_FUNCTIONS",
    "QueryResult",
    "check_postgres_query",
    "read_only_query",
]

#: Seconds a query may run before it is stopped (None or 0: no limit).
DEFAULT_QUERY_TIMEOUT_S = 60.0

_READ_ONLY_HELP = (
    "qledger sql runs one read-only statement (SELECT, WITH, VALUES, TABLE, EXPLAIN; "
    "PRAGMA table_info on SQLite, SHOW on PostgreSQL)"
)

# --- SQLite -------------------------------------------------------------------------------

#: Functions a SQLite query may call: the core scalar, date, math, JSON, aggregate
#: and window functions. Left out: load_extension (loads code), fts3_tokenizer
#: (takes a pointer), sqlite_log (writes to the error log), randomblob and
#: zeroblob (allocate up to a gigabyte each), the rtree/fts helpers (the
#: ledger has no such tables; rtreenode has a history of memory bugs), and the
#: connection-state ones (changes, last_insert_rowid, total_changes).
SAFE_SQLITE_FUNCTIONS = frozenset(
    """
    -> ->> abs acos acosh asin asinh atan atan2 atanh avg ceil ceiling char coalesce
    concat concat_ws cos cosh count cume_dist current_date current_time current_timestamp
    date datetime degrees dense_rank exp first_value floor format glob group_concat hex
    ifnull iif instr json json_array json_array_length json_error_position json_extract
    json_group_array json_group_object json_insert json_object json_patch json_pretty
    json_quote json_remove json_replace json_set json_type json_valid jsonb jsonb_array
    jsonb_extract jsonb_group_array jsonb_group_object jsonb_insert jsonb_object
    jsonb_patch jsonb_remove jsonb_replace jsonb_set julianday lag last_value lead length
    like likelihood likely ln log log10 log2 lower ltrim max min mod nth_value ntile
    nullif octet_length percent_rank pi pow power printf quote radians random rank
    replace round row_number rtrim sign sin sinh soundex sqlite_source_id sqlite_version
    sqrt strftime string_agg substr substring sum tan tanh time timediff total trim trunc
    typeof unhex unicode unixepoch unlikely upper
    """.split()  # noqa: SIM905 -- a word list reads (and diffs) better than quoted names
)

#: Authorizer actions a read-only query needs besides function calls.
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
#: Pragmas that only describe the database (allowed when they set nothing).
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "user_version",
        "schema_version",
        "page_count",
        "page_size",
        "encoding",
        "compile_options",
        "function_list",
    }
)
#: SQLite virtual-machine steps between two looks at the clock and at Ctrl-C.
_PROGRESS_STEPS = 10_000


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        # arg2 is the function's name as written; SQLite matches names case-blind.
        return sqlite3.SQLITE_OK if (arg2 or "").lower() in SAFE_SQLITE_FUNCTIONS else _DENY
    pragma = (arg1 or "").lower()
    # table_info(x) passes x as arg2; the two version pragmas with a value would set it.
    if (
        action == sqlite3.SQLITE_PRAGMA
        and pragma in _READ_PRAGMAS
        and (arg2 is None or pragma not in ("user_version", "schema_version"))
    ):
        return sqlite3.SQLITE_OK
    return _DENY


_DENY = sqlite3.SQLITE_DENY


class _Stopper:
    """A progress handler: stops a SQLite query at its deadline or on Ctrl-C."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = time.monotonic() + timeout if timeout else None
        self.interrupted = False
        self.timed_out = False

    def __call__(self) -> int:
        # Python runs a pending SIGINT handler here, between the driver's steps: the
        # KeyboardInterrupt it raises would be swallowed by the driver, so keep it.
        try:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.timed_out = True
                return 1
            return 0
        except KeyboardInterrupt:
            self.interrupted = True
            return 1


def _sqlite_error(e: sqlite3.Error, where: str, stopper: _Stopper, timeout: float | None) -> Any:
    """The exception to raise for a driver error during a SQLite query."""
    if stopper.interrupted or (str(e) == "interrupted" and not stopper.timed_out):
        # Ctrl-C, whether the handler caught it or the driver swallowed it.
        return KeyboardInterrupt()
    if stopper.timed_out:
        return QueryTimeoutError(
            f"{where}: the query ran longer than {timeout:g} s and was stopped "
            "(give a longer timeout, or 0 for none)"
        )
    message = str(e)
    if "not authorized" in message or "readonly" in message or "query_only" in message:
        return QueryRefusedError(f"{_READ_ONLY_HELP}; SQLite refused this one: {message}")
    if "malformed" in message or "disk image" in message or "not a database" in message:
        return migrate.translate_db_error(e, where)
    return QueryError(f"{where}: {message}")


class QueryResult:
    """The columns and rows of a read-only query; close it (or use ``with``) when done.

    Iterating streams the rows; a SQLite query keeps its timeout and Ctrl-C
    check while rows are fetched.
    """

    def __init__(
        self,
        columns: list[str],
        rows: Iterator[tuple[Any, ...]],
        close: Callable[[], None],
    ) -> None:
        self.columns = columns
        self._rows = rows
        self._close = close

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self._rows

    def close(self) -> None:
        """Release the connection (and roll back the read-only transaction)."""
        stop = getattr(self._rows, "close", None)
        if stop is not None:
            stop()  # a generator still reading from the connection, first
        self._close()

    def __enter__(self) -> QueryResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlite_query(
    path: str, query: str, params: Mapping[str, str], timeout: float | None
) -> QueryResult:
    reader = SQLiteReader(path)  # query_only; writes nothing, needs no write access
    conn = reader.conn
    conn.set_authorizer(_authorize)
    stopper = _Stopper(timeout)
    conn.set_progress_handler(stopper, _PROGRESS_STEPS)
    try:
        cursor = conn.execute(query, dict(params))
    except sqlite3.Error as e:
        conn.close()
        raise _sqlite_error(e, path, stopper, timeout) from e
    except sqlite3.Warning as e:  # several statements at once (Python 3.11)
        conn.close()
        raise QueryRefusedError(f"{path}: {e}; give one statement") from e
    columns = [d[0] for d in cursor.description or ()]

    def rows() -> Iterator[tuple[Any, ...]]:
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.Error as e:
                reader.check_unchanged()  # a writer changed the file: that is the reason
                raise _sqlite_error(e, path, stopper, timeout) from e
            if row is None:
                reader.check_unchanged()  # an immutable read saw one moment, or says not
                return
            yield row

    return QueryResult(columns, rows(), conn.close)


# --- PostgreSQL -----------------------------------------------------------------------------

#: Functions a PostgreSQL query may call (unqualified or in ``pg_catalog``):
#: aggregates, window functions, string, number, date, JSON and array functions
#: that compute a value and nothing else. Everything else is refused, so
#: pg_read_file, pg_ls_dir, lo_*, dblink, set_config, pg_sleep, pg_terminate_backend,
#: pg_advisory_lock, query_to_xml (runs SQL given as text), nextval... are.
SAFE_POSTGRES_FUNCTIONS = frozenset(
    """
    abs age any_value array_agg array_append array_cat array_dims array_length array_lower
    array_ndims array_position array_positions array_prepend array_remove array_replace
    array_to_json array_to_string array_upper ascii avg bit_length bool_and bool_or btrim
    cardinality cbrt ceil ceiling char_length character_length chr clock_timestamp concat
    concat_ws corr count covar_pop covar_samp cume_dist current_database date date_bin
    date_part date_trunc decode degrees dense_rank div encode every exp extract factorial
    first_value floor format gcd gen_random_uuid generate_series initcap isfinite
    json_agg json_array_elements json_array_elements_text json_array_length json_build_array
    json_build_object json_each json_each_text json_extract_path json_extract_path_text
    json_object json_object_agg json_object_keys json_strip_nulls json_to_record
    json_to_recordset json_typeof jsonb_agg jsonb_array_elements jsonb_array_elements_text
    jsonb_array_length jsonb_build_array jsonb_build_object jsonb_each jsonb_each_text
    jsonb_extract_path jsonb_extract_path_text jsonb_insert jsonb_object jsonb_object_agg
    jsonb_object_keys jsonb_path_exists jsonb_path_match jsonb_path_query
    jsonb_path_query_array jsonb_path_query_first jsonb_pretty jsonb_set jsonb_strip_nulls
    jsonb_to_record jsonb_to_recordset jsonb_typeof justify_days justify_hours
    justify_interval lag last_value lcm lead left length ln log log10 lower lpad ltrim
    make_date make_interval make_time make_timestamp make_timestamptz max md5 min mod mode
    normalize now nth_value ntile num_nonnulls num_nulls octet_length overlaps overlay
    percent_rank percentile_cont percentile_disc pg_size_pretty pg_typeof pi position
    power quote_ident quote_literal quote_nullable radians random rank regexp_count
    regexp_instr regexp_like regexp_match regexp_matches regexp_replace
    regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse right
    round row_number row_to_json rpad rtrim scale sha224 sha256 sha384 sha512 sign split_part
    sqrt starts_with statement_timestamp stddev stddev_pop stddev_samp string_agg
    string_to_array string_to_table strpos substr substring sum timezone to_char to_date
    to_hex to_json to_jsonb to_number to_timestamp transaction_timestamp translate trim
    trunc unistr unnest upper var_pop var_samp variance version width_bucket
    """.split()  # noqa: SIM905 -- a word list reads (and diffs) better than quoted names
)

#: Statements that may stand alone: SELECT (also VALUES and TABLE), EXPLAIN of one, SHOW.
_TOP_STATEMENTS = frozenset({"SelectStmt", "ExplainStmt", "VariableShowStmt"})
#: Schemas a query may not name: the server's catalogs (information_schema is allowed).
_FOREIGN_SCHEMAS = ("pg_",)
#: ``:name`` placeholders are replaced by literals; this is what a name looks like.
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A character that makes the ``:`` after it part of something else (``a[1:n]``).
_AFTER_WORD = re.compile(r"[\w:\\]")


def _pglast() -> Any:
    try:
        import pglast
    except ImportError as e:  # the postgres extra brings it with psycopg
        raise QueryRefusedError(
            "qledger sql on PostgreSQL checks each query with PostgreSQL's own parser, "
            'pglast, which is not installed: pip install "quantum-ledger[postgres]"'
        ) from e
    return pglast


def _walk(root: Any, node_class: type[Any]) -> Iterator[Any]:
    """Every pglast node at or below ``root``."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple | list):
            stack.extend(node)
        elif isinstance(node, node_class):
            yield node
            stack.extend(getattr(node, name, None) for name in type(node).__slots__)


def _names(nodes: Any) -> list[str]:
    return [str(getattr(n, "sval", n)) for n in nodes or ()]


def _statement(node_name: str) -> str:
    """A parser node's statement as people name it: ``DeleteStmt`` -> ``a DELETE``."""
    words = re.findall(r"[A-Z][a-z]*", node_name.removesuffix("Stmt"))
    return "a " + " ".join(words).upper()


def check_postgres_query(query: str) -> None:
    """Refuse a PostgreSQL query that is not one statement that only reads.

    Raises:
        QueryRefusedError: not exactly one statement; not a SELECT, VALUES,
            TABLE, EXPLAIN of one, or SHOW; a data-modifying CTE, SELECT INTO,
            a row lock; a function outside `SAFE_POSTGRES_FUNCTIONS`; a
            relation or function of a schema other than the ledger's.
        QueryError: PostgreSQL's parser cannot parse it.
    """
    pglast = _pglast()
    try:
        statements = pglast.parser.parse_sql(query)
    except pglast.parser.ParseError as e:
        raise QueryError(f"the query does not parse: {e}") from e
    if len(statements) != 1:
        raise QueryRefusedError(
            f"{_READ_ONLY_HELP}; this query holds {len(statements)} statements: give exactly one"
        )
    top = statements[0].stmt
    kind = type(top).__name__
    if kind not in _TOP_STATEMENTS:
        raise QueryRefusedError(f"{_READ_ONLY_HELP}; refused: {_statement(kind)}")
    if kind == "ExplainStmt" and type(top.query).__name__ != "SelectStmt":
        raise QueryRefusedError(f"{_READ_ONLY_HELP}; refused: EXPLAIN of a statement that writes")
    for node in _walk(top, pglast.ast.Node):
        name = type(node).__name__
        if name.endswith("Stmt") and name not in ("SelectStmt", "ExplainStmt", kind):
            raise QueryRefusedError(
                f"{_READ_ONLY_HELP}; refused: {_statement(name)} inside the query"
            )
        if name == "IntoClause":
            raise QueryRefusedError(f"{_READ_ONLY_HELP}; refused: SELECT ... INTO writes a table")
        if name == "LockingClause":
            raise QueryRefusedError(f"{_READ_ONLY_HELP}; refused: FOR UPDATE/SHARE locks rows")
        if name == "FuncCall":
            *schema, function = (s.lower() for s in _names(node.funcname))
            if schema not in ([], ["pg_catalog"]) or function not in SAFE_POSTGRES_FUNCTIONS:
                raise QueryRefusedError(
                    f"qledger sql calls only functions that compute a value; refused: "
                    f"{'.'.join([*schema, function])}() (the safe list is "
                    "ledger.store.query.SAFE_POSTGRES_FUNCTIONS)"
                )
        if name == "RangeVar":
            schema_name = (node.schemaname or "").lower()
            relation = (node.relname or "").lower()
            if schema_name.startswith(_FOREIGN_SCHEMAS) or relation.startswith("pg_"):
                shown = f"{schema_name}.{relation}" if schema_name else relation
                raise QueryRefusedError(
                    f"qledger sql reads the ledger's tables and views; refused: {shown} "
                    "(the server's catalogs are for psql)"
                )
        operator = _names(node.name) if name == "A_Expr" else []
        if len(operator) > 1 and operator[0].lower() != "pg_catalog":
            raise QueryRefusedError(
                f"qledger sql uses only built-in operators; refused: {'.'.join(operator)}"
            )


def _bind_literals(
    query: str, params: Mapping[str, str], quote_literal: Callable[[str], str]
) -> tuple[str, list[str]]:
    """The query with each ``:name`` replaced by the quoted literal of its value.

    Placeholders are found with PostgreSQL's own scanner, so a ``:name`` inside
    a string, a quoted identifier or a comment is left alone, as is an array
    slice (``a[1:n]``). Also returns the names that look like placeholders but
    have no value.
    """
    pglast = _pglast()
    try:
        tokens = pglast.parser.scan(query)  # offsets in characters, ends inclusive
    except pglast.parser.ParseError as e:
        raise QueryError(f"the query does not parse: {e}") from e
    out: list[str] = []
    unbound: list[str] = []
    done = 0
    for colon, name in itertools.pairwise(tokens):
        if colon.name != "ASCII_58" or name.start != colon.end + 1:
            continue
        if colon.start > 0 and _AFTER_WORD.match(query, colon.start - 1):
            continue  # "a[1:n]": a slice, not a placeholder
        word = query[name.start : name.end + 1]
        if not _PARAM_NAME.fullmatch(word):
            continue
        if word not in params:
            unbound.append(word)  # maybe a slice "a[:n]": PostgreSQL will tell
            continue
        out.append(query[done : colon.start])
        out.append(quote_literal(params[word]))
        done = name.end + 1
    out.append(query[done:])
    return "".join(out), unbound


def _server_query(
    target: str, query: str, params: Mapping[str, str], timeout: float | None, role: str | None
) -> QueryResult:
    where = connect.display_target(target)
    url = connect.server_url(target)
    if url.get_backend_name() != "postgresql" or url.get_driver_name() != "psycopg":
        raise QueryRefusedError(
            f"{where}: qledger sql reads SQLite files and PostgreSQL through psycopg "
            "(postgresql+psycopg://...) only: it checks every query for that database"
        )
    from psycopg import Error as PsycopgError
    from psycopg import sql as psql
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    _pglast()  # refuse before connecting when the parser is missing
    engine = connect.server_engine(target, poolclass=NullPool)
    try:
        raw = engine.raw_connection()
    except DBAPIError as e:
        engine.dispose()
        raise migrate.translate_db_error(e, where) from e
    pg: Any = raw.driver_connection

    def close() -> None:
        # A session the server ended is invalidated, not reset: resetting it would
        # fail, and the pool would log that failure on stderr.
        try:
            if not (pg.closed or pg.broken):
                pg.rollback()
        except PsycopgError:
            pass
        if pg.closed or pg.broken:
            raw.invalidate()
        raw.close()
        engine.dispose()

    try:
        checked, unbound = _bind_literals(query, params, lambda v: psql.Literal(v).as_string(pg))
        try:
            check_postgres_query(checked)
        except QueryError as e:
            if unbound and not isinstance(e, QueryRefusedError):
                names = ", ".join(f"-p {n}=VALUE" for n in unbound)
                raise QueryError(f"{e} (placeholders without a value: {names})") from e
            raise
        pg.autocommit = True
        milliseconds = str(int(timeout * 1000)) if timeout else "0"
        # The session: read-only by default, a statement timeout, no waiting on locks
        # for longer, and no transaction left idle. The query cannot SET them back:
        # SET is refused above, and so is set_config.
        pg.execute(
            "SELECT set_config('default_transaction_read_only', 'on', false), "
            "set_config('statement_timeout', %(ms)s, false), "
            "set_config('lock_timeout', %(ms)s, false), "
            "set_config('idle_in_transaction_session_timeout', %(ms)s, false)",
            {"ms": milliseconds},
        )
        if role:
            pg.execute(psql.SQL("SET ROLE {}").format(psql.Identifier(role)))
        pg.autocommit = False
        pg.read_only = True  # BEGIN READ ONLY
        cursor = pg.cursor()
        # prepare=True: the extended protocol, which refuses a second statement.
        cursor.execute(checked.encode(), prepare=True)
        columns = [d.name for d in cursor.description or ()]
        rows = iter(cursor.fetchall() if cursor.description else ())
    except (LedgerError, KeyboardInterrupt):
        close()
        raise
    except PsycopgError as e:
        broken = bool(pg.broken or pg.closed)
        close()
        raise _postgres_error(e, where, timeout, broken) from e
    return QueryResult(columns, rows, close)


def _postgres_error(e: Exception, where: str, timeout: float | None, broken: bool) -> LedgerError:
    state = getattr(e, "sqlstate", None) or ""
    message = migrate.one_line(str(e))
    if broken or connect.connection_lost(e):
        return migrate.translate_db_error(e, where)
    if state == "57014":  # query_canceled: the statement timeout (Ctrl-C raised itself)
        return QueryTimeoutError(
            f"{where}: the query ran longer than {timeout:g} s and was stopped "
            "(give a longer timeout, or 0 for none)"
        )
    if state in ("25006", "42501"):  # read-only transaction, insufficient privilege
        return QueryRefusedError(f"{_READ_ONLY_HELP}; PostgreSQL refused it: {message}")
    return QueryError(f"{where}: {message}")


# --- both ----------------------------------------------------------------------------------


def read_only_query(
    target: str | os.PathLike[str],
    query: str,
    params: Mapping[str, str] | None = None,
    *,
    timeout: float | None = DEFAULT_QUERY_TIMEOUT_S,
    role: str | None = None,
) -> QueryResult:
    """Run one query that can only read, on a ledger file or a PostgreSQL ledger.

    Args:
        target: a ledger file or a ``postgresql+psycopg://`` URL.
        query: one statement; ``:name`` placeholders take ``params``.
        params: values of the placeholders (bound as text).
        timeout: seconds before the query is stopped; None or 0 for no limit.
        role: PostgreSQL only: run the query as this role (``SET ROLE``), e.g.
            the read-only role of the threat model (docs).

    Raises:
        QueryRefusedError: the query could write or leave its read-only session.
        QueryTimeoutError: it ran longer than ``timeout``.
        QueryError: it does not parse, or fails (an unknown table, ...).
        KeyboardInterrupt: Ctrl-C stopped it (the server's query is cancelled).
        LedgerError: the target is not a ledger, or cannot be reached.
    """
    where = os.fspath(target)
    with Ledger.open(where):  # the same checks as every command: a ledger, this schema
        pass
    bound = dict(params or {})
    if is_sqlite_target(where):
        if role:
            raise QueryRefusedError("role= is for PostgreSQL; a SQLite file has no roles")
        return _sqlite_query(sqlite_path(where), query, bound, timeout)
    return _server_query(where, query, bound, timeout, role)
