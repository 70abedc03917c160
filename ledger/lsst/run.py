"""`run_qbb`: ``pipetask run-qbb``'s execution with every quantum recorded in a ledger.

The same steps as ctrl_mpexec's ``run_qbb`` script (30.2026.500): read the
execution quanta of a predicted quantum graph, make upstream's
``SingleQuantumExecutor`` (here inside `RecordingQuantumExecutor`, with a
`RecordingButlerFactory` as its butler factory) and run the graph with
upstream's ``MPGraphExecutor``, in process or, with ``processes > 1``, in
spawned worker processes that each record their quanta. Afterwards each
quantum's status is read back from its ledger.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._logging import get_logger
from ..errors import LedgerError, QuantumGraphError, SettingsError
from ..events import utc_now
from ..store.ledger import Ledger
from ..store.log import Durability
from .executor import RecordingQuantumExecutor
from .factory import DEFAULT_LEDGER_NAME, RecordingButlerFactory

__all__ = [
    "QuantumOutcome",
    "RunResult",
    "configure_cli_logging",
    "default_ledger_dir",
    "run_qbb",
]

_log = get_logger(__name__)

#: Upstream's default wall-time limit of a multiprocess run (ctrl_mpexec's MP_TIMEOUT): 30 days.
DEFAULT_TIMEOUT = 3600 * 24 * 30


@dataclass(frozen=True)
class QuantumOutcome:
    """How one quantum of the graph ended in this run, as its ledger says.

    ``status`` is ``succeeded``, ``failed``, ``interrupted`` (started, no end
    recorded: the process died), ``not recorded`` (no attempt of this run in
    its ledger, yet upstream's executor reports it failed: its recording could
    not start, e.g. an unreadable ledger file; the error is upstream's report)
    or ``not run`` (blocked by a failed upstream quantum, or the run stopped
    first).
    """

    quantum_id: uuid.UUID
    task_label: str
    data_id: dict[str, Any]
    ledger: Path
    status: str
    attempt: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    caveats: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "quantum_id": str(self.quantum_id),
            "task_label": self.task_label,
            "data_id": self.data_id,
            "ledger": str(self.ledger),
            "status": self.status,
            "attempt": self.attempt,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "caveats": self.caveats,
        }


@dataclass(frozen=True)
class RunResult:
    """What `run_qbb` did: each quantum's outcome, and upstream's executor's error if any."""

    ledger_dir: Path
    quanta: list[QuantumOutcome]
    error: BaseException | None = field(default=None)

    @property
    def ok(self) -> bool:
        """Whether upstream's executor finished without an error (``pipetask`` exits 0)."""
        return self.error is None

    def counts(self) -> dict[str, int]:
        """Quanta per status, in a fixed order; zero counts left out."""
        order = ("succeeded", "failed", "interrupted", "not recorded", "not run")
        found = {s: sum(q.status == s for q in self.quanta) for s in order}
        return {s: n for s, n in found.items() if n}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ledger_dir": str(self.ledger_dir),
            "ok": self.ok,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "counts": self.counts(),
            "quanta": [q.as_dict() for q in self.quanta],
        }


def default_ledger_dir(qgraph: str | os.PathLike[str]) -> Path:
    """``ledgers/`` beside a local quantum graph file.

    Raises:
        SettingsError: the graph is not a local file (give the directory).
    """
    text = str(qgraph)
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "file":
        raise SettingsError(
            f"the quantum graph {text} is not a local file: give the ledgers' directory "
            "with --ledger-dir"
        )
    return Path(rest if sep else text).parent / "ledgers"


def _node_ids(values: Iterable[str | uuid.UUID]) -> set[uuid.UUID] | None:
    ids: set[uuid.UUID] = set()
    for value in values:
        if isinstance(value, uuid.UUID):
            ids.add(value)
            continue
        for part in str(value).split(","):
            if not part.strip():
                continue
            try:
                ids.add(uuid.UUID(part.strip()))
            except ValueError:
                raise QuantumGraphError(
                    f"--qgraph-node-id {part.strip()!r} is not a quantum id (a UUID)"
                ) from None
    return ids or None


