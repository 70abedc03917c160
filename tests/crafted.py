"""Crafted ledgers: a real ledger copied, a value edited behind the triggers, the chain recomputed.

The hard case for ``verify`` is a ledger whose hash chains verify: whoever can
edit the file can recompute every hash (and the definition digest in each
quantum's first ``quantum_started``). `craft` does exactly that: copy a real
ledger made by `base_ledger`, drop the append-only triggers, apply an edit,
recompute the definition digests and every chain, and put the triggers back.
`CRAFTS` names a battery of edits; tests use it to check that verify reports
each one and that no command crashes on any.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger import QuantumBackedButler
from ledger.events import chain_hash, definition_digest
from ledger.store.validate import DATASET_COLUMNS, QUANTA_COLUMNS
from ledger.testing import make_quantum

__all__ = ["CRAFTS", "Base", "Craft", "base_ledger", "craft", "rehash"]


@dataclass
class Base:
    """A real shared ledger: quantum ``ok`` succeeded, quantum ``failed`` failed after a put."""

    path: Path
    root: Path
    ok: str
    failed: str
    #: A predicted input of ``ok`` that it read, and an output it wrote.
    input_id: str
    output_id: str
    extra: dict[str, str] = field(default_factory=dict)


def base_ledger(directory: Path) -> Base:
    """Record two quanta (one succeeds, one fails after a put) in one ledger in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory / "repo"
    path = directory / "base.ledger"
    good = make_quantum(root, visit=1, n_inputs=2, n_missing=1, n_outputs=2)
    with QuantumBackedButler.initialize(good.root, good.quantum, ledger=path) as butler:
        butler.stored_many(good.predicted_inputs)
        for ref in good.inputs:
            butler.get(ref, parameters={"keys": ["visit"]})
        butler.put({"flux": 1.5}, good.outputs[0])
        butler.put({"flux": 2.5}, good.outputs[1])
        butler.pruneDatasets([good.outputs[1]], disassociate=True, unstore=True, purge=True)
    ok = str(butler.quantum_id)
    bad = make_quantum(root, visit=2, n_inputs=1, n_outputs=2, output_type="calexp2")
    try:
        with QuantumBackedButler.initialize(bad.root, bad.quantum, ledger=path) as butler:
            butler.get(bad.inputs[0])
            butler.put({"flux": 3.5}, bad.outputs[0])
            raise RuntimeError("the fit did not converge")
    except RuntimeError:
        pass
    failed = str(butler.quantum_id)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Base(path, root, ok, failed, str(good.inputs[0].id), str(good.outputs[0].id))


def _text(data: bytes) -> str:
    """Decode stored text as the hash does (a lone surrogate survives as itself)."""
    return data.decode("utf-8", "surrogatepass")


def _digest_args(row: tuple[object, ...]) -> tuple[object, ...]:
    """chain_hash's arguments; a non-text free-text value is hashed as its text."""
    values = list(row)
    for i in (7, 8, 9):  # error_type, error_message, detail
        if values[i] is not None and not isinstance(values[i], str):
            values[i] = str(values[i])
    return tuple(values)


def rehash(conn: sqlite3.Connection) -> None:
    """Recompute every quantum's definition digest and hash chain, as a forger would."""
    conn.text_factory = _text
    quanta = {
        row[0]: row
        for row in conn.execute(
            "SELECT " + ", ".join(f'"{c}"' for c in QUANTA_COLUMNS) + " FROM quanta"
        )
    }
    for qid, row in quanta.items():
        rows = conn.execute(
            "SELECT " + ", ".join(f'"{c}"' for c in DATASET_COLUMNS) + " FROM datasets "
            "WHERE quantum_id = ?",
            (qid,),
        ).fetchall()
        first = conn.execute(
            "SELECT seq, detail FROM events WHERE quantum_id = ? AND kind = 'quantum_started' "
            "ORDER BY seq LIMIT 1",
            (qid,),
        ).fetchone()
        if first is None:
            continue
        try:
            detail = json.loads(first[1])
            detail["definition"] = definition_digest(row, rows)
        except (TypeError, ValueError, AttributeError, RecursionError):
            continue  # the edit made the definition itself unreadable: leave it
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        conn.execute("UPDATE events SET detail = ? WHERE seq = ?", (text, first[0]))
    ids = [r[0] for r in conn.execute("SELECT DISTINCT quantum_id FROM events")]
    for qid in ids:
        prev: str | None = None
        for row in conn.execute(
            "SELECT seq, quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, "
            "error_type, error_message, detail, recorded_at FROM events WHERE quantum_id IS ? "
            "ORDER BY quantum_seq, seq",
            (qid,),
        ).fetchall():
            digest = chain_hash(*_digest_args(row[1:]), prev)  # type: ignore[arg-type]
            conn.execute(
                "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, row[0])
            )
            prev = digest


