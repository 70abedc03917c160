"""A two-task pipeline of real ``PipelineTask``s, a real butler repository and its quantum graph.

``scale`` doubles each detector's ``raw``; ``sum`` adds the scaled values up
into ``total`` and counts them into ``count``. Their configs make chosen
quanta go wrong: ``scale`` raises ``ZeroDivisionError`` (``fail_on``) or
``NoWorkFound`` (``no_work_on``) on some detectors, and ``sum`` kills its own
process with SIGKILL right after its first ``put`` (``kill_on``) or raises there
(``fail_after_put_on``). The graph is
built by upstream's ``AllDimensionsQuantumGraphBuilder`` and written as a
``.qg`` file, as ``pipetask qgraph`` writes it. Spawned workers and
``qledger run-qbb`` import this module by name: put its folder on the path.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lsst.pex.config as pex_config
import lsst.pipe.base as pipe_base
from lsst.daf.butler import Butler, DatasetType
from lsst.pipe.base import connectionTypes as ct  # noqa: N813 -- upstream's usual short name
from lsst.pipe.base.all_dimensions_quantum_graph_builder import AllDimensionsQuantumGraphBuilder
from lsst.pipe.base.pipeline_graph import PipelineGraph

DIMENSIONS = ("instrument", "detector")
INSTRUMENT = "Cam"


class ScaleConnections(pipe_base.PipelineTaskConnections, dimensions=DIMENSIONS):
    """raw -> scaled, per detector."""

    raw = ct.Input(name="raw", storageClass="StructuredDataDict", dimensions=DIMENSIONS)
    scaled = ct.Output(name="scaled", storageClass="StructuredDataDict", dimensions=DIMENSIONS)


class ScaleConfig(pipe_base.PipelineTaskConfig, pipelineConnections=ScaleConnections):
    """Which detectors fail, or find no work."""

    fail_on = pex_config.ListField[int](default=[], doc="detectors that raise ZeroDivisionError")
    no_work_on = pex_config.ListField[int](default=[], doc="detectors that raise NoWorkFound")


class ScaleTask(pipe_base.PipelineTask):
    """Doubles every value of its raw dict."""

    ConfigClass = ScaleConfig
    _DefaultName = "scale"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read raw, maybe fail, write scaled."""
        detector = butlerQC.quantum.dataId["detector"]
        raw = butlerQC.get(inputRefs.raw)
        if detector in self.config.fail_on:
            raise ZeroDivisionError(f"detector {detector} cannot be scaled")
        if detector in self.config.no_work_on:
            raise pipe_base.NoWorkFound(f"nothing to scale on detector {detector}")
        butlerQC.put({k: 2 * v for k, v in raw.items()}, outputRefs.scaled)


class SumConnections(pipe_base.PipelineTaskConnections, dimensions=DIMENSIONS):
    """scaled -> total and count, per detector."""

    scaled = ct.Input(name="scaled", storageClass="StructuredDataDict", dimensions=DIMENSIONS)
    total = ct.Output(name="total", storageClass="StructuredDataDict", dimensions=DIMENSIONS)
    count = ct.Output(name="count", storageClass="StructuredDataDict", dimensions=DIMENSIONS)


class SumConfig(pipe_base.PipelineTaskConfig, pipelineConnections=SumConnections):
    """Which detectors kill their process, or raise, mid-quantum."""

    kill_on = pex_config.ListField[int](
        default=[], doc="detectors whose process kills itself (SIGKILL) after its first put"
    )
    fail_after_put_on = pex_config.ListField[int](
        default=[], doc="detectors that raise RuntimeError after their first put"
    )


class SumTask(pipe_base.PipelineTask):
    """Adds up and counts the scaled values."""

    ConfigClass = SumConfig
    _DefaultName = "sum"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read scaled, write total, maybe die, write count."""
        detector = butlerQC.quantum.dataId["detector"]
        scaled = butlerQC.get(inputRefs.scaled)
        butlerQC.put({"total": sum(scaled.values())}, outputRefs.total)
        if detector in self.config.kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if detector in self.config.fail_after_put_on:
            raise RuntimeError(f"sum of detector {detector} failed half-way")
        butlerQC.put({"count": len(scaled)}, outputRefs.count)


@dataclass
class Repo:
    """A butler repository with one raw dict per detector in ``raw/run``."""

    root: Path
    detectors: tuple[int, ...]


def make_repo(root: Path, detectors: tuple[int, ...] = (1, 2, 3)) -> Repo:
    """A new repository at ``root`` with the pipeline's dimensions and raw inputs."""
    Butler.makeRepo(str(root))
    with Butler.from_config(str(root), writeable=True, run="raw/run") as butler:
        butler.registry.insertDimensionData("instrument", {"name": INSTRUMENT, "detector_max": 16})
        butler.registry.insertDimensionData(
            "detector",
            *[{"instrument": INSTRUMENT, "id": d, "full_name": f"d{d}"} for d in detectors],
        )
        raw = DatasetType("raw", DIMENSIONS, "StructuredDataDict", universe=butler.dimensions)
        butler.registry.registerDatasetType(raw)
        for d in detectors:
            butler.put({"a": d, "b": 10 * d}, raw, instrument=INSTRUMENT, detector=d)
    return Repo(root, detectors)


def pipeline(
    *,
    fail_on: tuple[int, ...] = (),
    no_work_on: tuple[int, ...] = (),
    kill_on: tuple[int, ...] = (),
    fail_after_put_on: tuple[int, ...] = (),
) -> PipelineGraph:
    """The two tasks, configured to go wrong where asked."""
    scale, total = ScaleConfig(), SumConfig()
    scale.fail_on, scale.no_work_on = list(fail_on), list(no_work_on)
    total.kill_on, total.fail_after_put_on = list(kill_on), list(fail_after_put_on)
    graph = PipelineGraph()
    graph.add_task("scale", ScaleTask, scale)
    graph.add_task("sum", SumTask, total)
    return graph


def make_graph(repo: Repo, path: Path, output_run: str, **config: tuple[int, ...]) -> Path:
    """Build the pipeline's quantum graph over ``repo`` with upstream's builder; write it."""
    graph = pipeline(**config)
    with Butler.from_config(str(repo.root), writeable=True) as butler:
        graph.resolve(butler.registry)
        graph.register_dataset_types(butler)
        builder = AllDimensionsQuantumGraphBuilder(
            graph, butler, input_collections=["raw/run"], output_run=output_run
        )
        builder.finish(attach_datastore_records=True).write(str(path))
    return path
