"""Commands for the LSST science pipelines (``ledger.lsst``): ``run-qbb``.

Each needs the ``lsst`` extra; ``ledger.lsst`` is imported when the command
runs, so ``qledger --help`` and the other commands work without it. Commands
of the same family (an init-output job, ``transfer``) belong beside these.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from .._logging import LOGGER_NAME
from ..errors import MissingDependencyError
from ._common import EXIT_PROBLEM, complete_path

__all__ = ["run_qbb_command"]


def _lsst() -> Any:
    """``ledger.lsst.run``, or the one line that says which extra is missing."""
    try:
        from ..lsst import run
    except ImportError as e:
        raise MissingDependencyError(
            f"run-qbb needs the LSST stack ({e}); install it with "
            "pip install 'quantum-ledger[lsst]'"
        ) from e
    return run


def _split_commas(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _log_levels(
    _: click.Context, __: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str | None, str]]:
    """``LEVEL`` or ``COMPONENT=LEVEL`` (comma lists too), as pipetask's ``--log-level``."""
    levels: list[tuple[str | None, str]] = []
    known = ("CRITICAL", "ERROR", "WARNING", "INFO", "VERBOSE", "DEBUG", "TRACE")
    for part in _split_commas(_, __, values):
        component, sep, level = part.rpartition("=")
        if level.upper() not in known:
            raise click.BadParameter(f"{level!r} is not one of {', '.join(known)}")
        levels.append((component if sep else None, level.upper()))
    return levels


