"""`RecordingButler` under upstream's own executor: the end it records is the task's.

pipe_base's ``SingleQuantumExecutor(butler=None, limited_butler_factory=...)``
builds the butler with the factory and calls ``close()`` in a ``finally``,
never ``__exit__``; the ledger must still say succeeded, or failed with the
task's exception, and the wrapped butler must be closed.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

pipe_base = pytest.importorskip(
    "lsst.pipe.base",
    reason="needs the lsst extra (pip install 'quantum-ledger[lsst]'): lsst-pipe-base is absent",
)

# Imported after the skip above: without the extra these imports fail.
import lsst.pex.config as pex_config  # noqa: E402
from lsst.daf.butler import (  # noqa: E402
    Butler,
    DataCoordinate,
    DatasetRef,
    Quantum,
    QuantumBackedButler,
)
from lsst.pipe.base import connectionTypes  # noqa: E402
from lsst.pipe.base.pipeline_graph import PipelineGraph  # noqa: E402
from lsst.pipe.base.single_quantum_executor import SingleQuantumExecutor  # noqa: E402

from ledger import Ledger  # noqa: E402
from ledger.lsst import RecordingButler  # noqa: E402


class DoubleConnections(pipe_base.PipelineTaskConnections, dimensions=()):
    """One input dict, one output dict."""

    numbers = connectionTypes.Input(
        name="numbers", storageClass="StructuredDataDict", dimensions=()
    )
    doubled = connectionTypes.Output(
        name="doubled", storageClass="StructuredDataDict", dimensions=()
    )


class DoubleConfig(pipe_base.PipelineTaskConfig, pipelineConnections=DoubleConnections):
    """Whether the task fails."""

    fail = pex_config.Field[bool](default=False, doc="raise ZeroDivisionError instead")


class DoubleTask(pipe_base.PipelineTask):
    """Doubles every value, or fails when asked to."""

    ConfigClass = DoubleConfig
    _DefaultName = "double"

    def run(self, numbers: dict[str, int]) -> pipe_base.Struct:
        """The doubled dict."""
        if self.config.fail:
            raise ZeroDivisionError("asked to fail")
        return pipe_base.Struct(doubled={k: 2 * v for k, v in numbers.items()})


def _execute(tmp_path: Path, *, fail: bool) -> tuple[Path, list[Any]]:
    """Run one quantum of DoubleTask through upstream's executor with a recording factory."""
    root = tmp_path / "repo"
    Butler.makeRepo(str(root))
    butler = Butler.from_config(str(root), writeable=True, run="in")
    config = DoubleConfig()
    config.fail = fail
    graph = PipelineGraph()
    graph.add_task("double", DoubleTask, config)
    graph.resolve(butler.registry)
    graph.register_dataset_types(butler)
    universe = butler.dimensions
    empty = DataCoordinate.make_empty(universe)
    types = {name: node.dataset_type for name, node in graph.dataset_types.items()}
    numbers = butler.put({"a": 1, "b": 2}, DatasetRef(types["numbers"], empty, run="in"))
    outputs = {
        types[name]: [DatasetRef(types[name], empty, run="out")]
        for name in ("doubled", "double_metadata", "double_log")
    }
    quantum = Quantum(
        taskName=f"{DoubleTask.__module__}.{DoubleTask.__qualname__}",
        dataId=empty,
        inputs={types["numbers"]: [numbers]},
        outputs=outputs,
        datastore_records=butler._datastore.export_records([numbers]),
    )
    butler.close()
    ledger = tmp_path / "q.ledger"
    quantum_id = uuid.uuid4()
    closes: list[Any] = []

    def factory(quantum: Any) -> RecordingButler:
        qbb = QuantumBackedButler.initialize(str(root), quantum, universe, dataset_types=types)
        close = qbb.close
        qbb.close = lambda: (closes.append(quantum_id), close())  # type: ignore[method-assign]
        return RecordingButler(qbb, quantum, ledger=ledger, quantum_id=quantum_id)

    executor = SingleQuantumExecutor(
        butler=None, task_factory=pipe_base.TaskFactory(), limited_butler_factory=factory
    )
    try:
        executor.execute(graph.tasks["double"], quantum, quantum_id=quantum_id)
    finally:
        assert closes == [quantum_id]  # the wrapped butler was closed, once
    return ledger, [r for refs in outputs.values() for r in refs]


def test_a_successful_quantum_under_the_executor_is_recorded_succeeded(tmp_path: Path) -> None:
    """The executor's close() with no exception records quantum_succeeded; all outputs put."""
    ledger, outputs = _execute(tmp_path, fail=False)
    with Ledger.open(ledger) as led:
        (status,) = led.status()
        provenance = led.replay()
        assert led.verify().ok
    assert status["status"] == "succeeded"
    assert provenance.actual_outputs == {r.id for r in outputs}


def test_a_failing_task_under_the_executor_is_recorded_failed_with_its_error(
    tmp_path: Path,
) -> None:
    """The executor's close() in its finally records quantum_failed with the task's exception."""
    with pytest.raises(ZeroDivisionError, match="asked to fail"):
        _execute(tmp_path, fail=True)
    ledger = tmp_path / "q.ledger"
    with Ledger.open(ledger) as led:
        (status,) = led.status()
        (failed,) = led.events(kind="quantum_failed")
    assert status["status"] == "failed"
    assert (failed.error_type, failed.error_message) == ("ZeroDivisionError", "asked to fail")
    assert (
        "DoubleTask" in (failed.detail or {})["traceback"]
        or "run" in (failed.detail or {})["traceback"]
    )