def run_qbb(
    butler_config: str | os.PathLike[str],
    qgraph: str | os.PathLike[str],
    *,
    qgraph_node_id: Iterable[str | uuid.UUID] = (),
    processes: int = 1,
    ledger_dir: str | os.PathLike[str] | None = None,
    ledger_name: str = DEFAULT_LEDGER_NAME,
    durability: Durability = "normal",
    config_search_path: list[str] | None = None,
    upstream_provenance: bool = False,
    task_factory: Any = None,
    pdb: str | None = None,
    debug: bool = False,
    start_method: Literal["spawn", "forkserver", "fork"] | None = None,
    timeout: int | None = None,
    fail_fast: bool = False,
    summary: str | None = None,
    enable_implicit_threading: bool = False,
    cores_per_quantum: int = 1,
    memory_per_quantum: str = "",
    raise_on_partial_outputs: bool = True,
    no_existing_outputs: bool = False,
    profile: str | None = None,
) -> RunResult:
    """Execute the quanta of a quantum graph as ``pipetask run-qbb`` does, recording each.

    The arguments after the ledger's are ``pipetask run-qbb``'s, with the same
    meaning. Upstream's executor's error (a quantum failed, was killed or timed
    out) is not raised: it is `RunResult.error` (``pipetask`` exits 1 then).
    An ``InvalidQuantumError`` (and, with ``fail_fast``, a
    ``RepeatableQuantumError``) of a quantum run in this process exits the
    process with its exit code, as upstream's executor does.

    Args:
        butler_config: the butler repository's config.
        qgraph: the predicted quantum graph file (``.qg``, or the older ``.qgraph``).
        qgraph_node_id: the graph's quantum ids to run (each may be a
            comma-separated list); all when empty.
        processes: run that many quanta at once, each in a spawned process.
        ledger_dir: where the ledgers go (default ``ledgers/`` beside ``qgraph``).
        ledger_name: each ledger's name (see `RecordingButlerFactory`).
        durability: of every ledger.
        upstream_provenance: also write upstream's own provenance of each quantum.

    Returns:
        Each loaded quantum's outcome, from the ledgers.

    Raises:
        SettingsError: a bad ledger name, or no ledger directory for a remote graph.
        QuantumGraphError: no such graph file, one that cannot be read, or node ids
            that are not UUIDs or not in the graph.
    """
    import astropy.units as u  # type: ignore[import-untyped]
    import lsst.utils.timer
    from lsst.daf.butler.datastore.cache_manager import DatastoreCacheManager
    from lsst.pipe.base import ExecutionResources
    from lsst.pipe.base.mp_graph_executor import MPGraphExecutor
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
    from lsst.utils.threads import disable_implicit_threading

    directory = Path(ledger_dir) if ledger_dir is not None else default_ledger_dir(qgraph)
    quantum_ids = _node_ids(qgraph_node_id)
    if start_method == "fork":  # as upstream: fork is unsafe, spawn instead
        start_method = "spawn"
    if not enable_implicit_threading:
        disable_implicit_threading()
    text = str(qgraph)
    if "://" not in text and not Path(text).exists():
        raise QuantumGraphError(f"no quantum graph file {text}")
    with lsst.utils.timer.time_this() as read_time:
        try:
            graph = PredictedQuantumGraph.read_execution_quanta(text, quantum_ids=quantum_ids)
        except LookupError as e:
            if quantum_ids is None:
                raise QuantumGraphError(f"cannot read the quantum graph {text}: {e}") from e
            raise QuantumGraphError(
                f"--qgraph-node-id: a quantum id is not in {text} (upstream: {e})"
            ) from e
        except (OSError, ValueError, TypeError) as e:
            raise QuantumGraphError(
                f"cannot read the quantum graph {text}: {type(e).__name__}: {e}"
            ) from e
    if quantum_ids is not None:
        unknown = quantum_ids - set(graph)
        if unknown:
            raise QuantumGraphError(
                f"--qgraph-node-id: {len(unknown)} quantum id(s) not in {text}: "
                + ", ".join(sorted(str(i) for i in unknown)[:5])
            )
    dataset_types = {n.name: n.dataset_type for n in graph.pipeline_graph.dataset_types.values()}
    defined, cache_dir = DatastoreCacheManager.set_fallback_cache_directory_if_unset()
    if defined:  # one datastore cache for every quantum of this run, removed at exit
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    factory = RecordingButlerFactory(
        butler_config,
        graph.pipeline_graph.universe,
        dataset_types,
        directory,
        ledger_name=ledger_name,
        durability=durability,
        config_search_path=config_search_path,
        upstream_provenance=upstream_provenance,
    )
    executor = RecordingQuantumExecutor(
        factory,
        task_factory=task_factory,
        enable_lsst_debug=debug,
        resources=ExecutionResources(
            num_cores=cores_per_quantum, max_mem=memory_per_quantum, default_mem_units=u.MB
        ),
        assume_no_existing_outputs=no_existing_outputs,
        skip_existing=True,
        clobber_outputs=True,
        raise_on_partial_outputs=raise_on_partial_outputs,
        job_metadata={"qg_read_time": read_time.duration, "qg_size": len(graph)},
    )
    graph_executor = MPGraphExecutor(
        num_proc=processes,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        start_method=start_method,
        quantum_executor=executor,
        fail_fast=fail_fast,
        pdb=pdb,
    )
    directory.mkdir(parents=True, exist_ok=True)
    started = utc_now()
    error: BaseException | None = None
    try:
        with lsst.utils.timer.profile(profile, logging.getLogger(__name__)):
            graph_executor.execute(graph)
    except Exception as e:  # a quantum failed: pipetask's exit code 1, after the outcomes
        error = e
    finally:
        if summary:
            _write_summary(graph_executor, summary)
    reports = _upstream_reports(graph_executor)
    return RunResult(directory, _outcomes(graph, factory, started, reports), error)


