"""End to end: a real pipeline through ``qledger run-qbb -j 2``, one quantum raising, one killed.

A butler repository and a quantum graph of two real ``PipelineTask``s
(``tests/lsst_tasks.py``, built by upstream's graph builder) are run by the
command a BPS job would run, in a subprocess, two quanta at a time in
upstream's spawned workers: ``scale`` raises on detector 2 (so ``sum`` on
detector 2 never runs) and ``sum`` on detector 3 kills its own process with
SIGKILL after its first ``put``. Then: each status as it happened, every
ledger verifies, each finished quantum's replay equals the wrapped upstream
butler's own ``extract_provenance_data()``, the ledgers go into a central
ledger whose lineage of a final output reaches the first task, and upstream's
own provenance tooling (``butler aggregate-graph`` + ``provenance-report``)
is asked about the killed quantum beside the ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "lsst.ctrl.mpexec",
    reason="needs the lsst extra (pip install 'quantum-ledger[lsst]'): lsst-ctrl-mpexec is absent",
)

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
# Imported after the skip above: without the extra these imports fail.
import lsst_tasks  # noqa: E402
from lsst.daf.butler import QuantumProvenanceData as UpstreamProvenance  # noqa: E402
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph  # noqa: E402
from test_lsst import assert_same_provenance  # noqa: E402

from ledger import Ledger  # noqa: E402

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@dataclass
class Run:
    """The run and what is needed to check it."""

    work: Path
    repo: lsst_tasks.Repo
    graph: Path
    ledgers: Path
    returncode: int
    pid: int
    report: dict[str, Any]
    stderr: str
    quanta: dict[tuple[str, int], uuid.UUID]  # (task label, detector) -> graph id
    datasets: dict[tuple[str, int], uuid.UUID]  # (dataset type, detector) -> id

    def ledger(self, label: str, detector: int) -> Path:
        return self.ledgers / f"{self.quanta[label, detector]}.ledger"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment")
    return str(path)


def _env() -> dict[str, str]:
    """The tasks' module on the path of qledger and of the workers it spawns."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The pipeline run once by ``qledger run-qbb -j 2`` in a subprocess."""
    work = tmp_path_factory.mktemp("e2e")
    repo = lsst_tasks.make_repo(work / "repo")
    graph = lsst_tasks.make_graph(repo, work / "pipeline.qg", "out/run", fail_on=(2,), kill_on=(3,))
    ledgers = work / "ledgers"
    command = [
        _tool("qledger"), "run-qbb", str(repo.root), str(graph), "-j", "2",
        "--ledger-dir", str(ledgers), "--upstream-provenance", "--json",
    ]  # fmt: skip
    with subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        stdout, stderr = process.communicate(timeout=600)
    qg = PredictedQuantumGraph.read_execution_quanta(str(graph))
    quanta = {
        (label, data_id["detector"]): qid
        for label, by_id in qg.quanta_by_task.items()
        for data_id, qid in by_id.items()
    }
    datasets = {
        (name, data_id["detector"]): dataset_id
        for name, by_id in qg.datasets_by_type.items()
        for data_id, dataset_id in by_id.items()
        if "detector" in data_id.dimensions.names
    }
    return Run(
        work, repo, graph, ledgers, process.returncode, process.pid,
        json.loads(stdout) if stdout.strip() else {}, stderr, quanta, datasets,
    )  # fmt: skip


def _statuses_are_what_happened(run: Run) -> None:
    """Succeeded, failed with the exception, interrupted after its last call; pipetask's exit 1."""
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.report["counts"] == {"succeeded": 3, "failed": 1, "interrupted": 1, "not run": 1}
    outcome = {(q["task_label"], q["data_id"]["detector"]): q for q in run.report["quanta"]}
    assert {k: q["status"] for k, q in outcome.items()} == {
        ("scale", 1): "succeeded",
        ("scale", 2): "failed",
        ("scale", 3): "succeeded",
        ("sum", 1): "succeeded",
        ("sum", 2): "not run",  # upstream's executor blocks it: its input was never made
        ("sum", 3): "interrupted",
    }
    assert {k: uuid.UUID(q["quantum_id"]) for k, q in outcome.items()} == run.quanta
    assert not run.ledger("sum", 2).exists()

    with Ledger.open(run.ledger("scale", 2)) as led:
        (failed,) = led.events(kind="quantum_failed")
    assert (failed.error_type, failed.error_message) == (
        "ZeroDivisionError",
        "detector 2 cannot be scaled",
    )
    assert "runQuantum" in failed.detail["traceback"]

    with Ledger.open(run.ledger("sum", 3)) as led:
        (status,) = led.status()
        events = list(led.events())
    assert status["status"] == "interrupted"
    assert status["process"] == "dead"  # its pid is gone: it is not still running
    last = events[-1]
    assert (last.kind, last.outcome, last.dataset_id) == ("put", "ok", run.datasets["total", 3])
    assert [e.dataset_id for e in events if e.kind == "put"] == [run.datasets["total", 3]]
    # Upstream's own put provenance names the graph's id too (QuantumContext passes it).
    assert last.detail["provenance"]["quantum_id"] == str(run.quanta["sum", 3])
    assert "interrupted sum {instrument=Cam, detector=3}" in run.stderr