Edit = Callable[[sqlite3.Connection, Base], None]


@dataclass(frozen=True)
class Craft:
    """One way to craft a ledger: an edit before the chains are recomputed, and one after."""

    name: str
    edit: Edit
    after: Edit | None = None
    #: A trigger left dropped.
    drop: str | None = None


def craft(base: Base, dest: Path, how: Craft) -> Path:
    """A copy of ``base`` at ``dest`` with ``how`` applied and its chains recomputed."""
    shutil.copyfile(base.path, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")  # one file: what the test compares
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    conn.execute("BEGIN")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    how.edit(conn, base)
    rehash(conn)
    if how.after is not None:
        how.after(conn, base)
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    for name, sql in triggers:
        if name not in present and name != how.drop:
            conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()
    return dest


# --- the battery -------------------------------------------------------------------------


def _sql(statement: str, *params: object) -> Edit:
    """An edit that runs one statement; ``{ok}``, ``{failed}``, ``{input}``, ``{output}`` filled."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        values = {
            "ok": base.ok,
            "failed": base.failed,
            "input": base.input_id,
            "output": base.output_id,
        }
        conn.execute(statement.format(**values), params)

    return edit


def _event(kind: str, column: str, value: object, *, quantum: str = "ok") -> Edit:
    """Set ``column`` of the first ``kind`` event of a quantum."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        qid = base.ok if quantum == "ok" else base.failed
        seq = conn.execute(
            "SELECT MIN(seq) FROM events WHERE quantum_id = ? AND kind = ?", (qid, kind)
        ).fetchone()[0]
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (value, seq))

    return edit


def _rename_quantum(new: str) -> Edit:
    """Give quantum ``ok`` another id, in every table (so the ledger stays consistent)."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        for table in ("quanta", "datasets", "events"):
            conn.execute(f"UPDATE {table} SET quantum_id = ? WHERE quantum_id = ?", (new, base.ok))

    return edit


def _rename_dataset(new: Callable[[str], str]) -> Edit:
    """Give ``ok``'s first input another id in datasets and events."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        for table in ("datasets", "events"):
            conn.execute(
                f"UPDATE {table} SET dataset_id = ? WHERE dataset_id = ?",
                (new(base.input_id), base.input_id),
            )

    return edit


def _record(change: Callable[[dict[str, object]], None]) -> Edit:
    """Change the datastore record in ``ok``'s first put detail."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        seq, text = conn.execute(
            "SELECT seq, detail FROM events WHERE quantum_id = ? AND kind = 'put' ORDER BY seq",
            (base.ok,),
        ).fetchone()
        detail = json.loads(text)
        change(detail["records"][0])
        conn.execute("UPDATE events SET detail = ? WHERE seq = ?", (json.dumps(detail), seq))

    return edit


def _input_record(change: Callable[[dict[str, object]], None]) -> Edit:
    """Change the datastore record of ``ok``'s first input in ``datasets``."""

    def edit(conn: sqlite3.Connection, base: Base) -> None:
        (text,) = conn.execute(
            "SELECT datastore_records FROM datasets WHERE dataset_id = ? AND quantum_id = ?",
            (base.input_id, base.ok),
        ).fetchone()
        records = json.loads(text)
        change(next(iter(records.values()))[0])
        conn.execute(
            "UPDATE datasets SET datastore_records = ? WHERE dataset_id = ? AND quantum_id = ?",
            (json.dumps(records), base.input_id, base.ok),
        )

    return edit


def _shift_quantum_seq(delta: float) -> Edit:
    def edit(conn: sqlite3.Connection, base: Base) -> None:
        conn.execute(
            "UPDATE events SET quantum_seq = quantum_seq + ?, call_id = call_id + ? "
            "WHERE quantum_id = ?",
            (delta, delta, base.ok),
        )

    return edit


