"""Checking commands: ``verify`` (chains, heads, artifacts) and ``recover``; exit 1 on a problem."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import datastore_from_config
from ..identity import check_datastore_identity, require_root
from ..recovery import (
    OrphanAction,
    QuantumRecovery,
    RecoveryReport,
    adopt_orphans,
    recover,
    remove_orphans,
)
from ..store.connect import display_target
from ..store.ledger import Head, Ledger, VerifyReport
from ..store.verify import parse_heads
from ._common import (
    EXIT_OK,
    EXIT_PROBLEM,
    STATUS_STYLE,
    Failure,
    fmt_data_id,
    fmt_time,
    make_console,
    quantum_option,
    resolve_quantum,
    short_id,
)
from ._many import Ledgers, count, ledgers_argument
from ._output import json_line, jsonable, print_rule, print_unwrapped

# --- verify -----------------------------------------------------------------------------


def _parse_heads(values: Iterable[str]) -> list[Head]:
    heads: list[Head] = []
    for value in values:
        if value.lstrip().startswith(("{", "[")):
            heads.extend(parse_heads(value, "--head value"))
            continue
        try:
            content = Path(value).read_bytes()
        except OSError as e:
            raise Failure(f"cannot read head file {value}: {e.strerror or e}") from e
        heads.extend(parse_heads(content, value))
    return heads


def _artifact_problems(led: Ledger, config: str, check: bool) -> tuple[int, list[str]]:
    """Check every recorded output artifact against its record: (checked, problems)."""
    datastore = datastore_from_config(config)
    checked = 0
    problems: list[str] = []
    if check:
        require_root(datastore)
    for qid in led.quantum_ids():
        if check and led.info(qid).datastore_name in (None, datastore.name):
            check_datastore_identity(led, str(qid), datastore)
        provenance = led.replay(qid)
        for name in provenance.datastore_records:
            for records in provenance.record_data(name).records.values():
                for record in records:
                    if name != datastore.name:
                        problems.append(
                            f"quantum {qid}: artifact {record.path!r} is in datastore "
                            f"{name!r}, not {datastore.name!r}; give that datastore's config"
                        )
                        continue
                    checked += 1
                    problem = datastore.verify_record(record)
                    if problem is not None:
                        problems.append(f"quantum {qid}: {problem}")
    return checked, problems


_NO_CHECK = click.option(
    "--no-datastore-check",
    is_flag=True,
    help="Use the --datastore root even if it is not the datastore the ledger recorded.",
)


@dataclass
class _Verified:
    """What verify found in the ledgers read so far."""

    ok: int = 0
    quanta: int = 0
    events: int = 0
    artifacts: int = 0
    problems: int = 0


def _verify_one(
    led: Ledger, heads: list[Head], datastore: str | None, check: bool
) -> tuple[VerifyReport, list[str], int]:
    """Verify one ledger: (its report, every problem, artifacts checked)."""
    report = led.verify(heads)
    problems = list(report.problems)
    checked = 0
    if datastore is not None and not problems:
        checked, artifact_problems = _artifact_problems(led, datastore, check)
        problems += artifact_problems
    elif datastore is not None:
        problems.append("artifacts not checked: the ledger itself does not verify")
    return report, problems, checked


def _artifacts(checked: int) -> str:
    return (
        f"; {checked} artifact{'s' * (checked != 1)} match{'es' * (checked == 1)} "
        f"{'its record' if checked == 1 else 'their records'}"
    )


@click.command()
@ledgers_argument
@click.option(
    "--head",
    "heads",
    multiple=True,
    metavar="FILE|JSON",
    help="A head recorded elsewhere (qledger head output, a file or inline); repeatable.",
)
@click.option(
    "--datastore",
    metavar="ROOT",
    help="Also check every recorded output artifact: present, recorded size and sha256.",
)
@_NO_CHECK
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per ledger: ledger, ok, quanta, events, heads, artifacts, "
    "problems.",
)
@click.pass_context
def verify(
    ctx: click.Context,
    ledgers: tuple[str, ...],
    heads: tuple[str, ...],
    datastore: str | None,
    no_datastore_check: bool,
    as_json: bool,
) -> None:
    """Verify hash chains, recorded heads and artifacts; exit 1 on any problem.

    Each problem is printed on one line, naming the quantum and quantum_seq
    (and the ledger, when several are verified). Given several ledgers or a
    folder, each head goes to the ledger holding its quantum, and the last
    line sums up; a ledger that cannot be read is one line on stderr (exit 2).

    \b
    Example:
        qledger verify q.ledger --head q.head.json --datastore repo
        qledger verify ledgers/ --head heads.jsonl
    """
    parsed = _parse_heads(heads)
    many = Ledgers(ledgers)
    if not many.several:
        _verify_alone(ctx, many.targets[0], parsed, datastore, not no_datastore_check, as_json)
        return
    found = _Verified()
    unmatched = {str(h.quantum_id): h for h in parsed}
    for target in many:
        where = display_target(target)
        with many.reading(target), Ledger.open(target) as led:
            held = {str(q) for q in led.quantum_ids()}
            mine = [h for h in parsed if str(h.quantum_id) in held]
            report, problems, checked = _verify_one(led, mine, datastore, not no_datastore_check)
            for qid in held:
                unmatched.pop(qid, None)
            if as_json:
                click.echo(_verify_json(where, report, mine, problems, checked, datastore))
            for problem in [] if as_json else problems:
                click.echo(problem if problem.startswith(f"{where}: ") else f"{where}: {problem}")
            if problems:
                many.check_failed()
                found.problems += len(problems)
            else:
                found.ok += 1
                found.quanta += report.quanta
                found.events += report.events
                found.artifacts += checked
    for qid in unmatched:
        problem = f"quantum {qid}: a head was given for it, but no ledger read holds it"
        click.echo(
            json_line({"ledger": None, "ok": False, "problems": [problem]}) if as_json else problem
        )
        found.problems += 1
        many.code = max(many.code, EXIT_PROBLEM)
    if as_json:
        many.finish(ctx)
        return
    parts = [
        f"{found.ok:,} verify ({count(found.quanta, 'quantum', 'quanta')}, "
        f"{count(found.events, 'event')}"
        + (f", {count(len(parsed) - len(unmatched), 'head')}" if parsed else "")
        + (_artifacts(found.artifacts) if datastore is not None and found.ok else "")
        + ")"
    ]
    if many.failed:
        parts.append(f"{many.failed:,} do{'es' * (many.failed == 1)} not verify")
    if unmatched:
        parts.append(f"{count(len(unmatched), 'head')} of no ledger read")
    if many.unreadable:
        parts.append(f"{many.unreadable:,} could not be read")
    status = "ok: " if many.code == EXIT_OK else ""
    tail = f"; {count(found.problems, 'problem')}" if found.problems else ""
    click.echo(f"{status}{count(len(many), 'ledger')}: {', '.join(parts)}{tail}")
    many.finish(ctx)


def _verify_json(
    where: str,
    report: VerifyReport,
    heads: list[Head],
    problems: list[str],
    checked: int,
    datastore: str | None,
) -> str:
    """One ledger's verification as a JSON line."""
    return json_line(
        {
            "ledger": where,
            "ok": not problems,
            "quanta": report.quanta,
            "events": report.events,
            "heads": len(heads),
            "artifacts": checked if datastore is not None else None,
            "problems": problems,
        }
    )