def _report_key(label: str | None, data_id: Mapping[str, Any]) -> tuple[Any, ...]:
    return (label, tuple(sorted((str(k), _plain(v)) for k, v in data_id.items())))


def _upstream_reports(graph_executor: Any) -> dict[tuple[Any, ...], Any]:
    """Upstream's report of each quantum executed, by task label and required data ID."""
    try:
        report = graph_executor.getReport()
    except RuntimeError:  # nothing executed
        return {}
    return {_report_key(q.taskLabel, q.dataId): q for q in report.quantaReports}


def _write_summary(graph_executor: Any, summary: str) -> None:
    """Upstream's job report (``--summary``), as ``pipetask run-qbb`` writes it."""
    from lsst.resources import ResourcePath

    try:
        report = graph_executor.getReport()
    except RuntimeError:  # nothing executed
        return
    if report:
        with ResourcePath(summary).open("w") as out:
            out.write(report.model_dump_json(exclude_none=True, indent=2))


def _outcomes(
    graph: Any,
    factory: RecordingButlerFactory,
    started: str,
    reports: Mapping[tuple[Any, ...], Any],
) -> list[QuantumOutcome]:
    """Each quantum of ``graph`` and what its ledger says of this run's attempt.

    A quantum without an attempt of this run is ``not recorded`` when
    upstream's report says it failed (with that report's error), else ``not run``.
    """
    statuses: dict[Path, dict[str, dict[str, Any]]] = {}
    outcomes = []
    for label, quanta in graph.quanta_by_task.items():
        for data_id, quantum_id in quanta.items():
            path = factory.ledger_path(quantum_id, label)
            if path not in statuses:
                statuses[path] = _statuses(path)
            row = statuses[path].get(str(quantum_id))
            data = {str(k): _plain(v) for k, v in data_id.mapping.items()}
            if row is None or (row.get("attempt_started_at") or "") < started:
                outcomes.append(
                    _unrecorded(quantum_id, label, data, path, reports, data_id.required)
                )
                continue
            outcomes.append(
                QuantumOutcome(
                    quantum_id,
                    label,
                    data,
                    path,
                    row["status"],
                    attempt=row["attempts"],
                    error_type=row.get("error_type"),
                    error_message=row.get("error_message"),
                    caveats=row.get("caveats"),
                )
            )
    return outcomes


def _unrecorded(
    quantum_id: uuid.UUID,
    label: str,
    data: dict[str, Any],
    path: Path,
    reports: Mapping[tuple[Any, ...], Any],
    required: Mapping[str, Any],
) -> QuantumOutcome:
    """A quantum with no attempt of this run in its ledger: what upstream says of it."""
    report: Any = reports.get(_report_key(label, required))
    status = getattr(getattr(report, "status", None), "value", None)
    if status not in ("failure", "timeout"):
        return QuantumOutcome(quantum_id, label, data, path, "not run")
    info = report.exceptionInfo
    if info is not None:
        error_type, message = info.className.rpartition(".")[2], info.message
    else:
        error_type, message = status, f"exit code {report.exitCode}"
    return QuantumOutcome(
        quantum_id, label, data, path, "not recorded", error_type=error_type, error_message=message
    )


def _statuses(path: Path) -> dict[str, dict[str, Any]]:
    """The status rows of a ledger by quantum id; none when it is missing or unreadable."""
    if not path.exists():
        return {}
    try:
        with Ledger.open(path) as led:
            return {str(row["quantum_id"]): row for row in led.status()}
    except LedgerError as e:
        _log.warning("ledger_unreadable", ledger=str(path), why=str(e))
        return {}


def _plain(value: Any) -> int | str:
    return value if isinstance(value, int | str) else str(value)


def configure_cli_logging(
    *,
    levels: Iterable[tuple[str | None, str]] = (),
    long_log: bool = False,
    log_file: tuple[str, ...] = (),
    log_tty: bool = True,
    log_label: Mapping[str, str] | None = None,
) -> Any:
    """Set up logging as ``pipetask`` does (for a command line program only).

    Upstream's ``CliLog``: its handlers and levels, which ``MPGraphExecutor``
    replays in each worker it spawns. Returns the function that undoes it.
    """
    from lsst.daf.butler.cli.cliLog import CliLog

    CliLog.initLog(
        longlog=long_log, log_tty=log_tty, log_file=log_file, log_label=dict(log_label or {})
    )
    CliLog.setLogLevels(list(levels))
    return CliLog.resetLog
