"""`RecordingButlerFactory`: the ``limited_butler_factory`` that records every quantum it serves.

Upstream's ``SingleQuantumExecutor(butler=None, limited_butler_factory=...)``
calls the factory with the quantum alone. The graph's id of that quantum (the
node id that ``pipetask run-qbb --qgraph-node-id`` takes) reaches the
executor's ``execute(task_node, quantum, quantum_id)`` but never the factory;
`ledger.lsst.RecordingQuantumExecutor` (upstream's ``QuantumExecutor``
interface, which ``MPGraphExecutor`` drives) hands it over by binding it on
the factory around each ``execute`` (`RecordingButlerFactory.bind`). The
factory pickles (``MPGraphExecutor`` sends it to every spawned worker), so
each worker process records its quanta itself.

Where the ledger goes: ``ledger_dir / ledger_name.format(quantum_id=...,
task_label=...)``; the default name gives one ledger file per quantum, and a
name without ``{quantum_id}`` puts several quanta in one ledger (each with its
own chain), as a ledger shared by the quanta of a job.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import string
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsst.daf.butler import DimensionConfig, DimensionUniverse, QuantumBackedButler

from .._logging import get_logger
from ..errors import NoWorkFound, SettingsError, UnboundQuantumError
from ..store.log import Durability
from .wrapper import RecordingButler

__all__ = ["DEFAULT_LEDGER_NAME", "RecordingButlerFactory", "check_ledger_name"]

_log = get_logger(__name__)

#: One ledger per quantum, named by the graph's quantum id.
DEFAULT_LEDGER_NAME = "{quantum_id}.ledger"
#: The fields a ledger name may use.
_NAME_FIELDS = frozenset({"quantum_id", "task_label"})
#: What the upstream provenance file of a quantum is called, beside its ledger.
UPSTREAM_PROVENANCE_NAME = "{quantum_id}.upstream.json"


def check_ledger_name(template: str) -> None:
    """Refuse a ledger name template that is not a relative file name with known fields.

    Raises:
        SettingsError: an unknown field, a malformed template, or a name that
            leaves the ledger directory.
    """
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise SettingsError(f"ledger name {template!r} is not a valid template: {e}") from None
    unknown = fields - _NAME_FIELDS
    if unknown:
        raise SettingsError(
            f"ledger name {template!r} uses {', '.join(sorted(unknown))}; a ledger name may use "
            "{quantum_id} and {task_label} only"
        )
    path = Path(template)
    if not template or path.is_absolute() or ".." in path.parts or template.endswith(os.sep):
        raise SettingsError(
            f"ledger name {template!r} must be a file name inside the ledger directory "
            "(relative, no '..')"
        )


@dataclass(frozen=True)
class _Binding:
    """What the executor knows of the quantum it is about to run, and the factory does not."""

    quantum: Any
    quantum_id: uuid.UUID | None
    task_label: str | None
    metadata_dataset_type: str | None


class RecordingButlerFactory:
    """Makes a `RecordingButler` around upstream's ``QuantumBackedButler`` for each quantum.

    Pass it as ``limited_butler_factory`` to upstream's ``SingleQuantumExecutor``
    (or use `ledger.lsst.RecordingQuantumExecutor`, which does, and binds each
    quantum's graph id). Built from what ``pipetask run-qbb``'s own factory is
    built from — the butler config, the dimension universe and the dataset
    types — and where the ledgers go. It pickles, rebuilding the dimension
    universe before the dataset types (upstream's own factory does the same),
    so the executor may run quanta in spawned worker processes.

    Args:
        butler_config: the butler repository config (path or URI) for upstream's
            ``QuantumBackedButler.initialize``.
        dimensions: the dimension universe (the quantum graph's).
        dataset_types: dataset type name -> upstream ``DatasetType``.
        ledger_dir: the directory of the ledgers (created when needed).
        ledger_name: the ledger's file name in ``ledger_dir``, a template of
            ``{quantum_id}`` and ``{task_label}``; without ``{quantum_id}``
            several quanta share one ledger.
        durability: ``"full"``, ``"normal"`` or ``"batch"``, for every ledger.
        config_search_path: extra search paths for the butler config.
        upstream_provenance: also write upstream's own provenance of each
            quantum (the wrapped butler's ``extract_provenance_data()`` when it
            closes) as ``{quantum_id}.upstream.json`` in ``ledger_dir``.

    Raises:
        SettingsError: a ledger name that is not a file name in ``ledger_dir``.
    """

    def __init__(
        self,
        butler_config: str | os.PathLike[str],
        dimensions: Any,
        dataset_types: Mapping[str, Any],
        ledger_dir: str | os.PathLike[str],
        *,
        ledger_name: str = DEFAULT_LEDGER_NAME,
        durability: Durability = "normal",
        config_search_path: list[str] | None = None,
        upstream_provenance: bool = False,
    ) -> None:
        check_ledger_name(ledger_name)
        self.butler_config = str(butler_config)
        self.dimensions = dimensions
        self.dataset_types = dict(dataset_types)
        self.ledger_dir = Path(ledger_dir)
        self.ledger_name = ledger_name
        self.durability: Durability = durability
        self.config_search_path = list(config_search_path) if config_search_path else None
        self.upstream_provenance = upstream_provenance
        self._local = threading.local()

    # --- which quantum --------------------------------------------------------------

    @contextlib.contextmanager
    def bind(
        self,
        quantum: Any,
        quantum_id: uuid.UUID | None,
        *,
        task_label: str | None = None,
        metadata_dataset_type: str | None = None,
    ) -> Iterator[None]:
        """Within the block, a call for ``quantum`` records it under ``quantum_id``.

        The executor knows the graph's id of the quantum it runs, the factory
        is called with the quantum alone: binding is how the id (and the task's
        label, and the name of the metadata dataset type, whose ``put`` carries
        upstream's success caveats) reaches the ledger. Per thread.
        """
        previous = getattr(self._local, "binding", None)
        self._local.binding = _Binding(quantum, quantum_id, task_label, metadata_dataset_type)
        try:
            yield
        finally:
            self._local.binding = previous

    def _binding_for(self, quantum: Any) -> _Binding | None:
        binding: _Binding | None = getattr(self._local, "binding", None)
        if binding is None:
            return None
        if binding.quantum is not quantum and (
            binding.quantum.taskName != quantum.taskName or binding.quantum.dataId != quantum.dataId
        ):
            raise UnboundQuantumError(
                f"the butler factory was asked for quantum {quantum.taskName} {quantum.dataId} "
                f"while {binding.quantum.taskName} {binding.quantum.dataId} (graph id "
                f"{binding.quantum_id}) is bound: the executor calls it for another quantum "
                "than the one it runs"
            )
        return binding

    def ledger_path(self, quantum_id: uuid.UUID | str, task_label: str | None = None) -> Path:
        """Where the quantum ``quantum_id`` is recorded."""
        name = self.ledger_name.format(quantum_id=quantum_id, task_label=task_label or "unknown")
        return self.ledger_dir / name

    def upstream_provenance_path(self, quantum_id: uuid.UUID | str) -> Path:
        """Where upstream's own provenance of ``quantum_id`` goes (``upstream_provenance``)."""
        return self.ledger_dir / UPSTREAM_PROVENANCE_NAME.format(quantum_id=quantum_id)

    # --- the factory ------------------------------------------------------------------

    def __call__(self, quantum: Any) -> RecordingButler:
        """A recording butler for ``quantum``; its start is in the ledger when this returns.

        Without a binding (the factory given straight to upstream's executor,
        which passes no id) the quantum is recorded under a new random id, and a
        ``quantum_id_unknown`` warning is logged.

        Raises:
            UnboundQuantumError: another quantum is bound.
            QuantumStillRunningError: the quantum's latest attempt still runs.
        """
        binding = self._binding_for(quantum)
        if binding is None or binding.quantum_id is None:
            quantum_id = uuid.uuid4()
            _log.warning(
                "quantum_id_unknown",
                task=quantum.taskName,
                data_id=str(quantum.dataId),
                recorded_as=str(quantum_id),
                why="no graph quantum id bound (use RecordingQuantumExecutor)",
            )
        else:
            quantum_id = binding.quantum_id
        task_label = binding.task_label if binding is not None else None
        path = self.ledger_path(quantum_id, task_label)
        path.parent.mkdir(parents=True, exist_ok=True)
        qbb = QuantumBackedButler.initialize(
            config=self.butler_config,
            quantum=quantum,
            dimensions=self.dimensions,
            dataset_types=self.dataset_types,
            search_paths=self.config_search_path,
        )
        try:
            return _FactoryButler(
                qbb,
                quantum,
                ledger=path,
                durability=self.durability,
                quantum_id=quantum_id,
                task_label=task_label,
                metadata_dataset_type=binding.metadata_dataset_type if binding else None,
                upstream_provenance=(
                    self.upstream_provenance_path(quantum_id) if self.upstream_provenance else None
                ),
            )
        except BaseException:
            qbb.close()
            raise

    # --- pickling (to spawned workers) -----------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        # The universe first: unpickling a dataset type needs its universe to exist.
        # The default universe is rebuilt from nothing; another one from its config.
        config = self.dimensions.dimensionConfig
        default = DimensionConfig()
        custom = (config["namespace"], config["version"]) != (
            default["namespace"],
            default["version"],
        )
        return (
            _unpickle_factory,
            (
                self.butler_config,
                config if custom else None,
                pickle.dumps(self.dataset_types),
                str(self.ledger_dir),
                self.ledger_name,
                self.durability,
                self.config_search_path,
                self.upstream_provenance,
            ),
        )


def _unpickle_factory(
    butler_config: str,
    dimension_config: Any,
    dataset_types: bytes,
    ledger_dir: str,
    ledger_name: str,
    durability: Durability,
    config_search_path: list[str] | None,
    upstream_provenance: bool,
) -> RecordingButlerFactory:
    universe = DimensionUniverse(dimension_config)
    return RecordingButlerFactory(
        butler_config,
        universe,
        pickle.loads(dataset_types),  # our own pickle, made by the parent process
        ledger_dir,
        ledger_name=ledger_name,
        durability=durability,
        config_search_path=config_search_path,
        upstream_provenance=upstream_provenance,
    )


def _upstream_caveats(metadata: Any) -> Any:
    """Upstream's ``QuantumSuccessCaveats`` in a task metadata being put, or None."""
    from lsst.pipe.base import QuantumSuccessCaveats

    try:
        value = metadata["quantum"]["caveats"]
    except (KeyError, TypeError, AttributeError):
        return None
    try:
        return QuantumSuccessCaveats(int(value))
    except (TypeError, ValueError):
        return None


class _FactoryButler(RecordingButler):
    """What the factory makes: also notes the caveats upstream's executor writes.

    Upstream's executor catches a task's ``NoWorkFound`` (and the one
    ``adjustQuantum`` raises) itself, so ``close()`` never sees it; what it
    leaves is the ``caveats`` it writes into the quantum's metadata dataset.
    A successful end then records the ``no_work`` caveat when those caveats
    say ``NO_WORK``. With ``upstream_provenance``, the wrapped butler's own
    provenance is written at close, before it is closed.
    """

    def __init__(
        self,
        butler: Any,
        quantum: Any,
        *,
        metadata_dataset_type: str | None,
        upstream_provenance: Path | None,
        **kwargs: Any,
    ) -> None:
        self._ledger_metadata_type = metadata_dataset_type
        self._ledger_upstream_path = upstream_provenance
        self._ledger_caveats: Any = None
        super().__init__(butler, quantum, **kwargs)

    def put(self, obj: Any, ref: Any, /, *, provenance: Any = None) -> Any:
        """As `RecordingButler.put`; the metadata dataset's caveats are noted for the end."""
        result = super().put(obj, ref, provenance=provenance)
        if self._ledger_metadata_type is not None and (
            ref.datasetType.name == self._ledger_metadata_type
        ):
            self._ledger_caveats = _upstream_caveats(obj)
        return result

    def close(self) -> None:
        """As `RecordingButler.close`, with upstream's ``NO_WORK`` caveat counted a no-work end."""
        if self._ledger_recorder.closed:
            return
        if self._ledger_upstream_path is not None:
            self._ledger_write_upstream(self._ledger_upstream_path)
        error = sys.exc_info()[1]
        caveats = self._ledger_caveats
        if (error is None or error is self._ledger_outer_error) and caveats is not None:
            from lsst.pipe.base import QuantumSuccessCaveats

            if caveats & QuantumSuccessCaveats.NO_WORK:
                self.finish(
                    NoWorkFound(
                        f"upstream's executor caught NoWorkFound (caveats {caveats.name} in "
                        "the task metadata)"
                    )
                )
                return
        super().close()

    def _ledger_write_upstream(self, path: Path) -> None:
        """Write the wrapped butler's own provenance; a failure is logged, never raised."""
        try:
            text = self._ledger_butler.extract_provenance_data().model_dump_json()
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
        except Exception as e:  # the quantum's end matters more than this copy
            self._ledger_logger.warning(
                "upstream_provenance_not_written", path=str(path), why=f"{type(e).__name__}: {e}"
            )
