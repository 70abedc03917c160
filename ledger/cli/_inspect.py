"""Inspecting commands: ``show``, ``events``, ``replay`` and ``head`` (read-only)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ..events import Event, EventKind, Outcome
from ..provenance import QuantumProvenanceData
from ..store.connect import display_target
from ..store.ledger import Ledger
from ._common import (
    CANDIDATES_LISTED,
    STATUS_STYLE,
    Failure,
    fmt_data_id,
    fmt_time,
    parse_until,
    quantum_option,
    resolve_id,
    resolve_quantum,
    short_id,
    write_output,
)
from ._many import Ledgers, ledgers_argument
from ._output import (
    Cell,
    Column,
    Lines,
    TableWriter,
    count,
    is_terminal,
    iso_time,
    json_line,
    summary,
)

# --- show -----------------------------------------------------------------------------


def _status_rows(led: Ledger) -> list[dict[str, Any]]:
    """The ``quantum_status`` rows, with whether each is running (see `Ledger.status`)."""
    rows = led.status()
    for row in rows:
        row["quantum_id"] = str(row["quantum_id"])
        row["ledger"] = led.where
    return rows


def _note(row: Mapping[str, Any]) -> str:
    if row["status"] == "failed":
        return f"{row.get('error_type') or ''}: {row.get('error_message') or ''}"
    if row["state"] == "running":
        return f"pid {row['pid']} on {row['host']}, lease expires {row['lease_expires_at']}"
    if row["status"] == "interrupted":
        return f"{row['process']} (pid {row['pid']} on {row['host']})"
    return ", ".join(row.get("caveats") or [])


def _took(row: Mapping[str, Any]) -> str:
    """How long the quantum's last attempt ran (a retry's wait before it is not counted)."""
    started, ended = row.get("attempt_started_at") or row.get("started_at"), row.get("ended_at")
    if not started or not ended:
        return ""
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    seconds = max(seconds, 0.0)  # clocks of different hosts: never a negative duration
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


def _common_data_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The data ID keys and values that every row shares (shown once, not per row)."""
    ids = [json.loads(row["data_id"]) for row in rows]
    if len(ids) < 2:
        return {}
    return {k: v for k, v in ids[0].items() if all(i.get(k, object()) == v for i in ids[1:])}


def _status_table(
    rows: Sequence[Mapping[str, Any]], *, ledger_column: bool, quantum_column: bool
) -> None:
    """The status table on a terminal: short names and ids, shared data ID keys left out."""
    common = _common_data_id(rows)
    days = {(row.get("started_at") or "")[:10] for row in rows}
    columns = [Column("ledger")] if ledger_column else []
    columns += [Column("quantum")] if quantum_column else []
    columns += [Column("task"), Column("data ID"), Column("status")]
    columns += [Column(name, right=True) for name in ("att", "events", "get", "put")]
    columns += [Column("started"), Column("took", right=True)]
    table = TableWriter(columns, terminal=True)
    for row in rows:
        cells: list[Cell] = [Path(row["ledger"]).name] if ledger_column else []
        if quantum_column:
            cells.append(short_id(row["quantum_id"]))
        data_id = {k: v for k, v in json.loads(row["data_id"]).items() if k not in common}
        status = str(row["state"])
        cells += [
            str(row["task_label"]),
            fmt_data_id(data_id),
            (status + ("*" if _note(row) else ""), STATUS_STYLE.get(status, "")),
            str(row["attempts"]),
            f"{row['n_events']:,}",
            f"{row['n_get']:,}",
            f"{row['n_put']:,}",
            fmt_time(row.get("started_at"), date=len(days) > 1),
            _took(row),
        ]
        table.add(cells)
    table.close()


def _status_tsv(rows: Iterable[Mapping[str, Any]]) -> None:
    """The status table off a terminal: one row per quantum, every value in full."""
    names = ["ledger", "quantum_id", "task_label", "data_id", "status", "attempts", "n_events"]
    names += ["n_get", "n_put", "started_at", "ended_at", "took", "note"]
    table = TableWriter([Column(name) for name in names], terminal=False)
    for row in rows:
        values = [
            row["ledger"],
            row["quantum_id"],
            row["task_label"],
            row["data_id"],
            row["state"],
            row["attempts"],
            row["n_events"],
            row["n_get"],
            row["n_put"],
            iso_time(row.get("started_at")),
            iso_time(row.get("ended_at")),
            _took(row),
            _note(row),
        ]
        table.add(["" if v is None else str(v) for v in values])
    table.close()


