"""Central-ledger commands: ``ingest`` ledger files into one database, and ``lineage``."""

from __future__ import annotations

import os
import sys
import time
from typing import IO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..central import expand_sources, ingest, lineage
from ..store.ledger import Ledger
from ..store.migrate import one_line
from ._common import (
    EXIT_BAD_INPUT,
    EXIT_PROBLEM,
    Failure,
    complete_path,
    resolve_id,
    write_output,
)
from ._config import CENTRAL_ENV, central_target, no_central
from ._output import json_line

__all__ = ["ingest_command", "lineage_command"]


@click.command("ingest")
@click.argument(
    "arguments", nargs=-1, metavar="[TARGET] LEDGER|DIR...", shell_complete=complete_path
)
@click.option(
    "--from-list",
    "from_list",
    type=click.File("r"),
    metavar="FILE",
    help="Also ingest the ledgers listed in FILE, one path per line ('-' for stdin).",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Do not check each source's hash chains first (faster; a bad source then "
    "fails verify on the target instead of being refused).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Commit once the staged ledgers hold this many events.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=lambda: min(os.cpu_count() or 1, 8),
    show_default="the CPUs, up to 8",
    help="Processes that read and verify ledgers while one writes.",
)
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.option(
    "--into-existing",
    is_flag=True,
    help="Write into TARGET even if it is a butler's ledger, not a central one "
    "(refused by default: the usual cause is a forgotten TARGET).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as one JSON object (counts, problems, duplicate producers).",
)
@click.pass_context
def ingest_command(
    ctx: click.Context,
    arguments: tuple[str, ...],
    from_list: IO[str] | None,
    no_verify: bool,
    batch_size: int,
    jobs: int,
    no_progress: bool,
    into_existing: bool,
    as_json: bool,
) -> None:
    """Copy ledger files into a central ledger (a SQLite file or a PostgreSQL URL).

    Each quantum keeps its quantum_seq and hash chain, so the target verifies.
    Re-ingesting adds nothing; a ledger that grew since (a retry) adds its new
    events. A ledger that cannot be read, does not verify, or disagrees with the
    target (same quantum_id and quantum_seq, another hash) is reported on stderr
    and skipped; the others go on. Directories are searched for *.ledger,
    *.sqlite, *.sqlite3 and *.db files. Exit code 0 when every ledger is in, 1
    when one was refused (tampered, conflicting, or its rows refused by the
    database), 2 when one could not be read. A TARGET that is a butler's ledger
    file (it holds quanta, and ingest did not create it) is refused unless
    --into-existing: ingest appends for good. TARGET may be left out when
    QLEDGER_CENTRAL (or central in the config file) names the central ledger:
    a single LEDGER|DIR (or none, with --from-list) then goes there; with two
    or more arguments the first is always TARGET.

    \b
    Example:
        qledger ingest central.sqlite ledgers/
        qledger ingest postgresql+psycopg://user@host/db --from-list ledgers.txt
        QLEDGER_CENTRAL=central.sqlite qledger ingest ledgers/
    """
    target, ledgers = _target_and_sources(arguments, from_list is not None)
    sources = expand_sources(ledgers, from_list or ())
    if not sources:
        alone = f"; {arguments[0]} was taken as TARGET ({CENTRAL_ENV} is not set)"
        raise Failure(
            "no ledgers to ingest: give files, directories or --from-list FILE"
            + (alone if len(arguments) == 1 and from_list is None else "")
        )
    stderr = Console(stderr=True, markup=False, highlight=False)
    with Progress(
        TextColumn("ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        auto_refresh=False,  # no refresh thread: ingest forks its reading processes
        disable=no_progress or not sys.stderr.isatty(),
    ) as progress:
        bar = progress.add_task("ingest", total=len(sources))
        shown = [time.monotonic()]

        def advance(_: str) -> None:
            progress.advance(bar)
            if time.monotonic() - shown[0] > 0.1:
                progress.refresh()
                shown[0] = time.monotonic()

        report = ingest(
            target,
            sources,
            verify=not no_verify,
            batch_events=batch_size,
            jobs=jobs,
            progress=advance,
            into_existing=into_existing,
        )
    for problem in report.problems:
        click.echo(f"qledger: {problem.kind}: {one_line(problem.message)}", err=True)
    for twice in report.duplicate_producers:  # a fact to know, not a failure: exit code stays
        click.echo(f"qledger: warning: {one_line(twice.message())}", err=True)
    if as_json:
        click.echo(json_line({**report.model_dump(), "ok": report.ok}))
    else:
        click.echo(report.summary())
    if any(p.kind == "unreadable" for p in report.problems):
        ctx.exit(EXIT_BAD_INPUT)
    if report.problems:
        ctx.exit(EXIT_PROBLEM)


def _target_and_sources(arguments: tuple[str, ...], listed: bool) -> tuple[str, tuple[str, ...]]:
    """Ingest's TARGET and sources: TARGET first, unless one argument (or none) and a central.

    Raises:
        Failure: no TARGET given and none set.
    """
    if len(arguments) >= 2 or (len(arguments) == 1 and listed):
        return arguments[0], arguments[1:]
    central = central_target()
    if central is not None:
        return central, arguments
    if arguments:  # today's reading: the one argument is TARGET (and there is nothing to ingest)
        return arguments[0], ()
    raise Failure(no_central("ingest"))


@click.command("lineage")
@click.argument("target", metavar="[TARGET]", shell_complete=complete_path)
@click.argument("dataset_id", metavar="DATASET_ID", required=False)
@click.option("--downstream", is_flag=True, help="Walk to what read it, not to what made it.")
@click.option(
    "--depth", type=click.IntRange(min=1), metavar="N", help="At most N levels of quanta."
)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["tree", "json", "dot"], case_sensitive=False),
    default="tree",
    show_default=True,
    help="tree: for people; json: nodes and edges; dot: Graphviz.",
)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
def lineage_command(
    target: str,
    dataset_id: str | None,
    downstream: bool,
    depth: int | None,
    fmt: str,
    output: str | None,
) -> None:
    """Show the quanta that made a dataset, and what they read, up the chain.

    Upstream: the quantum that wrote the dataset, the datasets it read, the
    quanta that wrote those, and so on; --downstream: the quanta that read it,
    what they wrote, and so on. Only actual inputs (read and used) and actual
    outputs (written) count: datasets only predicted are not edges.
    DATASET_ID may be the first characters of the id. Works on any ledger;
    most useful on a central one. Without TARGET, QLEDGER_CENTRAL (or central
    in the config file) is asked.

    \b
    Example:
        qledger lineage central.sqlite 3f2a9c1e
        qledger lineage central.sqlite 3f2a9c1e --downstream --format dot | dot -Tsvg > l.svg
    """
    if dataset_id is None:  # one argument: the dataset, in the central ledger
        dataset_id, central = target, central_target()
        if central is None:
            raise Failure(no_central("lineage"))
        target = central
    with Ledger.open(target) as led:
        full = resolve_id(led, dataset_id, "datasets", "dataset_id", "dataset")
        assert full is not None
        graph = lineage(led, full, downstream=downstream, depth=depth)
    text = {"tree": graph.tree, "json": graph.to_json, "dot": graph.to_dot}[fmt]()
    write_output(output, lambda f: f.write(text + "\n"), inputs=[target])