def _append_after_end(conn: sqlite3.Connection, base: Base) -> None:
    """A get appended after the failed quantum's quantum_failed, as if it had happened."""
    last = conn.execute(
        "SELECT quantum_seq, attempt, recorded_at FROM events WHERE quantum_id = ? "
        "ORDER BY quantum_seq DESC LIMIT 1",
        (base.failed,),
    ).fetchone()
    (dataset,) = conn.execute(
        "SELECT dataset_id FROM datasets WHERE quantum_id = ? AND role = 'input'", (base.failed,)
    ).fetchone()
    conn.execute(
        "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
        "outcome, recorded_at, hash) VALUES (?, ?, ?, ?, 'get', ?, 'ok', ?, '')",
        (base.failed, last[0] + 1, last[0] + 1, last[1], dataset, last[2]),
    )


def _replace_status_view(conn: sqlite3.Connection, base: Base) -> None:
    """quantum_status says every quantum succeeded."""
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'quantum_status'"
    ).fetchone()
    conn.execute("DROP VIEW quantum_status")
    start = sql.index("CASE WHEN")
    end = sql.index("AS status")
    conn.execute(sql[:start] + "'succeeded' " + sql[end:])


def _duplicate_quantum_seq(conn: sqlite3.Connection, base: Base) -> None:
    """Rebuild events without its UNIQUE(quantum_id, quantum_seq), then repeat an event."""
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    start = sql.index("CONSTRAINT uq_events")
    end = sql.index(")", sql.index("UNIQUE", start)) + 1
    new = sql[:start].rstrip().rstrip(",") + sql[end:]
    views = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall()
    for name, _ in views:
        conn.execute(f"DROP VIEW {name}")
    conn.execute(new.replace("CREATE TABLE events", "CREATE TABLE events_new", 1))
    conn.execute("INSERT INTO events_new SELECT * FROM events")
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_new RENAME TO events")
    for _, view in views:
        conn.execute(view)
    conn.execute(
        "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, "
        "outcome, error_type, error_message, detail, recorded_at, prev_hash, hash) "
        "SELECT quantum_id, quantum_seq, call_id, attempt, kind, dataset_id, outcome, "
        "error_type, error_message, detail, recorded_at, prev_hash, hash FROM events "
        "WHERE quantum_id = ? AND kind = 'get' ORDER BY seq LIMIT 1",
        (base.ok,),
    )


_DEEP = '{"a":' * 5000 + "1" + "}" * 5000
_DEEP_ARRAY = "[" * 5000 + "]" * 5000

