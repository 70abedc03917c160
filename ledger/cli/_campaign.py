"""Campaign commands: ``watch`` a running campaign live, and write its HTML ``report``."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..campaign import (
    STATUSES,
    CampaignState,
    FailureLine,
    build_report,
    open_source,
    render_report,
)
from ..campaign.sources import CampaignSource
from ..store.ledger import Ledger
from ..store.migrate import one_line
from ._common import (
    STATUS_STYLE,
    Failure,
    complete_path,
    fmt_time,
    make_console,
    resolve_id,
    short_id,
    write_output,
)
from ._config import central_target, no_central
from ._output import count, iso_time, json_line

__all__ = ["report_command", "watch_command"]


# --- watch ------------------------------------------------------------------------------


def _ago(recorded_at: str | None) -> str:
    if not recorded_at:
        return "no event yet"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(recorded_at)).total_seconds()
    if seconds < 90:
        return f"last event {max(seconds, 0):.0f} s ago"
    if seconds < 5400:
        return f"last event {seconds / 60:.0f} min ago"
    return f"last event {seconds / 3600:.1f} h ago"


def _where(state: CampaignState, source: CampaignSource) -> str:
    """``seq N`` for a central ledger, ``N ledgers`` for a folder."""
    position = source.position(state)
    if position["seq"] is not None:
        return f"seq {position['seq']}"
    return count(position["ledgers"] or 0, "ledger")


def _summary(state: CampaignState, source: CampaignSource) -> str:
    totals = state.totals()
    counts = ", ".join(f"{totals[s]:,} {s}" for s in STATUSES)
    return (
        f"{_where(state, source)}: {count(state.n_quanta, 'quantum', 'quanta')}: {counts}; "
        f"{state.rate_per_minute():.1f} finished/min"
    )


def _failure_line(failure: FailureLine) -> str:
    return one_line(
        f"{fmt_time(failure.recorded_at, date=False)} FAILED {failure.task_label} "
        f"{failure.data_id_text()} ({short_id(failure.quantum_id)}) attempt {failure.attempt}: "
        f"{failure.error_line()}"
    )


def _view(state: CampaignState, source: CampaignSource) -> RenderableType:
    """The live view: a header, counts per task and status, the last failures."""
    header = Text()
    header.append(f"watching {source.where}", style="bold")
    header.append(
        f"  {_where(state, source)} · {count(state.n_quanta, 'quantum', 'quanta')} · "
        f"{count(state.n_events, 'event')} · "
        f"{state.rate_per_minute():.1f} quanta finished/min (last 5 min of recorded time) · "
        f"{_ago(state.last_recorded_at)}"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("task")
    for status in STATUSES:
        table.add_column(status, justify="right", style=STATUS_STYLE.get(status))
    table.add_column("retried", justify="right")
    table.add_column("total", justify="right")
    counts, retried = state.counts(), state.retried()
    for task, row in counts.items():
        table.add_row(
            task, *(f"{row[s]:,}" for s in STATUSES), f"{retried[task]:,}", f"{sum(row.values()):,}"
        )
    totals = state.totals()
    if counts:
        table.add_row(
            Text("all", style="bold"),
            *(f"{totals[s]:,}" for s in STATUSES),
            f"{sum(retried.values()):,}",
            f"{state.n_quanta:,}",
        )
    parts: list[RenderableType] = [header, table]
    if state.failures:
        parts.append(Text("last failures", style="bold"))
        for f in reversed(state.failures):
            line = Text(f"{fmt_time(f.recorded_at, date=False)} {f.task_label} ")
            line.append(f"{f.data_id_text()} ({short_id(f.quantum_id)}) attempt {f.attempt}: ")
            line.append(one_line(f.error_line()), style="red")
            parts.append(line)
    parts.extend(Text(f"unreadable: {p}", style="yellow") for p in source.problems())
    parts.append(Text("interrupted: started, no end recorded yet (running, or killed). "
                      "Ctrl-C stops watching.", style="dim"))  # fmt: skip
    return Group(*parts)


def _snapshot(state: CampaignState, source: CampaignSource) -> dict[str, Any]:
    return {
        "source": source.where,
        "at": iso_time(datetime.now(UTC)),
        **state.snapshot(),
        **source.position(state),
        "unreadable": source.problems(),
    }


def _echo(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


@click.command("watch")
@click.argument("target", metavar="[CENTRAL|DIR]", required=False, shell_complete=complete_path)
@click.option("--once", is_flag=True, help="Read what is there now, show it once, and exit.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON snapshots (one object per line, when something changed) instead of a view.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between polls.",
)
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit once no new event has arrived for SECONDS (e.g. when a campaign is done).",
)
@click.option(
    "--failures",
    "keep_failures",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="How many of the last failures to show.",
)
def watch_command(
    target: str | None,
    once: bool,
    as_json: bool,
    interval: float,
    until_idle: float | None,
    keep_failures: int,
) -> None:
    """Watch a campaign live: quanta per task and status, failures, rate.

    CENTRAL is a central ledger (a SQLite file or a PostgreSQL URL), followed by
    seq: each event is read once, none is skipped. DIR is a folder of ledger
    files, polled; a file is read again only when it changed. Only reads.
    On a terminal the view redraws in place; otherwise (a pipe, a log) a line
    is printed when something changed, and one per failure. Ctrl-C stops it
    (exit 0). The rate counts quanta that ended per minute over the last 5
    minutes of recorded time. Without an argument, QLEDGER_CENTRAL (or
    central in the config file) is watched.

    \b
    Example:
        qledger watch central.sqlite
        qledger watch ledgers/ --once --json
        qledger watch postgresql+psycopg://user@host/db --until-idle 600 > watch.log
    """
    state = CampaignState(keep_failures=keep_failures)
    source = open_source(_central_or(target, "watch"))
    try:
        if once:
            source.poll(state)
            while source.pending:
                source.poll(state)
            _show_once(state, source, as_json)
            return
        _watch(state, source, as_json, interval, until_idle)
    finally:
        source.close()


def _problems_to_stderr(source: CampaignSource, shown: set[str]) -> None:
    for problem in source.problems():
        if problem not in shown:
            shown.add(problem)
            click.echo(f"qledger: unreadable: {one_line(problem)}", err=True)


def _show_once(state: CampaignState, source: CampaignSource, as_json: bool) -> None:
    _problems_to_stderr(source, set())
    if as_json:
        _echo(json_line(_snapshot(state, source)))
        return
    make_console().print(_view(state, source))


def _watch(
    state: CampaignState,
    source: CampaignSource,
    as_json: bool,
    interval: float,
    until_idle: float | None,
) -> None:
    live = sys.stdout.isatty() and not as_json
    shown: set[str] = set()
    seen = -1
    last_change = time.monotonic()
    why = "stopped"
    console = make_console()
    display = Live(console=console, auto_refresh=False, transient=False) if live else None
    try:
        if display is not None:
            display.start()
        while True:
            new_failures = source.poll(state)
            now = time.monotonic()
            if state.n_events != seen:
                seen = state.n_events
                last_change = now
                if display is not None:
                    display.update(_view(state, source), refresh=True)
                elif as_json:
                    _echo(json_line(_snapshot(state, source)))
                else:
                    for failure in new_failures:
                        _echo(_failure_line(failure))
                    _echo(f"{fmt_time(datetime.now(UTC).isoformat())} {_summary(state, source)}")
            elif display is not None:
                display.update(_view(state, source), refresh=True)
            if not live:
                _problems_to_stderr(source, shown)
            idle = now - last_change
            if until_idle is not None and not source.pending and idle >= until_idle:
                why = f"nothing new for {until_idle:g} s"
                break
            if not source.pending:
                time.sleep(interval)
    except KeyboardInterrupt:
        why = "stopped (Ctrl-C)"
    finally:
        if display is not None:
            display.stop()
    if not as_json:
        click.echo(f"watch ended: {why}; {_summary(state, source)}", err=live)


# --- report -----------------------------------------------------------------------------


def _central_or(target: str | None, what: str) -> str:
    """``target``, or the central ledger the environment or config file names."""
    if target is not None:
        return target
    central = central_target()
    if central is None:
        raise Failure(no_central(what))
    return central


@click.command("report")
@click.argument("target", metavar="[CENTRAL]", required=False, shell_complete=complete_path)
@click.option(
    "--output",
    "-o",
    metavar="FILE.html",
    help="Write the report to FILE.html (else the HTML goes to stdout).",
)
@click.option(
    "--lineage",
    "lineage_dataset",
    metavar="DATASET_ID",
    help="Draw the lineage of this dataset (an id, or its first characters); by default a "
    "final output of the succeeded quantum that started last.",
)
@click.option(
    "--max-nodes",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    metavar="N",
    help="The lineage picture keeps the N nodes nearest the dataset (and says what it cut).",
)
@click.option(
    "--max-items",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    metavar="N",
    help="List at most N failed, interrupted and retried quanta each (and say how many more).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def report_command(
    target: str | None,
    output: str | None,
    lineage_dataset: str | None,
    max_nodes: int,
    max_items: int,
    as_json: bool,
) -> None:
    """Write a campaign report as one self-contained HTML file.

    It shows the status per task (succeeded, failed, interrupted, retried), the
    failed quanta with their error and traceback, the retried quanta with how
    each attempt ended, and the upstream lineage of one dataset as a layered
    picture (tasks and datasets, actual edges only). The file references
    nothing outside itself and runs no script. CENTRAL is a central ledger (a
    SQLite file or a PostgreSQL URL) or any one ledger; for a folder of ledger
    files, ingest them first. Needs the report extra (Jinja2, grandalf).
    Without CENTRAL, QLEDGER_CENTRAL (or central in the config file) is used.

    \b
    Example:
        qledger report central.sqlite -o report.html
        qledger report central.sqlite -o report.html --lineage 8c47767b --json
    """
    target = _central_or(target, "report")
    if os.path.isdir(target):
        raise Failure(
            f"{target} is a folder: report reads one ledger database; ingest the folder first "
            f'("qledger ingest central.sqlite {target}") and report on that'
        )
    with Ledger.open(target) as led:
        dataset = resolve_id(led, lineage_dataset, "datasets", "dataset_id", "dataset")
        report = build_report(
            led, lineage_dataset=dataset, max_nodes=max_nodes, max_items=max_items
        )
    html = render_report(report)
    write_output(output, lambda f: f.write(html), inputs=[target])
    if output is None or output == "-":
        return
    summary: dict[str, Any] = {
        "output": output,
        "quanta": report.n_quanta,
        "totals": report.totals,
        "retried": report.n_retried,
        "lineage": report.lineage.model_dump() if report.lineage else None,
        "lineage_nodes": (
            {"shown": report.picture.n_shown, "total": report.picture.n_nodes}
            if report.picture
            else None
        ),
    }
    if as_json:
        click.echo(json_line(summary))
        return
    counts = ", ".join(f"{n:,} {s}" for s, n in report.totals.items())
    quanta = count(report.n_quanta, "quantum", "quanta")
    click.echo(f"wrote {output}: {quanta} ({counts}), {report.n_retried:,} retried")
    if report.lineage is not None and report.picture is not None:
        lin = report.lineage
        data_id = " ".join(f"{k}={v}" for k, v in lin.data_id.items())
        click.echo(
            f"lineage of {lin.dataset_type} {data_id} {lin.dataset_id} "
            f"({report.picture.n_shown} of {report.picture.n_nodes} nodes); {lin.reason}"
        )
    else:
        click.echo(f"no lineage: {report.no_lineage}")