def _verify_alone(
    ctx: click.Context,
    ledger: str,
    parsed: list[Head],
    datastore: str | None,
    check: bool,
    as_json: bool = False,
) -> None:
    """Verify one ledger named alone: its problems, or one ok line."""
    with Ledger.open(ledger) as led:
        report, problems, checked = _verify_one(led, parsed, datastore, check)
    if as_json:
        where = display_target(ledger)
        click.echo(_verify_json(where, report, parsed, problems, checked, datastore))
        if problems:
            ctx.exit(EXIT_PROBLEM)
        return
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{display_target(ledger)}: {count(len(problems), 'problem')}", err=True)
        ctx.exit(EXIT_PROBLEM)
    what = f"{count(report.quanta, 'quantum', 'quanta')}, {count(report.events, 'event')}"
    extra = f", {count(len(parsed), 'head')}" if parsed else ""
    artifacts = _artifacts(checked) if datastore is not None else ""
    click.echo(f"ok: {display_target(ledger)}: {what}{extra} verify{artifacts}")


# --- recover ----------------------------------------------------------------------------


def _dataset_line(dataset_type: str, data_id: Mapping[str, Any], dataset_id: object) -> str:
    return f"{dataset_type} {fmt_data_id(data_id)} ({short_id(dataset_id)})"