CRAFTS: list[Craft] = [
    # JSON columns: deep, NaN, Infinity, not an object, not JSON.
    Craft("detail_deep", _event("put", "detail", _DEEP)),
    Craft("detail_nan_in_success", _event("quantum_succeeded", "detail", '{"caveats":NaN}')),
    Craft("detail_infinity", _event("get", "detail", '{"parameters":{"x":Infinity}}')),
    Craft("detail_huge_number", _event("get", "detail", '{"parameters":{"x":1e999}}')),
    Craft("detail_not_object", _event("prune", "detail", "[1, 2]")),
    Craft("detail_invalid", _event("prune", "detail", '{"purge": tru')),
    Craft("detail_lone_surrogate", _event("get", "detail", '{"storage_class":"\\ud800"}')),
    Craft(
        "detail_started_pid_huge",
        _event("quantum_started", "detail", '{"host":"h","pid":99999999999999999999}'),
    ),
    Craft(
        "detail_started_host_number",
        _event("quantum_started", "detail", '{"host":5,"pid":"x"}', quantum="failed"),
    ),
    Craft("detail_caveats_not_list", _event("quantum_succeeded", "detail", '{"caveats":7}')),
    Craft(
        "quanta_data_id_deep",
        _sql("UPDATE quanta SET data_id = ? WHERE quantum_id = '{ok}'", _DEEP),
    ),
    Craft(
        "quanta_data_id_nan",
        _sql("UPDATE quanta SET data_id = ? WHERE quantum_id = '{ok}'", '{"visit":NaN}'),
    ),
    Craft("quanta_data_id_not_object", _sql("UPDATE quanta SET data_id = '[1]'")),
    Craft("datasets_dimensions_not_array", _sql("UPDATE datasets SET dimensions = '{{}}'")),
    Craft("datasets_dimensions_deep", _sql("UPDATE datasets SET dimensions = ?", _DEEP_ARRAY)),
    Craft("datasets_data_id_invalid", _sql("UPDATE datasets SET data_id = '{{not json'")),
    Craft(
        "datasets_records_nan",
        _sql(
            "UPDATE datasets SET datastore_records = '{{\"files\":[NaN]}}' "
            "WHERE datastore_records IS NOT NULL"
        ),
    ),
    Craft("records_path_number", _input_record(lambda r: r.update(path=5))),
    Craft("records_size_text", _input_record(lambda r: r.update(file_size="60"))),
    Craft("records_missing_path", _input_record(lambda r: r.pop("path"))),
    Craft("put_record_path_number", _record(lambda r: r.update(path=7))),
    Craft("put_record_size_text", _record(lambda r: r.update(file_size="big"))),
    Craft("put_record_missing_keys", _record(lambda r: r.clear())),
    Craft("put_record_path_escapes", _record(lambda r: r.update(path="../../etc/passwd"))),
    # ids, kinds, times
    Craft("quantum_id_not_uuid", _rename_quantum("not-a-uuid")),
    Craft("quantum_id_uppercase", _rename_quantum("ABCDEF01-2345-4678-9ABC-DEF012345678")),
    Craft("dataset_id_not_uuid", _rename_dataset(lambda d: "dataset-" + d[:8])),
    Craft("dataset_id_uppercase", _rename_dataset(str.upper)),
    Craft("recorded_at_no_zone", _event("get", "recorded_at", "2026-01-01T00:00:00.000000")),
    Craft("recorded_at_garbage", _event("get", "recorded_at", "yesterday")),
    Craft(
        "recorded_at_impossible", _event("get", "recorded_at", "2026-02-30T25:61:00.000000+00:00")
    ),
    Craft("created_at_no_zone", _sql("UPDATE quanta SET created_at = '2026-01-01T00:00:00'")),
    Craft("unknown_kind", _event("get", "kind", "teleport")),
    Craft("unknown_outcome", _event("get", "outcome", "maybe")),
    Craft("unknown_role", _sql("UPDATE datasets SET role = 'sideways' WHERE role = 'output'")),
    # integers
    Craft("quantum_seq_negative", _shift_quantum_seq(-10)),
    Craft("quantum_seq_zero", _shift_quantum_seq(-1)),
    Craft("quantum_seq_not_integer", _shift_quantum_seq(0.5)),
    Craft("attempt_zero", _sql("UPDATE events SET attempt = 0 WHERE quantum_id = '{ok}'")),
    Craft("attempt_text", _sql("UPDATE events SET attempt = 'one' WHERE quantum_id = '{ok}'")),
    Craft("attempt_huge", _sql("UPDATE events SET attempt = 4611686018427387904")),
    Craft("call_id_nowhere", _event("get", "call_id", 999)),
    Craft("pid_huge", _sql("UPDATE quanta SET pid = 9223372036854775807")),
    Craft("position_text", _sql("UPDATE datasets SET position = 'first'")),
    Craft("error_type_blob", _event("quantum_failed", "error_type", b"\x00\xff", quantum="failed")),
    # NULLs and text
    Craft("dataset_id_null_on_get", _event("get", "dataset_id", None)),
    Craft("task_label_nul", _sql("UPDATE quanta SET task_label = 'isr' || char(0) || 'x'")),
    Craft(
        "task_label_lone_surrogate",
        _sql("UPDATE quanta SET task_label = CAST(X'6973eda080' AS TEXT)"),
    ),
    Craft(
        "ledger_info_schema_version",
        _sql("UPDATE ledger_info SET value = 'banana' WHERE key = 'schema_version'"),
    ),
    # the chain and the schema
    Craft("duplicate_quantum_seq", _duplicate_quantum_seq),
    Craft("wrong_prev_hash", lambda c, b: None, after=_event("stored", "prev_hash", "0" * 64)),
    Craft("hash_not_hex", lambda c, b: None, after=_event("stored", "hash", "z" * 64)),
    Craft("event_after_the_end", _append_after_end),
    Craft("status_view_replaced", _replace_status_view),
    Craft("trigger_dropped", lambda c, b: None, drop="events_no_update"),
]
