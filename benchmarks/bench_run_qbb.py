"""A whole quantum graph under upstream's executor: recorded (``qledger run-qbb``) against bare.

Both run the same pipeline (``tests/lsst_tasks.py``: ``scale`` then ``sum``
per detector) with upstream's ``MPGraphExecutor`` in process and its
``SingleQuantumExecutor`` as ``pipetask run-qbb`` configures it; the bare run
makes each butler as ``pipetask run-qbb``'s own factory does
(``QuantumBackedButler.initialize``), the recorded run through
`ledger.lsst.RecordingQuantumExecutor` and `RecordingButlerFactory`, one
ledger per quantum at ``normal``. Each round builds a graph for each (its own
output run) and executes them in alternating order; only ``execute`` is timed.
Needs the ``lsst`` extra.

Usage::

    python benchmarks/bench_run_qbb.py            # into its section of RESULTS.md
    python benchmarks/bench_run_qbb.py --quick    # fewer quanta and rounds, printed only
"""

from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, versions, write_section

HERE = Path(__file__).resolve().parent
SECTION = "run-qbb"


def _execute(
    graph_path: Path, repo: Path, ledgers: Path | None, name: str = "{quantum_id}.ledger"
) -> tuple[float, int]:
    """Seconds of upstream's MPGraphExecutor.execute on the graph, and its quanta."""
    from lsst.daf.butler import QuantumBackedButler
    from lsst.pipe.base import TaskFactory
    from lsst.pipe.base.mp_graph_executor import MPGraphExecutor
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
    from lsst.pipe.base.single_quantum_executor import SingleQuantumExecutor

    from ledger.lsst import RecordingButlerFactory, RecordingQuantumExecutor

    qg = PredictedQuantumGraph.read_execution_quanta(str(graph_path))
    universe = qg.pipeline_graph.universe
    types = {n.name: n.dataset_type for n in qg.pipeline_graph.dataset_types.values()}
    options: dict[str, Any] = {
        "task_factory": TaskFactory(),
        "skip_existing": True,
        "clobber_outputs": True,
    }
    executor: Any
    if ledgers is None:

        def factory(quantum: Any) -> Any:
            return QuantumBackedButler.initialize(
                config=str(repo), quantum=quantum, dimensions=universe, dataset_types=types
            )

        executor = SingleQuantumExecutor(butler=None, limited_butler_factory=factory, **options)
    else:
        recording = RecordingButlerFactory(str(repo), universe, types, ledgers, ledger_name=name)
        executor = RecordingQuantumExecutor(recording, **options)
    graph_executor = MPGraphExecutor(num_proc=1, timeout=3600, quantum_executor=executor)
    start = time.perf_counter()
    graph_executor.execute(qg)
    return time.perf_counter() - start, len(qg)


def measure(tmp: Path, *, detectors: int, rounds: int) -> dict[str, Any]:
    """Per-quantum milliseconds of each, medians over the rounds."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import lsst_tasks

    repo = lsst_tasks.make_repo(tmp / "repo", detectors=tuple(range(1, detectors + 1)))
    names = ["bare", "recorded", "shared"]
    times: dict[str, list[float]] = {name: [] for name in names}
    quanta = 0
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # a different one first each round
            graph = lsst_tasks.make_graph(repo, tmp / f"{name}-{r}.qg", f"out/{name}/{r}")
            ledgers = tmp / f"{name}-{r}" if name != "bare" else None
            ledger_name = "run.ledger" if name == "shared" else "{quantum_id}.ledger"
            seconds, quanta = _execute(graph, repo.root, ledgers, ledger_name)
            times[name].append(seconds / quanta * 1e3)
    medians = {name: statistics.median(times[name]) for name in names}
    return {"quanta": quanta, "rounds": rounds, **medians, "all": times}


def section(result: dict[str, Any], tmp: Path) -> str:
    """The Markdown of this benchmark's section."""
    bare, recorded, shared = result["bare"], result["recorded"], result["shared"]
    rows = "; ".join(
        f"{name} " + ", ".join(f"{t:.1f}" for t in values) for name, values in result["all"].items()
    )
    return f"""## A quantum graph under upstream's executor (`qledger run-qbb`)

{datetime.date.today().isoformat()}; {machine(tmp)}; {versions()}.

Upstream's `MPGraphExecutor` (in process) and `SingleQuantumExecutor` as
`pipetask run-qbb` configures them, on a graph of {result["quanta"]} quanta of
two real `PipelineTask`s (`tests/lsst_tasks.py`: each quantum reads one input
and writes one or two outputs, plus upstream's metadata and log datasets).
*Bare*: butlers made as `pipetask run-qbb`'s factory makes them; *recorded*:
`RecordingQuantumExecutor` + `RecordingButlerFactory` at `normal` (the
quantum's start, every call and its end committed), one ledger per quantum
(the default) or one ledger for the run (`--ledger-name run.ledger`). Median
per-quantum wall time of `execute` over {result["rounds"]} rounds, a different
one first each round, each on a graph of its own output run.

| | ms per quantum | ratio |
|---|---:|---:|
| bare (upstream only) | {bare:.1f} | 1.00 |
| recorded, one ledger per quantum | {recorded:.1f} | {recorded / bare:.2f} |
| recorded, one ledger for the run | {shared:.1f} | {shared / bare:.2f} |

Rounds, ms per quantum: {rows}. Profiled (cProfile, 20 quanta), most of the
difference per quantum is creating its new ledger file: the schema is made
by running the shipped Alembic migrations (`store.log.create_ledger_file`,
~0.1 s a file under the profiler); the recording of the calls themselves is
what `bench_lsst.py` measures. A real task's work is seconds to hours per
quantum. Other engineers share this 2-core machine.
"""


def main() -> None:
    """Measure, print, and write the section of RESULTS.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 quanta, 3 rounds, printed only")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("lsst").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        detectors, rounds = (4, 3) if args.quick else (10, 6)
        result = measure(tmp, detectors=detectors, rounds=rounds)
        body = section(result, tmp)
    print(body)
    if args.quick and args.output is None:
        return
    output = args.output or HERE / "RESULTS.md"
    write_section(output, SECTION, body)
    print(f"wrote the section {SECTION!r} of {output}")


if __name__ == "__main__":
    main()