def _recovery_table(rec: QuantumRecovery) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    status = Text(rec.status, style=STATUS_STYLE.get(rec.status, ""))
    if rec.process is not None:
        status.append(f" ({rec.process}: pid {rec.pid} on {rec.host})")
    grid.add_row("status", status)
    grid.add_row(
        "attempts",
        f"{rec.attempts}; last event quantum_seq {rec.last_quantum_seq} "
        f"at {fmt_time(rec.last_event_at)}",
    )
    if rec.error_type:
        grid.add_row("error", f"{rec.error_type}: {rec.error_message}")
    if rec.caveats:
        grid.add_row("caveats", ", ".join(rec.caveats))
    p = rec.provenance
    grid.add_row(
        "provenance",
        f"inputs: {len(p.predicted_inputs)} predicted, {len(p.available_inputs)} available, "
        f"{len(p.actual_inputs)} actual; outputs: {len(p.predicted_outputs)} predicted, "
        f"{len(p.actual_outputs)} actual",
    )
    for label, items in (("inputs read", rec.inputs_read), ("unavailable", rec.inputs_unavailable)):
        if items:
            lines = [_dataset_line(d.dataset_type, d.data_id, d.dataset_id) for d in items]
            grid.add_row(label, "\n".join(lines))
    for label, outputs in (
        ("outputs ok", rec.outputs_verified),
        ("damaged", rec.outputs_damaged),
        ("unstored", rec.outputs_unstored),
        ("missing", rec.outputs_missing),
    ):
        if outputs:
            lines = [_dataset_line(o.dataset_type, o.data_id, o.dataset_id) for o in outputs]
            lines = [
                f"{line}: {o.problem}" if o.problem else line
                for line, o in zip(lines, outputs, strict=True)
            ]
            grid.add_row(label, "\n".join(lines))
    if rec.orphans:
        lines = []
        for o in rec.orphans:
            how = "decodes" if o.verified else f"does not decode: {o.problem}"
            reason = "" if o.orphan_reason == "unrecorded_write" else f", {o.orphan_reason}"
            lines.append(
                f"{_dataset_line(o.dataset_type, o.data_id, o.dataset_id)}: {o.path}, "
                f"{o.file_size} bytes, {how}{reason}"
            )
        grid.add_row(Text("orphans", style="bold yellow"), "\n".join(lines))
    if rec.chain_problems:
        grid.add_row(Text("chain", style="bold red"), "\n".join(rec.chain_problems))
    if rec.traceback:
        grid.add_row("traceback", Text(rec.traceback.rstrip(), style="dim"))
    return grid


def _render_recovery(
    console: Console, report: RecoveryReport, ledger: str, root: str, *, several: bool = False
) -> None:
    if not report.quanta:
        console.print(f"{ledger}: every quantum succeeded; nothing to recover")
        return
    if several:
        console.print(Text(f"{ledger}:", style="bold"), overflow="fold")
    for rec in report.quanta:
        print_rule(
            console, f"quantum {rec.quantum_id}  {rec.task_label}  {fmt_data_id(rec.data_id)}"
        )
        print_unwrapped(console, _recovery_table(rec))
    hints = Table.grid(padding=(0, 2))
    hints.add_column(style="bold", no_wrap=True)
    hints.add_column()
    if any(rec.orphans for rec in report.quanta):
        hints.add_row(
            "clean up", f"qledger recover {ledger} --datastore {root} --adopt (or --remove)"
        )
    if any(rec.status != "succeeded" for rec in report.quanta):
        which = ', quantum_id="..."' if len(report.quanta) > 1 else ""
        hints.add_row(
            "retry",
            f'QuantumBackedButler.resume("{root}", "{ledger}"{which}, skip_existing=True)',
        )
    if hints.row_count:
        print_unwrapped(console, hints)