#: Above this many quanta, ``show`` lists only those that did not succeed, and sums up per task.
LIST_AT_MOST = 100


def _task_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """One row per task label: how many quanta ended how, and their events."""
    states = ("succeeded", "failed", "running", "interrupted")
    columns = [Column("task")]
    columns += [Column(name, right=True) for name in ("quanta", *states, "events")]
    table = TableWriter(columns, terminal=True)
    per_task: dict[str, list[int]] = {}
    for row in rows:
        counts = per_task.setdefault(str(row["task_label"]), [0] * (len(states) + 2))
        counts[0] += 1
        counts[1 + states.index(str(row["state"]))] += 1
        counts[-1] += int(row["n_events"])
    for task, counts in sorted(per_task.items()):
        table.add([task, *(f"{n:,}" for n in counts)])
    table.close()


def _render_status(rows: Sequence[Mapping[str, Any]], n_ledgers: int, *, every: bool) -> None:
    """The status table, then one line per starred row, then a summary.

    On a terminal, past `LIST_AT_MOST` quanta (a central ledger) and without
    ``every``, the table lists only the quanta that did not succeed (at most
    `LIST_AT_MOST`), followed by a table per task. Off a terminal it lists
    every quantum, as tab-separated values with the note as a column; the
    summary goes to stderr.
    """
    terminal = is_terminal()
    if not terminal:
        _status_tsv(rows)
    elif len(rows) > LIST_AT_MOST and not every:
        listed = [row for row in rows if row["status"] != "succeeded"]
        more = len(listed) - LIST_AT_MOST
        listed = listed[:LIST_AT_MOST]
        if listed:
            head = f"listing the {len(listed):,} that did not succeed" + (
                f" (and {more:,} more)" if more > 0 else ""
            )
        else:
            head = "every one succeeded"
        summary(f"{count(len(rows), 'quantum', 'quanta')}: {head}; --all lists every one")
        if listed:
            _render_rows(listed, n_ledgers)
        _task_table(rows)
    else:
        _render_rows(rows, n_ledgers)
    counts: dict[str, int] = {}
    for row in rows:
        key = row["state"]
        if key == "interrupted":
            key = f"interrupted ({row['process']})"
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
    if not terminal:
        summary(f"{count(len(rows), 'quantum', 'quanta')}: {parts or 'none'}", terminal=False)
        return
    common = _common_data_id(rows)
    shared = f"; every data ID has {fmt_data_id(common)}" if common else ""
    days = sorted({(row.get("started_at") or "")[:10] for row in rows} - {""})
    on = f" on {days[0]}" if len(days) == 1 else ""
    took = "; took: the last attempt's" if any(row["attempts"] > 1 for row in rows) else ""
    text = f"{count(len(rows), 'quantum', 'quanta')}: {parts or 'none'}{shared}"
    summary(f"{text}; times in UTC{on}{took}", terminal=True)


def _render_rows(rows: Sequence[Mapping[str, Any]], n_ledgers: int) -> None:
    """The status table of these rows on a terminal, then one line per starred row."""
    quanta_per_ledger: dict[str, int] = {}
    for row in rows:
        quanta_per_ledger[row["ledger"]] = quanta_per_ledger.get(row["ledger"], 0) + 1
    several = max(quanta_per_ledger.values(), default=0) > 1
    _status_table(rows, ledger_column=n_ledgers > 1, quantum_column=several or n_ledgers == 1)
    lines = []
    for row in rows:
        note = _note(row)
        if note:
            where = Path(row["ledger"]).name if n_ledgers > 1 else short_id(row["quantum_id"])
            if several and n_ledgers > 1:
                where += f" {short_id(row['quantum_id'])}"
            lines.append(f"* {where}: {row['status']}: {note}\n")
    sys.stdout.write("".join(lines))


