"""`RecordingButlerFactory`, `RecordingQuantumExecutor` and ``qledger run-qbb`` on real quanta.

A real butler repository, a quantum graph built by upstream's builder for
two real ``PipelineTask``s (``tests/lsst_tasks.py``), run by upstream's
``MPGraphExecutor`` as ``pipetask run-qbb`` runs it: each quantum lands in its
ledger under the graph's id, with its true end.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "lsst.pipe.base",
    reason="needs the lsst extra (pip install 'quantum-ledger[lsst]'): lsst-pipe-base is absent",
)

# Imported after the skip above: without the extra these imports fail.
sys.path.insert(0, str(Path(__file__).parent))  # spawned workers import lsst_tasks by name
import lsst_tasks
from click.testing import CliRunner
from lsst.daf.butler import QuantumProvenanceData as UpstreamProvenance
from lsst.pipe.base import TaskFactory
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph
from test_lsst import assert_same_provenance

from ledger import Ledger
from ledger.cli import main
from ledger.errors import SettingsError, UnboundQuantumError
from ledger.lsst import RecordingButlerFactory, RecordingQuantumExecutor, run_qbb


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> lsst_tasks.Repo:
    """One repository for the module; each test runs its own graph into its own output run."""
    return lsst_tasks.make_repo(tmp_path_factory.mktemp("lsst-run") / "repo")


_runs = itertools.count()


def _graph(repo: lsst_tasks.Repo, tmp_path: Path, **config: tuple[int, ...]) -> Path:
    return lsst_tasks.make_graph(repo, tmp_path / "pipeline.qg", f"out/{next(_runs)}", **config)


def _execution(graph: Path) -> Any:
    """The graph as upstream's executor reads it: quanta, task nodes, dataset types."""
    qg = PredictedQuantumGraph.read_execution_quanta(str(graph))
    qg.build_execution_quanta()
    return qg


def _factory(repo: lsst_tasks.Repo, qg: Any, ledgers: Path, **kwargs: Any) -> Any:
    types = {n.name: n.dataset_type for n in qg.pipeline_graph.dataset_types.values()}
    return RecordingButlerFactory(repo.root, qg.pipeline_graph.universe, types, ledgers, **kwargs)


def _status(path: Path) -> dict[str, Any]:
    with Ledger.open(path) as led:
        (row,) = led.status()
    return row