@click.command(name="recover")
@ledgers_argument
@click.option("--datastore", required=True, metavar="ROOT", help="The datastore root (or config).")
@quantum_option
@click.option("--adopt", is_flag=True, help="Record verified orphans as puts (new events).")
@click.option("--remove", is_flag=True, help="Delete orphans, each recorded as a prune first.")
@click.option("--force", is_flag=True, help="Act even if the quantum may still be running.")
@_NO_CHECK
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the RecoveryReport as JSON (with 'actions' after --adopt or --remove).",
)
@click.pass_context
def recover_command(
    ctx: click.Context,
    ledgers: tuple[str, ...],
    datastore: str,
    quantum: str | None,
    adopt: bool,
    remove: bool,
    force: bool,
    no_datastore_check: bool,
    as_json: bool,
) -> None:
    """Report failed and interrupted quanta: ending, outputs, orphans; exit 1 if any.

    For each failed or interrupted quantum (or the one named): the error and
    traceback, provenance as of its last event, inputs read, outputs verified
    (size and sha256), damaged, missing, and orphan artifacts (a file for a
    predicted output without a recorded put). --adopt records verified orphans
    as new put events; --remove deletes them, each recorded as a prune first.
    Nothing old is ever edited. Given several ledgers or a folder, only the
    ledgers with something to recover are reported (--json: one line per
    ledger), then a summary; a ledger that cannot be read is one stderr line.

    \b
    Example:
        qledger recover q.ledger --datastore repo --adopt
        qledger recover ledgers/ --datastore repo
    """
    if adopt and remove:
        raise click.UsageError("--adopt and --remove exclude each other")
    many = Ledgers(ledgers)
    console = make_console()
    clean = 0
    held = 0
    for target in many:
        with many.reading(target):
            with Ledger.open(target) as led:
                qid = resolve_quantum(led, quantum, missing_ok=many.several)
            if quantum is not None and qid is None:
                continue  # one of several ledgers, without the quantum asked for
            held += 1
            actions: list[OrphanAction] = []
            if adopt or remove:
                act = adopt_orphans if adopt else remove_orphans
                actions = act(
                    target, datastore, qid, force=force, check_datastore=not no_datastore_check
                )
            report = recover(
                target, datastore, quantum_id=qid, check_datastore=not no_datastore_check
            )
            if not report.ok:
                many.check_failed()
            elif many.several and not actions:
                clean += 1
                continue
            if as_json:
                acted = actions if adopt or remove else None
                _print_recovery_json(report, acted, target if many.several else None)
            else:
                _print_recovery(
                    console,
                    report,
                    actions,
                    target,
                    datastore,
                    adopt or remove,
                    several=many.several,
                )
    if many.several and quantum is not None and not held and len(many) > many.unreadable:
        raise Failure(f"none of the {count(len(many), 'ledger')} read holds quantum {quantum}")
    if many.several and not as_json:
        read = len(many) - many.unreadable
        console.print(
            f"{count(read, 'ledger')} read: {many.failed:,} with quanta to recover, "
            f"{clean:,} with nothing to recover"
        )
    many.finish(ctx)


def _print_recovery_json(
    report: RecoveryReport, actions: list[OrphanAction] | None, ledger: str | None
) -> None:
    """The report as JSON: indented for one ledger; one line with its "ledger" for several."""
    data = jsonable(report)
    if actions is not None:
        data["actions"] = jsonable(actions)
    if ledger is None:
        click.echo(json_line(data, indent=2))
    else:
        click.echo(json_line({"ledger": display_target(ledger), **data}))


def _print_recovery(
    console: Console,
    report: RecoveryReport,
    actions: list[OrphanAction],
    ledger: str,
    root: str,
    acting: bool,
    *,
    several: bool,
) -> None:
    for action in actions:
        recorded = f" as quantum_seq {action.quantum_seq}" if action.quantum_seq else ""
        why = f" ({action.reason})" if action.reason else ""
        line = f"{action.action} {short_id(action.dataset_id)}{recorded}{why}: {action.path}"
        print_unwrapped(console, Text(line, overflow="fold"))
    if acting and not actions:
        console.print("no orphans to act on")
    _render_recovery(console, report, display_target(ledger), root, several=several)