@click.command()
@ledgers_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per quantum.")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help=f"List every quantum, even past {LIST_AT_MOST} (a central ledger).",
)
@click.pass_context
def show(ctx: click.Context, ledgers: tuple[str, ...], as_json: bool, every: bool) -> None:
    """Show the quanta of ledgers or folders: status, attempts, counts and times.

    Status comes from the quantum_status view: succeeded, failed, or
    interrupted (no terminal event). A starred status has a note below the
    table: the error of a failed quantum, the caveats of a success, and for an
    interrupted quantum whether its recorded process may still be running
    (same host, pid alive) or is dead. Rows are in order of start. Past 100
    quanta (a central ledger) only those that did not succeed are listed,
    then a table per task; --all lists every one. A folder stands for the
    ledgers in it; a ledger that cannot be read is one line on stderr, and
    the others are shown. "took" is how long the last attempt ran (the wait
    before a retry is not counted). Off a terminal (a pipe, a file) the table
    is tab-separated values of every quantum, in full, with the note as a
    column, and the summary goes to stderr.

    \b
    Example:
        qledger show ledgers/
    """
    many = Ledgers(ledgers)
    rows: list[dict[str, Any]] = []
    read = 0
    for path in many:
        with many.reading(path), Ledger.open(path) as led:
            rows.extend(_status_rows(led))
            read += 1
    rows.sort(key=lambda row: (row.get("started_at") or "", row["ledger"]))
    if as_json:
        lines = Lines()
        for row in rows:
            lines.write(json_line(row) + "\n")
        lines.close()
    elif read or not many.several:
        _render_status(rows, len(many), every=every)
    many.finish(ctx)


# --- events -------------------------------------------------------------------------------


@click.command()
@ledgers_argument
@quantum_option
@click.option(
    "--kind",
    "-k",
    multiple=True,
    type=click.Choice([k.value for k in EventKind], case_sensitive=False),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--dataset", "-d", metavar="ID", help="Only events about this dataset (id or prefix)."
)
@click.option(
    "--outcome",
    multiple=True,
    type=click.Choice([o.value for o in Outcome], case_sensitive=False),
    help="Only events with this outcome (repeatable).",
)
@click.option("--attempt", "-a", type=click.IntRange(min=1), help="Only this attempt.")
@click.option(
    "--detail", is_flag=True, help="Add the detail column (JSON; a traceback as its lines)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event.")
@click.pass_context
def events(
    ctx: click.Context,
    ledgers: tuple[str, ...],
    quantum: str | None,
    kind: tuple[str, ...],
    dataset: str | None,
    outcome: tuple[str, ...],
    attempt: int | None,
    detail: bool,
    as_json: bool,
) -> None:
    """List events in order; filter by kind, dataset, outcome, attempt.

    Given several ledgers or a folder, each ledger's events follow the
    previous ledger's, with a ledger column (and a "ledger" key in --json);
    --quantum and --dataset pick the ledgers that hold them. A ledger that
    cannot be read is one line on stderr, and the others are listed.

    \b
    Example:
        qledger events q.ledger --kind put --outcome ok --json
        qledger events ledgers/ --outcome error
    """
    many = Ledgers(ledgers)
    printer = None if as_json else _EventTable(detail=detail, several=many.several)
    lines = Lines()
    held = 0
    for target in many:
        with many.reading(target), Ledger.open(target) as led:
            qid = resolve_quantum(led, quantum, missing_ok=many.several)
            did = resolve_id(
                led, dataset, "datasets", "dataset_id", "dataset", missing_ok=many.several
            )
            if (quantum is not None and qid is None) or (dataset is not None and did is None):
                continue  # one of several ledgers, without the quantum or dataset asked for
            held += 1
            found = led.events(
                qid, kind=kind or None, dataset_id=did, outcome=outcome or None, attempt=attempt
            )
            name = display_target(target)
            if printer is None:
                key = '{"ledger":' + json.dumps(name) + ","
                for event in found:
                    line = _event_json(event)
                    lines.write(key + line[1:] if many.several else line)
                continue
            several_quanta = many.several or (qid is None and len(led.quantum_ids()) > 1)
            for event in found:
                printer.add(event, name, several_quanta=several_quanta)
    lines.close()
    if many.several and not held and len(many) > many.unreadable:
        asked = " and ".join(
            f"{what} {value}"
            for what, value in (("quantum", quantum), ("dataset", dataset))
            if value is not None
        )
        raise Failure(f"none of the {count(len(many), 'ledger')} read holds {asked}")
    if printer is not None and (held or not many.several):
        printer.close()
    many.finish(ctx)