def _labels(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for part in _split_commas(_, __, values):
        key, sep, value = part.partition("=")
        if not sep:
            raise click.BadParameter(f"{part!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _refused(what: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def refuse(_: click.Context, param: click.Parameter, value: Any) -> None:
        if value not in (None, False, (), []):
            raise click.UsageError(
                f"{param.opts[0]} ({what}) is a pipetask run-qbb option that qledger run-qbb "
                "does not support; run pipetask run-qbb for it"
            )

    return refuse


@click.command("run-qbb")
@click.argument("butler_config", metavar="BUTLER_CONFIG", shell_complete=complete_path)
@click.argument("qgraph", metavar="QGRAPH", shell_complete=complete_path)
@click.option(
    "--qgraph-node-id",
    "node_ids",
    multiple=True,
    callback=_split_commas,
    metavar="ID",
    help="Run only these quanta of the graph (UUIDs; repeat or separate with commas).",
)
@click.option(
    "-j",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Quanta run at once, each in a spawned process (upstream's MPGraphExecutor).",
)
@click.option(
    "--ledger-dir",
    metavar="DIR",
    help="Where the ledgers go. Default: ledgers/ beside QGRAPH.",
)
@click.option(
    "--ledger-name",
    metavar="TEMPLATE",
    default="{quantum_id}.ledger",
    show_default=True,
    help="Each ledger's file name in DIR, from {quantum_id} and {task_label}; "
    "without {quantum_id}, the quanta share one ledger.",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal", "batch"], case_sensitive=False),
    default="normal",
    show_default=True,
    help="full survives power loss; normal a killed process; batch may lose its tail.",
)
@click.option(
    "--upstream-provenance",
    is_flag=True,
    help="Also write upstream's own provenance of each quantum (its butler's "
    "extract_provenance_data()) as DIR/<quantum id>.upstream.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each quantum's outcome as JSON.")
# --- pipetask run-qbb's own options, with its meaning ----------------------------------
@click.option(
    "--config-search-path",
    multiple=True,
    callback=_split_commas,
    metavar="PATH",
    help="Additional search paths for butler configuration.",
)
@click.option(
    "--qgraph-id",
    metavar="ID",
    help="Accepted and not checked, as by pipetask run-qbb (a .qg graph has no id).",
)
@click.option(
    "--pdb",
    is_flag=False,
    flag_value="pdb",
    default=None,
    help="Post-mortem debugger to launch for exceptions (pdb if no value; needs a tty).",
)
@click.option("--profile", metavar="FILE", help="Dump cProfile statistics to FILE.")
@click.option(
    "--debug",
    "lsst_debug",
    is_flag=True,
    help="Enable lsstDebug (imports debug.py), as pipetask's --debug; "
    "qledger --debug run-qbb shows tracebacks.",
)
@click.option(
    "--start-method",
    type=click.Choice(["spawn", "fork", "forkserver"]),
    default=None,
    help="Multiprocessing start method (fork means spawn, as for pipetask).",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=0),
    help="Timeout for multiprocessing; maximum wall time (s).",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed quantum.")
@click.option(
    "--raise-on-partial-outputs/--no-raise-on-partial-outputs",
    default=True,
    help="Consider partial outputs from a task an error instead of a qualified success.",
)
@click.option("--summary", metavar="FILE", help="Write upstream's job summary (JSON) to FILE.")
@click.option(
    "--enable-implicit-threading",
    is_flag=True,
    help="Do not disable implicit threading by third-party libraries.",
)
@click.option(
    "-n",
    "--cores-per-quantum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cores available to each quantum.",
)
@click.option(
    "--memory-per-quantum",
    default="",
    metavar="MEMORY",
    help="Memory for each quantum (advisory; e.g. 3GB, plain integers are MB).",
)
@click.option(
    "--no-existing-outputs",
    is_flag=True,
    help="Assume no predicted output exists yet (no existence checks before each quantum).",
)
# --- pipetask's logging options (before its subcommand there) ---------------------------
@click.option(
    "--log-level",
    "log_levels",
    multiple=True,
    callback=_log_levels,
    metavar="LEVEL|COMPONENT=LEVEL",
    help="Log level of upstream's loggers (as pipetask --log-level).",
)
@click.option("--long-log", is_flag=True, help="Log messages in long format.")
@click.option(
    "--log-file",
    multiple=True,
    callback=_split_commas,
    metavar="FILE",
    help="Also write log messages to FILE (JSON records if it ends with .json).",
)
@click.option("--log-tty/--no-log-tty", default=True, help="Log to the terminal (default).")
@click.option(
    "--log-label",
    multiple=True,
    callback=_labels,
    metavar="KEY=VALUE",
    help="Key=value pairs added to the log records.",
)
# --- pipetask's options refused here -------------------------------------------------------
@click.option(
    "--coverage",
    is_flag=True,
    hidden=True,
    expose_value=False,
    callback=_refused("coverage"),
)
@click.option(
    "--cov-report/--no-cov-report",
    default=None,
    hidden=True,
    expose_value=False,
    callback=_refused("coverage"),
)
@click.option(
    "--cov-packages",
    multiple=True,
    hidden=True,
    expose_value=False,
    callback=_refused("coverage"),
)
@click.pass_context
def run_qbb_command(
    ctx: click.Context,
    butler_config: str,
    qgraph: str,
    node_ids: list[str],
    processes: int,
    ledger_dir: str | None,
    ledger_name: str,
    durability: str,
    upstream_provenance: bool,
    as_json: bool,
    config_search_path: list[str],
    qgraph_id: str | None,
    pdb: str | None,
    profile: str | None,
    lsst_debug: bool,
    start_method: str | None,
    timeout: int | None,
    fail_fast: bool,
    raise_on_partial_outputs: bool,
    summary: str | None,
    enable_implicit_threading: bool,
    cores_per_quantum: int,
    memory_per_quantum: str,
    no_existing_outputs: bool,
    log_levels: list[tuple[str | None, str]],
    long_log: bool,
    log_file: list[str],
    log_tty: bool,
    log_label: dict[str, str],
) -> None:
    """Run a quantum graph as pipetask run-qbb does, each quantum in a ledger.

    A drop-in for pipetask run-qbb: the same arguments (BUTLER_CONFIG, the
    butler repository's config; QGRAPH, the quantum graph file) and options,
    upstream's own executors underneath (SingleQuantumExecutor; with -j,
    MPGraphExecutor's spawned workers), and pipetask's exit codes: 0 when
    every quantum ran, 1 when one failed, was killed or timed out (upstream's
    special codes, e.g. 21 for an invalid quantum, pass through), 2 for bad
    usage or input. Each quantum is recorded under its graph id in
    DIR/<quantum id>.ledger (one ledger per quantum; see --ledger-name):
    succeeded, failed with its exception, or interrupted after its last
    recorded call when its process was killed. A BPS workflow switches by
    setting runQuantumCommand in its submit YAML (see the docs). A summary of
    the quanta goes to stderr; --json prints each quantum's outcome.

    \b
    Example:
        qledger run-qbb repo/butler.yaml pipeline.qg -j 2 --ledger-dir ledgers
        qledger run-qbb repo pipeline.qg --qgraph-node-id 01a23165-d29a-7575-bba6-adebd4e35ee5
    """
    del qgraph_id  # as pipetask run-qbb 30.2026.500: accepted, never compared
    run = _lsst()
    undo = run.configure_cli_logging(
        levels=log_levels,
        long_log=long_log,
        log_file=tuple(log_file),
        log_tty=log_tty,
        log_label=log_label,
    )
    ctx.call_on_close(undo)
    # The group's handler prints the library's records; reaching upstream's handler
    # on the root logger too, they would be printed twice.
    ours = logging.getLogger(LOGGER_NAME)
    propagate, ours.propagate = ours.propagate, False
    ctx.call_on_close(lambda: setattr(ours, "propagate", propagate))
    result = run.run_qbb(
        butler_config,
        qgraph,
        qgraph_node_id=node_ids,
        processes=processes,
        ledger_dir=ledger_dir,
        ledger_name=ledger_name,
        durability=durability.lower(),
        config_search_path=config_search_path or None,
        upstream_provenance=upstream_provenance,
        pdb=pdb,
        debug=lsst_debug,
        start_method=start_method,
        timeout=timeout,
        fail_fast=fail_fast,
        summary=summary,
        enable_implicit_threading=enable_implicit_threading,
        cores_per_quantum=cores_per_quantum,
        memory_per_quantum=memory_per_quantum,
        raise_on_partial_outputs=raise_on_partial_outputs,
        no_existing_outputs=no_existing_outputs,
        profile=profile,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    _summarize(result)
    if not result.ok:
        ctx.exit(EXIT_PROBLEM)


def _summarize(result: Any) -> None:
    """One line of counts on stderr, then one line per quantum that did not succeed."""
    counts = ", ".join(f"{n:,} {status}" for status, n in result.counts().items())
    total = len(result.quanta)
    noun = "quantum" if total == 1 else "quanta"
    where = f"ledgers in {result.ledger_dir}"
    click.echo(f"qledger run-qbb: {total:,} {noun}: {counts or 'none run'}; {where}", err=True)
    for q in result.quanta:
        if q.status in ("succeeded", "not run"):
            continue
        data_id = ", ".join(f"{k}={v}" for k, v in q.data_id.items())
        why = f": {q.error_type}: {q.error_message}" if q.error_type else ""
        click.echo(f"  {q.status} {q.task_label} {{{data_id}}} {q.quantum_id}{why}", err=True)
    if result.error is not None:
        click.echo(f"qledger run-qbb: {type(result.error).__name__}: {result.error}", err=True)
    sys.stderr.flush()