def test_each_quantum_is_recorded_under_its_graph_id_with_upstreams_provenance(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """run_qbb: one ledger per quantum named by its graph id, label kept, replay = upstream's."""
    graph = _graph(repo, tmp_path)
    result = run_qbb(
        repo.root, graph, ledger_dir=tmp_path / "ledgers", upstream_provenance=True,
        enable_implicit_threading=True,
    )  # fmt: skip
    assert result.ok, result.error
    qg = _execution(graph)
    expected = {
        (qid, label) for label, quanta in qg.quanta_by_task.items() for qid in quanta.values()
    }
    assert {(q.quantum_id, q.task_label) for q in result.quanta} == expected
    assert len(expected) == 2 * len(repo.detectors)
    for outcome in result.quanta:
        assert outcome.ledger == tmp_path / "ledgers" / f"{outcome.quantum_id}.ledger"
        assert outcome.status == "succeeded"
        with Ledger.open(outcome.ledger) as led:
            assert led.quantum_ids() == [outcome.quantum_id]
            assert led.quantum(outcome.quantum_id).task_label == outcome.task_label
            assert led.verify().ok
            ours = led.replay(outcome.quantum_id)
        upstream = tmp_path / "ledgers" / f"{outcome.quantum_id}.upstream.json"
        assert_same_provenance(ours, UpstreamProvenance.model_validate_json(upstream.read_text()))
        # The quantum's own predicted outputs include upstream's metadata and log datasets.
        assert len(ours.actual_outputs) == (3 if outcome.task_label == "scale" else 4)


def test_no_work_found_that_upstream_catches_is_recorded_as_no_work(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """A task's NoWorkFound, and the downstream quantum adjustQuantum empties: no_work caveats."""
    graph = _graph(repo, tmp_path, no_work_on=(1,))
    result = run_qbb(
        repo.root, graph, ledger_dir=tmp_path / "ledgers", enable_implicit_threading=True
    )
    assert result.ok, result.error
    by_key = {(q.task_label, q.data_id["detector"]): q for q in result.quanta}
    for key in (("scale", 1), ("sum", 1)):
        row = _status(by_key[key].ledger)
        assert row["status"] == "succeeded", key
        assert "no_work" in row["caveats"], key
        assert by_key[key].caveats == row["caveats"]
    assert _status(by_key["scale", 2].ledger)["caveats"] == []
    with Ledger.open(by_key["scale", 1].ledger) as led:
        (end,) = led.events(kind="quantum_succeeded")
    assert "NO_WORK" in end.detail["message"]


def test_upstreams_executor_calls_the_factory_once_per_quantum_in_its_thread(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """The route the graph id takes: execute(quantum, id) -> factory(that quantum), same thread.

    RecordingQuantumExecutor binds the id around upstream's
    SingleQuantumExecutor.execute; this pins that upstream still calls its
    limited_butler_factory there, once, with the very quantum given.
    """
    import threading

    qg = _execution(_graph(repo, tmp_path))
    factory = _factory(repo, qg, tmp_path / "ledgers")
    calls: list[tuple[Any, int]] = []

    class Spy(RecordingButlerFactory):
        def __call__(self, quantum: Any) -> Any:
            calls.append((quantum, threading.get_ident()))
            return super().__call__(quantum)

    spy = Spy(factory.butler_config, factory.dimensions, factory.dataset_types, tmp_path / "l")
    executor = RecordingQuantumExecutor(spy, task_factory=TaskFactory())
    xgraph = qg.quantum_only_xgraph
    label, quanta = next(iter(qg.quanta_by_task.items()))
    quantum_id = next(iter(quanta.values()))
    node = xgraph.nodes[quantum_id]
    quantum = qg.build_execution_quanta([quantum_id])[quantum_id]
    executor.execute(qg.pipeline_graph.tasks[label], quantum, quantum_id=quantum_id)
    assert calls == [(quantum, threading.get_ident())]
    assert node["task_label"] == label
    with Ledger.open(tmp_path / "l" / f"{quantum_id}.ledger") as led:
        assert led.quantum_ids() == [quantum_id]


def test_the_factory_refuses_another_quantum_and_names_an_unbound_one(
    repo: lsst_tasks.Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A quantum other than the bound one is refused; without a binding, a new id and a warning."""
    qg = _execution(_graph(repo, tmp_path))
    factory = _factory(repo, qg, tmp_path / "ledgers")
    ids = list(qg.quanta_by_task["scale"].values())
    quanta = qg.build_execution_quanta(ids)
    first, second = quanta[ids[0]], quanta[ids[1]]
    with factory.bind(first, ids[0], task_label="scale"), pytest.raises(UnboundQuantumError):
        factory(second)
    assert not list((tmp_path / "ledgers").glob("*.ledger"))  # nothing recorded
    with caplog.at_level(logging.WARNING, logger="ledger"):
        butler = factory(first)
    butler.close()
    assert "quantum_id_unknown" in caplog.text
    (path,) = (tmp_path / "ledgers").glob("*.ledger")
    with Ledger.open(path) as led:
        (recorded,) = led.quantum_ids()
    assert recorded not in ids
    assert path.name == f"{recorded}.ledger"


def test_the_factory_pickles_with_its_universe_and_dataset_types(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """A pickled factory makes the same butlers; ledger names and durability travel along."""
    qg = _execution(_graph(repo, tmp_path))
    factory = _factory(
        repo, qg, tmp_path / "ledgers", ledger_name="{task_label}/{quantum_id}.ledger",
        durability="full", upstream_provenance=True,
    )  # fmt: skip
    copy = pickle.loads(pickle.dumps(factory))
    assert type(copy) is RecordingButlerFactory
    assert copy.dimensions is factory.dimensions  # upstream's universes are singletons
    assert copy.dataset_types == factory.dataset_types
    assert (copy.ledger_dir, copy.ledger_name, copy.durability, copy.upstream_provenance) == (
        factory.ledger_dir, factory.ledger_name, "full", True,
    )  # fmt: skip
    quantum_id = next(iter(qg.quanta_by_task["scale"].values()))
    quantum = qg.build_execution_quanta([quantum_id])[quantum_id]
    with copy.bind(quantum, quantum_id, task_label="scale"):
        copy(quantum).close()
    assert _status(tmp_path / "ledgers" / "scale" / f"{quantum_id}.ledger")["status"] == (
        "succeeded"
    )


@pytest.mark.parametrize(
    "name", ["{run}.ledger", "../{quantum_id}.ledger", "/tmp/{quantum_id}.ledger", "{quantum_id"]
)
def test_a_ledger_name_outside_the_directory_or_with_unknown_fields_is_refused(
    name: str, tmp_path: Path
) -> None:
    """--ledger-name: a relative file name of {quantum_id} and {task_label} only."""
    from lsst.daf.butler import DimensionUniverse

    with pytest.raises(SettingsError, match="ledger name"):
        RecordingButlerFactory("repo", DimensionUniverse(), {}, tmp_path, ledger_name=name)


def test_a_shared_ledger_name_puts_the_quanta_of_a_run_in_one_ledger(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """A name without {quantum_id}: one ledger holding every quantum, each with its own chain."""
    graph = _graph(repo, tmp_path, fail_on=(2,))
    result = run_qbb(
        repo.root, graph, ledger_dir=tmp_path / "ledgers", ledger_name="job.ledger",
        enable_implicit_threading=True,
    )  # fmt: skip
    assert not result.ok
    assert {q.ledger for q in result.quanta} == {tmp_path / "ledgers" / "job.ledger"}
    assert result.counts() == {"succeeded": 4, "failed": 1, "not run": 1}
    with Ledger.open(tmp_path / "ledgers" / "job.ledger") as led:
        assert len(led.quantum_ids()) == 5
        assert led.verify().ok


def test_a_second_run_records_a_new_attempt_upstream_prunes_and_skips(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """A rerun (a BPS retry): attempt 2 in the same ledgers, upstream's pruning and skip recorded.

    sum(1) fails after its first put, leaving total(1) behind; rerun, upstream's
    executor prunes that partial output (recorded in attempt 2), and fails the
    same way again. scale(1) succeeded: rerun, upstream skips it on its stored
    metadata, which the ledger records as attempt 2 that only checked it.
    """
    graph = _graph(repo, tmp_path, fail_after_put_on=(1,))
    ledgers = tmp_path / "ledgers"
    qg = _execution(graph)
    scale, total = qg.quanta_by_task["scale"], qg.quanta_by_task["sum"]
    ids = [next(i for d, i in q.items() if d["detector"] == 1) for q in (scale, total)]
    first = run_qbb(
        repo.root, graph, ledger_dir=ledgers, qgraph_node_id=[str(i) for i in ids],
        enable_implicit_threading=True,
    )  # fmt: skip
    assert [q.status for q in first.quanta] == ["succeeded", "failed"]
    again = run_qbb(
        repo.root, graph, ledger_dir=ledgers, qgraph_node_id=[str(i) for i in ids],
        enable_implicit_threading=True,
    )  # fmt: skip
    assert [(q.status, q.attempt) for q in again.quanta] == [("succeeded", 2), ("failed", 2)]
    total_id, log_id = (
        next(i for d, i in qg.datasets_by_type[name].items() if d["detector"] == 1)
        for name in ("total", "sum_log")
    )
    with Ledger.open(ledgers / f"{ids[1]}.ledger") as led:
        second = [e for e in led.events() if e.attempt == 2]
        assert led.verify().ok
        # Upstream's log capture writes the failed quantum's log too.
        assert led.replay(ids[1], attempt=2).actual_outputs == {total_id, log_id}
    kinds = [(e.kind, e.dataset_id) for e in second if e.kind in ("prune", "put")]
    assert kinds[:2] == [("prune", total_id), ("prune", log_id)] or kinds[:2] == [
        ("prune", log_id), ("prune", total_id),
    ]  # fmt: skip
    assert kinds[2:] == [("put", total_id), ("put", log_id)]
    assert second[-1].kind == "quantum_failed"
    with Ledger.open(ledgers / f"{ids[0]}.ledger") as led:
        skipped = [e.kind for e in led.events() if e.attempt == 2]
    assert skipped == ["quantum_started", "stored", "quantum_succeeded"]


def test_a_quantum_whose_recording_cannot_start_is_not_recorded_with_upstreams_error(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """Its ledger file is garbage: upstream reports the quantum failed; the outcome says why."""
    graph = _graph(repo, tmp_path)
    quantum_id = next(iter(_execution(graph).quanta_by_task["scale"].values()))
    (tmp_path / "ledgers").mkdir()
    (tmp_path / "ledgers" / f"{quantum_id}.ledger").write_text("not a ledger")
    result = run_qbb(
        repo.root, graph, ledger_dir=tmp_path / "ledgers", qgraph_node_id=[str(quantum_id)],
        enable_implicit_threading=True,
    )  # fmt: skip
    assert not result.ok
    (outcome,) = result.quanta
    assert (outcome.status, outcome.error_type) == ("not recorded", "NotALedgerError")
    assert "not a SQLite database" in (outcome.error_message or "")
    assert result.counts() == {"not recorded": 1}


# --- the command line ---------------------------------------------------------------------


def test_run_qbb_exits_1_when_a_quantum_fails_and_reports_each_quantum(
    repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """pipetask's exit code 1; --json gives each quantum's outcome; stderr a summary."""
    graph = _graph(repo, tmp_path, fail_on=(2,))
    result = CliRunner().invoke(
        main,
        ["run-qbb", str(repo.root), str(graph), "--json", "--enable-implicit-threading"],
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ledger_dir"] == str(tmp_path / "ledgers")  # beside the graph by default
    assert report["counts"] == {"succeeded": 4, "failed": 1, "not run": 1}
    (failed,) = [q for q in report["quanta"] if q["status"] == "failed"]
    assert (failed["task_label"], failed["data_id"]["detector"]) == ("scale", 2)
    assert failed["error_type"] == "ZeroDivisionError"
    assert "6 quanta: 4 succeeded, 1 failed, 1 not run" in result.stderr
    assert f"failed scale {{instrument=Cam, detector=2}} {failed['quantum_id']}" in result.stderr


def test_run_qbb_runs_only_the_nodes_asked_for(repo: lsst_tasks.Repo, tmp_path: Path) -> None:
    """--qgraph-node-id (repeated or comma-separated) runs those quanta only, exit 0."""
    graph = _graph(repo, tmp_path)
    ids = [str(i) for i in _execution(graph).quanta_by_task["scale"].values()]
    result = CliRunner().invoke(
        main,
        [
            "run-qbb", str(repo.root), str(graph), "--qgraph-node-id", f"{ids[0]},{ids[1]}",
            "--qgraph-node-id", ids[2], "--ledger-dir", str(tmp_path / "l"), "--json",
            "--enable-implicit-threading", "--durability", "FULL",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(q["quantum_id"] for q in report["quanta"]) == sorted(ids)
    assert sorted(p.stem for p in (tmp_path / "l").glob("*.ledger")) == sorted(ids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.qg"], "no quantum graph file"),
        (["GRAPH", "--qgraph-node-id", "not-a-uuid"], "is not a quantum id"),
        (["GRAPH", "--qgraph-node-id", str(uuid.UUID(int=1))], "a quantum id is not in"),
        (["GRAPH", "--ledger-name", "../x.ledger"], "inside the ledger directory"),
        (["GRAPH", "--coverage"], "--coverage (coverage) is a pipetask run-qbb option"),
        (["GRAPH", "--cov-packages", "ledger"], "qledger run-qbb does not support"),
        (["GRAPH", "--log-level", "LOUD"], "'LOUD' is not one of"),
    ],
)
def test_run_qbb_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, repo: lsst_tasks.Repo, tmp_path: Path
) -> None:
    """Bad graphs, ids, names and pipetask options it does not support: exit 2, nothing run."""
    graph = str(tmp_path / "missing.qg")
    if "GRAPH" in args:
        graph = str(_graph(repo, tmp_path))
    args = [graph if a in ("GRAPH", "missing.qg") else a for a in args]
    result = CliRunner().invoke(main, ["run-qbb", str(repo.root), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not list(tmp_path.glob("ledgers/*.ledger"))


def test_the_extras_absence_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without ledger.lsst importable, run-qbb says which extra to install; exit 2."""
    monkeypatch.setitem(sys.modules, "ledger.lsst", None)
    result = CliRunner().invoke(main, ["run-qbb", "repo", str(tmp_path / "g.qg")])
    assert result.exit_code == 2
    assert "pip install 'quantum-ledger[lsst]'" in result.stderr