def _event_json(event: Event) -> str:
    """One event as a JSON line (`ledger.cli._output.jsonable`'s form, built directly: fast)."""
    return (
        json.dumps(
            {
                "seq": event.seq,
                "quantum_id": str(event.quantum_id),
                "quantum_seq": event.quantum_seq,
                "call_id": event.call_id,
                "attempt": event.attempt,
                "kind": event.kind.value,
                "dataset_id": None if event.dataset_id is None else str(event.dataset_id),
                "outcome": event.outcome.value,
                "error_type": event.error_type,
                "error_message": event.error_message,
                "detail": event.detail,
                "recorded_at": iso_time(event.recorded_at),
                "prev_hash": event.prev_hash,
                "hash": event.hash,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        + "\n"
    )


def _detail_text(detail: Mapping[str, Any] | None) -> str:
    """A detail on a terminal: its JSON, and a traceback below it as the lines it has."""
    if detail is None:
        return ""
    traceback = detail.get("traceback")
    if not isinstance(traceback, str):
        return json.dumps(detail, ensure_ascii=False)
    rest = {k: v for k, v in detail.items() if k != "traceback"}
    return (json.dumps(rest, ensure_ascii=False) + "\n" if rest else "") + traceback.rstrip("\n")


class _EventTable:
    """Events as a table that streams (see `ledger.cli._output.TableWriter`), then a count.

    On a terminal: short ids, the time of day (with the date on the first row
    and wherever the day changes), errors in red, tracebacks as lines; the
    quantum column once a ledger holds several quanta (or several ledgers are
    read). Off a terminal: every value in full, under the stored column names.
    A ledger column comes first when several ledgers are read.
    """

    def __init__(self, *, detail: bool, several: bool) -> None:
        self.detail, self.several = detail, several
        self.terminal = is_terminal()
        self.days: list[str] = []
        self.table: TableWriter | None = None
        self.quantum_column = False

    def _start(self, several_quanta: bool) -> TableWriter:
        columns = [Column("ledger")] if self.several else []
        if self.terminal:
            self.quantum_column = several_quanta
            columns.append(Column("seq", right=True))
            columns += [Column("quantum")] if several_quanta else []
            columns += [Column("q.seq", right=True), Column("att", right=True), Column("kind")]
            columns += [Column(n) for n in ("dataset", "outcome", "recorded", "error")]
        else:
            names = ["seq", "quantum_id", "quantum_seq", "attempt", "kind", "dataset_id"]
            names += ["outcome", "recorded_at", "error_type", "error_message"]
            columns += [Column(name) for name in names]
        if self.detail:
            columns.append(Column("detail"))
        return TableWriter(columns, terminal=self.terminal)

    def add(self, event: Event, ledger: str, *, several_quanta: bool) -> None:
        """Print one event of ``ledger``."""
        if self.table is None:
            self.table = self._start(several_quanta)
        cells: list[Cell] = [ledger if not self.terminal else Path(ledger).name]
        if not self.several:
            cells = []
        if not self.terminal:
            cells += [
                str(event.seq),
                str(event.quantum_id),
                str(event.quantum_seq),
                str(event.attempt),
                event.kind.value,
                "" if event.dataset_id is None else str(event.dataset_id),
                event.outcome.value,
                iso_time(event.recorded_at) or "",
                event.error_type or "",
                event.error_message or "",
            ]
            if self.detail:
                cells.append("" if event.detail is None else json.dumps(event.detail))
            self.table.add(cells)
            return
        day = event.recorded_at.date().isoformat()
        if not self.days or self.days[-1] != day:
            self.days.append(day)
            at = event.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")
        else:
            at = event.recorded_at.strftime("%H:%M:%S.%f")
        cells.append(str(event.seq))
        if self.quantum_column:
            cells.append(short_id(event.quantum_id))
        cells += [
            str(event.quantum_seq),
            str(event.attempt),
            event.kind.value,
            short_id(event.dataset_id),
            (event.outcome.value, "" if event.outcome == "ok" else "red"),
            at,
            (f"{event.error_type}: {event.error_message}", "red") if event.error_type else "",
        ]
        if self.detail:
            cells.append(_detail_text(event.detail))
        self.table.add(cells)

    def close(self) -> None:
        """Print what is left of the table, then the count (to stderr off a terminal)."""
        table = self.table if self.table is not None else self._start(False)
        table.close()
        if not self.terminal:
            summary(count(table.rows, "event"), terminal=False)
            return
        days = sorted(set(self.days))
        span = f" on {days[0]}" if len(days) == 1 else f", {days[0]} to {days[-1]}" if days else ""
        summary(f"{count(table.rows, 'event')}; times in UTC{span}", terminal=True)


# --- replay and head --------------------------------------------------------------------


def _provenance_json(provenance: QuantumProvenanceData) -> str:
    data = provenance.model_dump(mode="json")
    for key in (
        "predicted_inputs",
        "available_inputs",
        "actual_inputs",
        "predicted_outputs",
        "actual_outputs",
    ):
        data[key] = sorted(data[key])
    return json.dumps(data, indent=2)


def _only_quantum(many: Ledgers, quantum: str | None) -> tuple[str, str]:
    """The one ledger and quantum that replay reads among several: (target, quantum id).

    Raises:
        Failure: no ledger holds the quantum, or several quanta (or ledgers) could be meant.
    """
    found: dict[str, list[str]] = {}  # quantum id -> the ledgers that hold it
    described: dict[str, str] = {}
    for target in many:
        with many.reading(target), Ledger.open(target) as led:
            qid = resolve_quantum(led, quantum, missing_ok=True)
            ids = [qid] if qid is not None else [] if quantum else led.quantum_ids()
            for one in map(str, ids):
                found.setdefault(one, []).append(target)
                if len(described) <= CANDIDATES_LISTED:
                    info = led.info(one)
                    described[one] = f"{one} {info.task_label} ({fmt_data_id(info.data_id)})"
    read = count(len(many) - many.unreadable, "ledger")
    if not found:
        asked = f"quantum {quantum}" if quantum else "a quantum"
        raise Failure(f"none of the {read} read holds {asked}")
    if len(found) > 1:
        listed = "; ".join(list(described.values())[:CANDIDATES_LISTED])
        more = ", and more" if len(found) > CANDIDATES_LISTED else ""
        raise Failure(
            f"the {read} read hold {count(len(found), 'quantum', 'quanta')}: replay reads one; "
            f"give --quantum ID: {listed}{more}"
        )
    ((qid, targets),) = found.items()
    if len(targets) > 1:
        names = ", ".join(display_target(t) for t in targets)
        raise Failure(f"quantum {qid} is in {count(len(targets), 'ledger')} ({names}): name one")
    return targets[0], qid


@click.command()
@ledgers_argument
@quantum_option
@click.option(
    "--until",
    metavar="SEQ|TIME",
    callback=parse_until,
    help="Replay up to this quantum_seq, or up to this time (ISO-8601; UTC if no zone).",
)
@click.option("--attempt", "-a", type=click.IntRange(min=1), help="Replay this attempt only.")
@click.option("--output", "-o", metavar="FILE", help="Write the JSON to FILE instead of stdout.")
@click.pass_context
def replay(
    ctx: click.Context,
    ledgers: tuple[str, ...],
    quantum: str | None,
    until: int | datetime | None,
    attempt: int | None,
    output: str | None,
) -> None:
    """Replay a quantum's events into its provenance (QuantumProvenanceData JSON).

    The JSON loads back with QuantumProvenanceData.direct(**json.loads(text)).
    Given several ledgers or a folder, replay reads the one quantum they hold,
    or the one --quantum names (found in whichever ledger holds it); a ledger
    that cannot be read is one line on stderr.

    \b
    Example:
        qledger replay q.ledger --until 12 -o provenance.json
        qledger replay ledgers/ --quantum 3f2a9c1e
    """
    many = Ledgers(ledgers)
    if many.several:
        ledger, qid = _only_quantum(many, quantum)
    else:
        ledger, qid = many.targets[0], None
    with Ledger.open(ledger) as led:
        if qid is None:
            qid = resolve_quantum(led, quantum)
        provenance = led.replay(qid, until=until, attempt=attempt)
    text_value = _provenance_json(provenance) + "\n"
    write_output(output, lambda f: f.write(text_value), inputs=many.targets)
    many.finish(ctx)


@click.command()
@ledgers_argument
@quantum_option
@click.pass_context
def head(ctx: click.Context, ledgers: tuple[str, ...], quantum: str | None) -> None:
    """Print each quantum's chain head (JSON), to keep elsewhere for verify --head.

    One JSON object per line: quantum_id, quantum_seq, hash and terminal kind.
    A hash chain cannot see a cut-off tail; a head kept elsewhere can. Given
    several ledgers or a folder, the heads of all their quanta (verify --head
    finds each quantum's ledger again); a ledger that cannot be read is one
    line on stderr.

    \b
    Example:
        qledger head q.ledger > q.head.json
        qledger head ledgers/ > heads.jsonl
    """
    many = Ledgers(ledgers)
    held = 0
    for target in many:
        with many.reading(target), Ledger.open(target) as led:
            qid = resolve_quantum(led, quantum, missing_ok=many.several)
            if quantum is not None and qid is None:
                continue
            held += 1
            ids = [qid] if qid is not None else [str(q) for q in led.quantum_ids()]
            for one in ids:
                click.echo(json_line(led.head(one)))
    if quantum is not None and many.several and not held and len(many) > many.unreadable:
        raise Failure(f"none of the {count(len(many), 'ledger')} read holds quantum {quantum}")
    many.finish(ctx)
