"""`RecordingQuantumExecutor`: upstream's ``SingleQuantumExecutor``, quanta under their graph ids.

Upstream's route from the graph to a quantum's execution, in pipe_base
30.2026.500: ``MPGraphExecutor`` (what ``pipetask run-qbb`` runs, in process
or in spawned workers with ``-j``) calls ``quantum_executor.execute(task_node,
quantum, quantum_id=...)`` for each quantum, ``quantum_id`` being the graph's
node id; ``SingleQuantumExecutor.execute`` then calls its
``limited_butler_factory(quantum)`` — without the id. This class implements
upstream's public ``QuantumExecutor`` interface around a
``SingleQuantumExecutor``: it binds the id (and the task's label) on the
`RecordingButlerFactory` for the duration of ``execute``, so that the butler
the factory makes records the quantum under the graph's id. No private name
of upstream is used; ``tests/test_lsst_run.py`` pins the route (the factory
called once per ``execute``, in the same thread, with that quantum).
"""

from __future__ import annotations

import uuid
from typing import Any

from lsst.pipe.base.quantum_graph_executor import QuantumExecutionResult, QuantumExecutor
from lsst.pipe.base.single_quantum_executor import SingleQuantumExecutor

from .factory import RecordingButlerFactory

__all__ = ["RecordingQuantumExecutor"]


class RecordingQuantumExecutor(QuantumExecutor):
    """Upstream's ``SingleQuantumExecutor`` with a `RecordingButlerFactory`, ids bound.

    Give it to upstream's ``MPGraphExecutor(quantum_executor=...)`` in place of
    a ``SingleQuantumExecutor``; it pickles for spawned workers.

    Args:
        factory: the recording butler factory (also the executor's
            ``limited_butler_factory``).
        **kwargs: upstream's ``SingleQuantumExecutor`` arguments
            (``task_factory``, ``skip_existing``, ``clobber_outputs``,
            ``resources``...), but ``butler`` and ``limited_butler_factory``.
    """

    def __init__(self, factory: RecordingButlerFactory, **kwargs: Any) -> None:
        for name in ("butler", "limited_butler_factory"):
            if kwargs.get(name) is not None:
                raise TypeError(f"RecordingQuantumExecutor makes its butlers itself: no {name}=")
            kwargs.pop(name, None)
        self.factory = factory
        butlers: Any = factory  # a LimitedButler maker by registration, unseen by type checkers
        self.executor = SingleQuantumExecutor(butler=None, limited_butler_factory=butlers, **kwargs)

    def execute(
        self,
        task_node: Any,
        /,
        quantum: Any,
        quantum_id: uuid.UUID | None = None,
        *,
        log_records: Any = None,
    ) -> QuantumExecutionResult:
        """Run one quantum through upstream's executor; its ledger records ``quantum_id``."""
        with self.factory.bind(
            quantum,
            quantum_id,
            task_label=task_node.label,
            metadata_dataset_type=task_node.metadata_output.dataset_type_name,
        ):
            return self.executor.execute(
                task_node, quantum, quantum_id=quantum_id, log_records=log_records
            )