def _each_quantum_ran_in_a_spawned_worker_under_its_graph_id(run: Run) -> None:
    """-j 2: upstream's MPGraphExecutor spawned one process per quantum; each recorded itself."""
    pids = []
    for (label, detector), quantum_id in run.quanta.items():
        if (label, detector) == ("sum", 2):
            continue
        with Ledger.open(run.ledger(label, detector)) as led:
            assert led.quantum_ids() == [quantum_id]
            assert led.quantum(quantum_id).task_label == label
            (status,) = led.status()
            pids.append(status["pid"])
    assert run.pid not in pids
    assert len(set(pids)) == len(pids) == 5


def _every_ledger_verifies(run: Run) -> None:
    """Every chain checks out, the killed quantum's too (its -wal is read, nothing is lost)."""
    paths = sorted(run.ledgers.glob("*.ledger"))
    assert len(paths) == 5
    for path in paths:
        with Ledger.open(path) as led:
            report = led.verify()
        assert report.ok, (path, report.problems)
    result = subprocess.run(
        [_tool("qledger"), "verify", str(run.ledgers)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _each_finished_quantums_replay_equals_upstreams_own_provenance(run: Run) -> None:
    """The ledger's replay = the wrapped butler's extract_provenance_data() at its close."""
    compared = 0
    for key in (("scale", 1), ("scale", 2), ("scale", 3), ("sum", 1)):
        quantum_id = run.quanta[key]
        upstream = run.ledgers / f"{quantum_id}.upstream.json"
        theirs = UpstreamProvenance.model_validate_json(upstream.read_text())
        with Ledger.open(run.ledger(*key)) as led:
            assert_same_provenance(led.replay(quantum_id), theirs)
        compared += 1
    assert compared == 4
    # The killed process never reached its close: no upstream provenance, only the ledger's.
    assert not (run.ledgers / f"{run.quanta['sum', 3]}.upstream.json").exists()
    with Ledger.open(run.ledger("sum", 3)) as led:
        assert led.replay(run.quanta["sum", 3]).actual_outputs == {run.datasets["total", 3]}


def _ingest_and_lineage_of_a_final_output_reach_the_first_task(run: Run) -> None:
    """The ledgers go into a central ledger; total(1) comes from sum(1), from scale(1), from raw."""
    central = run.work / "central.sqlite"
    qledger = _tool("qledger")
    ingest = subprocess.run(
        [qledger, "ingest", str(central), str(run.ledgers), "--no-progress", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    again = subprocess.run(
        [qledger, "ingest", str(central), str(run.ledgers), "--no-progress", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (json.loads(again.stdout)["events"], json.loads(again.stdout)["unchanged"]) == (0, 5)
    lineage = subprocess.run(
        [qledger, "lineage", str(central), str(run.datasets["total", 1]), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert lineage.returncode == 0, lineage.stderr
    found = json.loads(lineage.stdout)
    assert set(found["quanta"]) == {str(run.quanta["sum", 1]), str(run.quanta["scale", 1])}
    assert found["quanta"][str(run.quanta["scale", 1])]["task_label"] == "scale"
    assert str(run.datasets["raw", 1]) in found["datasets"]
    with Ledger.open(central) as led:
        assert led.verify().ok
        statuses = {str(r["quantum_id"]): r["status"] for r in led.status()}
    assert statuses[str(run.quanta["sum", 3])] == "interrupted"


def _what_upstreams_provenance_tooling_reports_for_the_killed_quantum(run: Run) -> None:
    """butler aggregate-graph (dry run) + provenance-report beside the ledger, on sum(3).

    Upstream sees a quantum with no metadata and no log: FAILED, with no
    exception and nothing about what it did. The ledger says interrupted, its
    process dead, and its last call: the put of total(3), which is on disk.
    """
    butler = _tool("butler")
    provenance = run.work / "provenance.qg"
    status_file = run.work / "status.json"
    aggregate = subprocess.run(
        [butler, "aggregate-graph", str(run.graph), str(run.repo.root), "--dry-run",
         "-o", str(provenance), "--no-interactive-status"],
        capture_output=True, text=True, check=False, env=_env(),
    )  # fmt: skip
    assert aggregate.returncode == 0, aggregate.stderr[-3000:]
    report = subprocess.run(
        [butler, "provenance-report", str(provenance), "--state", "SUCCESSFUL", "--state",
         "BLOCKED", "--status-report", str(status_file)],
        capture_output=True, text=True, check=False, env=_env(),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    states = {}
    for label, by_state in json.loads(status_file.read_text()).items():
        for state, by_exception in by_state.items():
            for exception, quanta in by_exception.items():
                for q in quanta:
                    attempts = [(a["status"], a["exception"]) for a in q["attempts"]]
                    states[label, q["data_id"]["detector"]] = (state, exception, attempts)
    assert states["sum", 3] == ("FAILED", "None", [(-1, None)])
    assert states["scale", 2][:2] == ("FAILED", "ZeroDivisionError")
    assert states["sum", 2] == ("BLOCKED", "None", [])
    # Beside it, the ledger: interrupted after the put of total(3), whose file is there.
    with Ledger.open(run.ledger("sum", 3)) as led:
        last = list(led.events())[-1]
    assert (last.kind, last.dataset_id) == ("put", run.datasets["total", 3])
    (record,) = last.detail["records"]
    assert (run.repo.root / record["path"]).is_file()
    # The dry run registered nothing: the repository holds no output run yet.
    assert "out/run" not in _collections(butler, run.repo.root)


def _collections(butler: str, root: Path) -> str:
    result = subprocess.run(
        [butler, "query-collections", str(root)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_a_pipeline_run_by_qledger_run_qbb_end_to_end(run: Run) -> None:
    """One run, checked step by step (one test: under xdist a module fixture runs per worker)."""
    _statuses_are_what_happened(run)
    _each_quantum_ran_in_a_spawned_worker_under_its_graph_id(run)
    _every_ledger_verifies(run)
    _each_finished_quantums_replay_equals_upstreams_own_provenance(run)
    _ingest_and_lineage_of_a_final_output_reach_the_first_task(run)
    _what_upstreams_provenance_tooling_reports_for_the_killed_quantum(run)


# --- the README's section, run as written -------------------------------------------------


def test_the_readme_lsst_section_runs_as_written(tmp_path: Path) -> None:
    """The install line names the extra; run-qbb, ingest and the query run; so does the BPS line.

    The BPS line is run as BPS would run it for a job of two quanta: its
    placeholders filled in as BPS fills them (``{runPreCmdOpts}`` with BPS's
    default ``--long-log --log-level=VERBOSE``).
    """
    import tomllib

    import yaml
    from docs_text import ROOT, blocks, section

    text = section("lsst-pipeline")
    (commands,) = blocks("bash", text)
    (bps,) = blocks("yaml", text)
    repo = lsst_tasks.make_repo(tmp_path / "repo", detectors=(1, 2))
    lsst_tasks.make_graph(repo, tmp_path / "pipeline.qg", "out/readme")
    env = {**_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for line in commands.splitlines():
        if line.startswith("pip install"):
            extra = line.split("[", 1)[1].split("]", 1)[0]
            extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            assert extra in extras["optional-dependencies"], line
            continue
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
            check=False, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, (line, result.stderr[-3000:])
        outputs.append(result.stdout)
    assert len(list((tmp_path / "ledgers").glob("*.ledger"))) == 4
    assert outputs[-1].splitlines()[1:] == ["scale\tsucceeded\t2", "sum\tsucceeded\t2"]

    graph = lsst_tasks.make_graph(repo, tmp_path / "bps.qg", "out/bps")
    qg = PredictedQuantumGraph.read_execution_quanta(str(graph))
    job = sorted(
        str(qid) for by_id in qg.quanta_by_task.values()
        for data_id, qid in by_id.items() if data_id["detector"] == 1
    )  # fmt: skip
    command = yaml.safe_load(bps)["runQuantumCommand"]
    for name, value in {
        "runPreCmdOpts": "--long-log --log-level=VERBOSE",
        "butlerConfig": "repo/butler.yaml",
        "fileDistributionEndPoint": "",
        "qgraphFile": str(graph),
        "qgraphNodeId": ",".join(job),
        "submitPath": str(tmp_path / "submit"),
        "extraRunQuantumOptions": "",
    }.items():
        command = command.replace(f"{{{name}}}", value)
    assert "{" not in command, command
    result = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.stem for p in (tmp_path / "submit" / "ledgers").glob("*.ledger")) == job
    for quantum_id in job:
        with Ledger.open(tmp_path / "submit" / "ledgers" / f"{quantum_id}.ledger") as led:
            (status,) = led.status()
        assert status["status"] == "succeeded"
