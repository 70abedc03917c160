"""The central ledger: ingest, follow, lineage and collect_and_transfer, on SQLite and PostgreSQL.

Every test that takes ``target`` runs twice: against a SQLite file and against
a fresh database on the real PostgreSQL server (skipped, with the reason, when
``LEDGER_TEST_POSTGRES_URL`` is unset).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import types
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from ledger import (
    DatasetNotFoundError,
    IngestConflictError,
    Ledger,
    LedgerUnavailableError,
    QuantumBackedButler,
    QuantumProvenanceData,
)
from ledger.central import collect_and_transfer, expand_sources, ingest, lineage
from ledger.cli import main
from ledger.cli._output import as_on_terminal
from ledger.errors import InvalidParameterError
from ledger.store.log import lock_event_order
from ledger.testing import PipelineRun, make_quantum, run_pipeline

FAIL = ("calibrate", 2, 1)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """isr -> calibrate -> coadd over 3 visits x 2 detectors, calibrate v2 d1 failing."""
    where = tmp_path_factory.mktemp("pipeline")
    return run_pipeline(where / "repo", where / "ledgers", fail={FAIL})


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A central ledger to create: a SQLite path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "central.sqlite")
    return str(request.getfixturevalue("postgres_url"))


def _sources(run: PipelineRun) -> list[str]:
    return [str(p) for p in run.ledgers]


def _rows(target: str, sql: str) -> list[tuple[Any, ...]]:
    with Ledger.open(target) as led:
        return [tuple(r) for r in led.rows(sql)]


def _digest(paths: list[str]) -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


# --- ingest ---------------------------------------------------------------------------


def test_ingest_keeps_chains_provenance_and_status(pipeline: PipelineRun, target: str) -> None:
    """Every quantum verifies on the target and replays, views included, as in its own file."""
    report = ingest(target, _sources(pipeline))
    assert report.ok, report.problems
    assert report.sources == report.ingested == report.quanta == len(pipeline.ledgers)
    with Ledger.open(target) as central:
        check = central.verify()
        assert check.ok, check.problems
        assert central.high_water_mark() == report.high_water_mark == check.events
        for path in pipeline.ledgers:
            with Ledger.open(path) as own:
                qid = own.resolve_quantum(None)
                assert central.replay(qid) == own.replay(qid)
                assert central.head(qid) == own.head(qid)
                assert central.quantum(qid) == own.quantum(qid)
                sql = "SELECT * FROM provenance WHERE quantum_id = ? ORDER BY dataset_id"
                assert list(central.rows(sql, [qid])) == list(own.rows(sql, [qid]))
        statuses = {row["quantum_id"]: row["status"] for row in central.status()}
    assert sorted(statuses.values()).count("failed") == 1
    assert sorted(statuses.values()).count("succeeded") == len(pipeline.ledgers) - 1


def test_views_and_rows_are_identical_on_both_dialects(
    pipeline: PipelineRun, tmp_path: Path, postgres_url: str
) -> None:
    """The same ledgers ingested into SQLite and PostgreSQL give the same rows in every view."""
    lite = str(tmp_path / "central.sqlite")
    for target in (lite, postgres_url):
        assert ingest(target, _sources(pipeline)).ok
    for sql in (
        "SELECT * FROM provenance ORDER BY quantum_id, dataset_id",
        "SELECT * FROM quantum_status ORDER BY quantum_id",
        "SELECT quantum_id, quantum_seq, kind, dataset_id, outcome, detail, hash "
        "FROM events ORDER BY quantum_id, quantum_seq",
        'SELECT quantum_id, task_label, data_id, run, "user" FROM quanta ORDER BY quantum_id',
        "SELECT * FROM datasets ORDER BY quantum_id, dataset_id, role",
    ):
        assert _rows(lite, sql) == _rows(postgres_url, sql), sql


def test_reingest_adds_nothing_and_leaves_sources_untouched(
    pipeline: PipelineRun, target: str
) -> None:
    """Ingesting the same ledgers again adds no row anywhere; the sources' bytes never change."""
    before = _digest(_sources(pipeline))
    ingest(target, _sources(pipeline))
    counts = "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM quanta), " + (
        "(SELECT COUNT(*) FROM datasets), (SELECT COUNT(*) FROM ingests)"
    )
    first = _rows(target, counts)
    again = ingest(target, [*_sources(pipeline), *_sources(pipeline)[:3]])
    assert again.ok
    assert (again.ingested, again.events, again.quanta, again.datasets) == (0, 0, 0, 0)
    assert again.unchanged == len(pipeline.ledgers) + 3
    assert _rows(target, counts) == first
    assert _digest(_sources(pipeline)) == before


def test_a_retried_ledger_adds_only_its_new_events(
    pipeline: PipelineRun, target: str, tmp_path: Path
) -> None:
    """After a retry grows a ledger, re-ingesting it appends just the new attempt's events."""
    index = next(
        i
        for i, p in enumerate(pipeline.ledgers)
        if p.name == "calibrate-v{}-d{}.ledger".format(*FAIL[1:])
    )
    copy, repo = tmp_path / "retry.ledger", tmp_path / "repo"
    shutil.copy(pipeline.ledgers[index], copy)
    old = shutil.copy(pipeline.ledgers[index], tmp_path / "before-retry.ledger")
    shutil.copytree(pipeline.root, repo)
    first = ingest(target, [str(copy)])
    with QuantumBackedButler.resume(repo, copy, skip_existing=True) as butler:
        (exposure,) = butler.quantum.inputs["postISRCCD"]
        pixels = butler.get(exposure)["pixels"]
        butler.put({"n_sources": 0}, butler.quantum.outputs["src"][0])
        butler.put({"pixels": pixels}, butler.quantum.outputs["calexp"][0])
    with Ledger.open(copy) as own:
        qid = own.resolve_quantum(None)
        total = own.head(qid).quantum_seq
        expected = own.replay(qid)
    second = ingest(target, [str(copy)])
    assert second.ok
    assert second.ingested == 1
    assert second.quanta == 1
    assert second.datasets == 0
    assert first.events + second.events == total
    with Ledger.open(target) as central:
        assert central.verify().ok
        assert central.replay(qid) == expected
        ranges = list(
            central.rows(
                "SELECT first_quantum_seq, last_quantum_seq, source FROM ingests "
                "WHERE quantum_id = ? ORDER BY first_quantum_seq",
                [qid],
            )
        )
    assert ranges == [(1, first.events, str(copy)), (first.events + 1, total, str(copy))]
    # The old copy and the grown one in one run, into a new target: one quantum, all events.
    both = ingest(tmp_path / "fresh.sqlite", [str(old), str(copy)])
    assert (both.quanta, both.events, both.ingested) == (1, total, 2)


def _two_histories(tmp_path: Path) -> tuple[Path, Path, str]:
    """Two ledgers of one quantum id with different histories (from quantum_seq 1 on)."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=2, n_outputs=1)
    quantum = fixture.quantum.model_copy(update={"id": uuid.uuid4()})
    paths = []
    for name, ref in (("a", fixture.inputs[0]), ("b", fixture.inputs[1])):
        path = tmp_path / f"{name}.ledger"
        with QuantumBackedButler.initialize(fixture.root, quantum, ledger=path) as butler:
            butler.get(ref)
        paths.append(path)
    return paths[0], paths[1], str(quantum.id)


def test_a_conflict_names_both_sources_and_adds_nothing_of_it(tmp_path: Path, target: str) -> None:
    """Same quantum_id and quantum_seq with another hash: the second source is refused, named."""
    a, b, qid = _two_histories(tmp_path)
    assert ingest(target, [str(a)]).ok
    before = _rows(target, "SELECT seq, hash FROM events ORDER BY seq")
    report = ingest(target, [str(b)])
    (problem,) = report.problems
    assert problem.kind == "conflict"
    assert problem.source == str(b)
    assert str(a) in problem.message
    assert str(b) in problem.message
    assert qid in problem.message
    assert "quantum_seq 1" in problem.message
    assert _rows(target, "SELECT seq, hash FROM events ORDER BY seq") == before


def test_a_conflict_inside_one_run_names_the_earlier_source(tmp_path: Path) -> None:
    """Two disagreeing sources in one ingest: the first is in, the second names it."""
    a, b, _ = _two_histories(tmp_path)
    report = ingest(tmp_path / "central.sqlite", [str(a), str(b)])
    assert report.ingested == 1
    (problem,) = report.problems
    assert f"ingested from {a} in this run" in problem.message


def _tampered(tmp_path: Path, pipeline: PipelineRun) -> Path:
    path = tmp_path / "tampered.ledger"
    shutil.copy(pipeline.ledgers[0], path)
    conn = sqlite3.connect(path)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute("UPDATE events SET outcome = 'missing' WHERE quantum_seq = 3")
    conn.commit()
    conn.close()
    return path


def test_bad_sources_are_skipped_with_a_reason_and_the_rest_go_in(
    pipeline: PipelineRun, tmp_path: Path, target: str
) -> None:
    """Missing, not SQLite, not a ledger, tampered: each reported, the good ones ingested."""
    (tmp_path / "notes.ledger").write_text("not a database")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    bad = {
        str(tmp_path / "gone.ledger"): ("unreadable", "no ledger at"),
        str(tmp_path / "notes.ledger"): ("unreadable", "not a SQLite database"),
        str(tmp_path / "other.sqlite"): ("unreadable", "not a ledger"),
        str(_tampered(tmp_path, pipeline)): ("tampered", "quantum_seq 3"),
    }
    report = ingest(target, [*bad, *_sources(pipeline)[1:]])
    assert report.ingested == len(pipeline.ledgers) - 1
    assert {p.source: p.kind for p in report.problems} == {k: v[0] for k, v in bad.items()}
    for problem in report.problems:
        assert bad[problem.source][1] in problem.message, problem.message
    with Ledger.open(target) as central:
        assert central.verify().ok


def test_reading_in_worker_processes_gives_the_same_result(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """jobs=3 reads and verifies in other processes; the target and the report are the same."""
    sources = [str(tmp_path / "gone.ledger"), *_sources(pipeline)]
    one = ingest(tmp_path / "one.sqlite", sources, batch_events=100)
    three = ingest(tmp_path / "three.sqlite", sources, batch_events=100, jobs=3)
    keys = ("sources", "ingested", "quanta", "events", "datasets", "problems", "high_water_mark")
    assert one.model_dump(include=set(keys)) == three.model_dump(include=set(keys))
    sql = "SELECT seq, quantum_id, quantum_seq, hash FROM events ORDER BY seq"
    assert _rows(str(tmp_path / "one.sqlite"), sql) == _rows(str(tmp_path / "three.sqlite"), sql)


def test_the_target_among_the_sources_is_not_read(pipeline: PipelineRun, tmp_path: Path) -> None:
    """`qledger ingest dir/central.sqlite dir/` skips the target instead of reading itself."""
    central = tmp_path / "central.sqlite"
    ingest(central, _sources(pipeline)[:2])
    report = ingest(central, [str(central), *_sources(pipeline)])
    assert report.ok
    assert report.sources == len(pipeline.ledgers)
    assert report.unchanged == 2


def test_expand_sources_walks_directories_and_lists(pipeline: PipelineRun, tmp_path: Path) -> None:
    """Directories give their ledger files sorted; list lines and duplicates are handled."""
    folder = pipeline.ledgers[0].parent
    (folder / "README.txt").write_text("not a ledger name")
    found = expand_sources([str(folder)], ["# a comment", "", str(pipeline.ledgers[0])])
    assert found[0] == str(pipeline.ledgers[0])
    assert sorted(found) == sorted(_sources(pipeline))


# --- following a central ledger -------------------------------------------------------------


def test_a_late_commit_gets_a_seq_after_everything_committed_before_it(
    pipeline: PipelineRun, postgres_url: str
) -> None:
    """The trap: a writer that commits late must never get a seq below one a reader saw."""
    ingest(postgres_url, _sources(pipeline)[:1])
    engine = create_engine(postgres_url)
    with Ledger.open(postgres_url) as reader:
        mark = reader.high_water_mark()
        slow = engine.connect()
        slow_txn = slow.begin()
        lock_event_order(slow)  # as every writer does, first thing
        done = threading.Event()
        worker = threading.Thread(
            target=lambda: (ingest(postgres_url, _sources(pipeline)[1:3]), done.set())
        )
        worker.start()
        time.sleep(0.5)
        assert not done.is_set(), "a second writer must wait for the first to commit"
        assert reader.follow(mark) == []
        slow.execute(
            text(
                "INSERT INTO events (quantum_id, quantum_seq, call_id, attempt, kind, outcome, "
                "recorded_at, hash) VALUES (:q, 1, 1, 1, 'quantum_started', 'ok', 'now', 'h')"
            ),
            {"q": str(uuid.uuid4())},
        )
        slow_txn.commit()
        slow.close()
        worker.join(30)
        assert done.is_set()
        seen = reader.follow(mark)
    engine.dispose()
    seqs = [r.seq for r in seen]
    assert seqs == sorted(seqs)
    assert len(seqs) > 1
    assert seen[0].hash == "h", "the early writer's event comes first, though it committed last"


_INGEST = [sys.executable, "-m", "ledger", "ingest", "--no-progress"]


def test_concurrent_ingests_lose_and_duplicate_nothing_while_a_reader_follows(
    pipeline: PipelineRun, target: str
) -> None:
    """Four processes ingest overlapping sets at once; a follower sees each event once, in order."""
    sources = _sources(pipeline)
    ingest(target, sources[:1])  # the schema exists before the race
    followed: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        with Ledger.open(target) as reader:
            last = 0
            while True:
                finished = stop.is_set()
                rows = reader.follow(last)
                followed.extend(r.seq for r in rows)
                last = rows[-1].seq if rows else last
                if finished and not rows:
                    return
                time.sleep(0.01)

    reader = threading.Thread(target=follow)
    reader.start()
    shares = [sources[i::2] for i in range(2)] * 2  # every ledger ingested twice, concurrently
    workers = [
        subprocess.Popen([*_INGEST, "--batch-size", "40", target, *share], stderr=subprocess.PIPE)
        for share in shares
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
    stop.set()
    reader.join(30)
    expected = 0
    for path in pipeline.ledgers:
        with Ledger.open(path) as own:
            expected += own.high_water_mark()
    with Ledger.open(target) as central:
        assert central.verify().ok
        stored = [r[0] for r in central.rows("SELECT seq FROM events ORDER BY seq")]
    assert len(stored) == expected
    assert followed == stored, "the follower missed or repeated an event"


# --- lineage ------------------------------------------------------------------------------


def _reference(target: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Actual outputs and inputs of each quantum, from the provenance view (the model)."""
    outputs: dict[str, set[str]] = defaultdict(set)
    inputs: dict[str, set[str]] = defaultdict(set)
    for qid, did, actual_in, actual_out in _rows(
        target, "SELECT quantum_id, dataset_id, actual_input, actual_output FROM provenance"
    ):
        if actual_out:
            outputs[qid].add(did)
        if actual_in:
            inputs[qid].add(did)
    return outputs, inputs


def _expected_edges(
    start: str, outputs: dict[str, set[str]], inputs: dict[str, set[str]], downstream: bool
) -> set[tuple[str, str, str]]:
    """Breadth-first walk over the model's actual edges (quantum, dataset, relation)."""
    toward, back = (inputs, outputs) if downstream else (outputs, inputs)
    near, far = ("input", "output") if downstream else ("output", "input")
    edges: set[tuple[str, str, str]] = set()
    reached, walked, frontier = {start}, set(), {start}
    while frontier:
        found = set()
        for d in frontier:
            for q, datasets in toward.items():
                if d in datasets:
                    edges.add((q, d, near))
                    found.add(q)
        found -= walked
        walked |= found
        frontier = set()
        for q in found:
            for d in back[q]:
                edges.add((q, d, far))
                if d not in reached:
                    reached.add(d)
                    frontier.add(d)
    return edges


def test_lineage_follows_exactly_the_actual_edges(pipeline: PipelineRun, target: str) -> None:
    """Up and down from every dataset, the recursive query gives the model's graph."""
    ingest(target, _sources(pipeline))
    outputs, inputs = _reference(target)
    starts = sorted({str(r.id) for refs in pipeline.refs.values() for r in refs})
    with Ledger.open(target) as central:
        for start in starts:
            for downstream in (False, True):
                graph = lineage(central, start, downstream=downstream)
                got = {(e.quantum_id, e.dataset_id, e.relation) for e in graph.edges}
                assert got == _expected_edges(start, outputs, inputs, downstream), start
                assert set(graph.quanta) == {e[0] for e in got}


def test_lineage_of_a_coadd_reaches_the_raws_but_not_what_was_not_used(
    pipeline: PipelineRun, target: str
) -> None:
    """A coadd's lineage holds raws and biases; flats (marked unused) and the failed calexp not."""
    ingest(target, _sources(pipeline))
    coadd = pipeline.refs["deepCoadd"][1]  # detector 1: its visit-2 calexp was never written
    with Ledger.open(target) as central:
        graph = lineage(central, coadd.id)
        names = {d.dataset_type for d in graph.datasets.values()}
        assert names == {"deepCoadd", "calexp", "postISRCCD", "raw", "bias"}
        visits = {d.data_id["visit"] for d in graph.datasets.values() if d.dataset_type == "raw"}
        assert visits == {1, 3}
        assert {q.task_label for q in graph.quanta.values()} == {"coadd", "calibrate", "isr"}
        shallow = lineage(central, coadd.id, depth=1)
        assert {q.task_label for q in shallow.quanta.values()} == {"coadd"}
        assert {d.dataset_type for d in shallow.datasets.values()} == {"deepCoadd", "calexp"}
        raw = pipeline.refs["raw"][0]
        down = lineage(central, raw.id, downstream=True)
        assert {q.task_label for q in down.quanta.values()} == {"isr", "calibrate", "coadd"}
        with pytest.raises(DatasetNotFoundError, match="not in"):
            lineage(central, uuid.uuid4())
    tree = graph.tree()
    assert "only actual inputs and actual outputs count" in tree
    assert "produced by coadd" in tree
    assert "produced by isr" in tree
    assert json.loads(graph.to_json())["direction"] == "upstream"
    dot = graph.to_dot()
    assert dot.startswith("digraph lineage")
    assert dot.count("[label=wrote]") == sum(e.relation == "output" for e in graph.edges)


# --- collect_and_transfer -------------------------------------------------------------------


def _replayed(run: PipelineRun) -> tuple[list[Any], list[QuantumProvenanceData]]:
    quanta, provenance = [], []
    for path in run.ledgers:
        with Ledger.open(path) as own:
            quanta.append(own.quantum())
            provenance.append(own.replay())
    return quanta, provenance


def test_collect_and_transfer_imports_actual_outputs_with_records(
    pipeline: PipelineRun, target: str
) -> None:
    """Outputs land once per dataset type and run, with their records; a rerun adds nothing."""
    quanta, provenance = _replayed(pipeline)
    report = QuantumProvenanceData.collect_and_transfer(target, quanta, provenance)
    actual = {str(d) for p in provenance for d in p.actual_outputs}
    assert report.without_artifact == []
    assert report.total == len(actual)
    assert set(report.imported) == {
        f"{name} / pipeline/run" for name in ("postISRCCD", "src", "calexp", "deepCoadd")
    }
    rows = _rows(target, "SELECT dataset_id, quantum_id, records FROM dataset_locations")
    assert {r[0] for r in rows} == actual
    producers = {
        str(d): str(q.id) for q, p in zip(quanta, provenance, strict=True) for d in p.actual_outputs
    }
    for did, qid, records in rows:
        assert producers[did] == qid
        (stored,) = json.loads(records).values()
        assert stored[0]["path"]
        assert stored[0]["checksum"]
    again = collect_and_transfer(target, quanta, provenance)
    assert again.total == 0
    assert again.already_present == len(actual)


def test_collect_and_transfer_reports_outputs_without_records_and_refuses_a_second_producer(
    pipeline: PipelineRun, target: str
) -> None:
    """An output with no datastore record is reported; another producer for a dataset is refused."""
    quanta, provenance = _replayed(pipeline)
    stripped = provenance[0].model_copy(update={"datastore_records": {}})
    report = collect_and_transfer(target, quanta[:1], [stripped])
    assert report.total == 0
    assert report.without_artifact == sorted(str(d) for d in provenance[0].actual_outputs)
    collect_and_transfer(target, quanta[1:2], provenance[1:2])
    impostor = quanta[0].model_copy(update={"id": uuid.uuid4(), "outputs": quanta[1].outputs})
    before = _rows(target, "SELECT COUNT(*) FROM dataset_locations")
    with pytest.raises(IngestConflictError, match="two quanta claim it"):
        collect_and_transfer(target, [impostor, quanta[2]], [provenance[1], provenance[2]])
    assert _rows(target, "SELECT COUNT(*) FROM dataset_locations") == before


def test_new_tables_are_append_only(pipeline: PipelineRun, target: str) -> None:
    """UPDATE and DELETE on ingests and dataset_locations fail, as on the other tables."""
    ingest(target, _sources(pipeline)[:2])
    quanta, provenance = _replayed(pipeline)
    collect_and_transfer(target, quanta[:2], provenance[:2])
    engine = create_engine(target if "://" in target else f"sqlite:///{target}")
    for statement in (
        "UPDATE ingests SET source = 'x'",
        "DELETE FROM ingests",
        "UPDATE dataset_locations SET run = 'x'",
        "DELETE FROM dataset_locations",
    ):
        with engine.connect() as conn, pytest.raises(Exception, match="append-only"):
            conn.execute(text(statement))
    engine.dispose()


# --- the command line ------------------------------------------------------------------------


def test_cli_ingest_and_lineage(pipeline: PipelineRun, tmp_path: Path) -> None:
    """ingest prints a summary (exit 0); lineage prints a tree, JSON or dot; prefixes work."""
    central = str(tmp_path / "central.sqlite")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(_sources(pipeline)[:2]) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", central, "--from-list", str(listing)])
    assert result.exit_code == 0, result.output
    assert "2 ledgers read" in result.stdout
    assert "2 added" in result.stdout
    result = runner.invoke(main, ["ingest", central, str(pipeline.ledgers[0].parent)])
    assert result.exit_code == 0, result.output
    assert "2 were there already" in result.stdout
    coadd = str(pipeline.refs["deepCoadd"][0].id)
    result = runner.invoke(main, ["lineage", central, coadd[:8]])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"upstream lineage of {coadd}")
    for fmt, check in (
        ("json", lambda s: json.loads(s)["dataset_id"] == coadd),
        ("dot", lambda s: s.startswith("digraph")),
    ):
        result = runner.invoke(main, ["lineage", central, coadd, "--format", fmt, "--downstream"])
        assert result.exit_code == 0
        assert check(result.stdout)


def test_cli_ingest_exit_codes_and_one_line_per_problem(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """A conflict exits 1, an unreadable ledger 2; each problem is one line on stderr."""
    a, b, _ = _two_histories(tmp_path)
    central = str(tmp_path / "central.sqlite")
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", central, str(a), str(b)])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("qledger: conflict: ")
    result = runner.invoke(main, ["ingest", central, str(tmp_path / "gone.ledger"), str(a)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"qledger: unreadable: no ledger at {tmp_path / 'gone.ledger'}"
    ]
    result = runner.invoke(main, ["ingest", central])
    assert result.exit_code == 2
    assert "no ledgers to ingest" in result.stderr
    result = runner.invoke(main, ["lineage", central, str(uuid.uuid4())])
    assert result.exit_code == 2
    assert "is not in" in result.stderr


def test_cli_show_of_a_central_ledger_sums_up_per_task(
    pipeline: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LIST_AT_MOST quanta, show lists those that did not succeed and a table per task."""
    from ledger.cli import _inspect

    monkeypatch.setattr(_inspect, "LIST_AT_MOST", 5)
    central = str(tmp_path / "central.sqlite")
    ingest(central, _sources(pipeline))
    with as_on_terminal():  # off a terminal every quantum is listed, as tab-separated values
        result = CliRunner().invoke(main, ["show", central])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("14 quanta: listing the 1 that did not succeed")
    assert sum("failed" in line and "calibrate" in line for line in lines) == 2  # row + task
    task_rows = [line.split() for line in lines if line.split()[:1] == ["calibrate"]]
    assert ["calibrate", "6", "5", "1", "0"] in [row[:5] for row in task_rows]
    with as_on_terminal():
        every = CliRunner().invoke(main, ["show", central, "--all"])
    assert sum(" succeeded " in line for line in every.stdout.splitlines()) == 13
    piped = CliRunner().invoke(main, ["show", central]).stdout.splitlines()
    assert len(piped) == 1 + 14
    assert piped[0].startswith("ledger\tquantum_id\t")


# --- found in review: each pins a fixed bug ---------------------------------------------------


def test_a_row_postgresql_cannot_store_rejects_only_its_source(
    pipeline: PipelineRun, tmp_path: Path, postgres_url: str
) -> None:
    """A NUL in an error message (SQLite keeps it, PostgreSQL refuses it): that source alone."""
    fixture = make_quantum(tmp_path / "repo")
    bad = tmp_path / "nul.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=bad)
    butler.get(fixture.inputs[0])
    butler.finish(ValueError("cannot parse header b'SIMPLE\x00\x00'"))
    report = ingest(postgres_url, [*_sources(pipeline)[:2], str(bad)])
    (problem,) = report.problems
    assert problem.kind == "rejected"
    assert problem.source == str(bad)
    assert "NUL" in problem.message
    assert report.ingested == 2
    with Ledger.open(postgres_url) as central:
        assert central.verify().ok


def test_ingest_orders_writers_even_where_repeatable_read_is_the_default(
    pipeline: PipelineRun, postgres_url: str
) -> None:
    """A writer that waited for the lock sees its predecessor's rows whatever the default level."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(
            text(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
        )
    admin.dispose()
    ingest_module = sys.modules["ledger.central.ingest"]
    sources = _sources(pipeline)
    ingest(postgres_url, sources[:1])  # the schema exists
    engine = create_engine(postgres_url)  # at the database's default: REPEATABLE READ
    first = engine.connect()
    first.begin()
    lock_event_order(first)  # writer 1 holds the lock
    out: dict[str, Any] = {}
    # One source: a refused batch of several would be retried source by source, in new
    # transactions, which would hide a stale snapshot.
    second = threading.Thread(target=lambda: out.update(r=ingest(postgres_url, sources[1:2])))
    second.start()
    time.sleep(0.5)  # writer 2 now waits for the lock

    class Held:
        """Lets the ingest writer run inside the transaction writer 1 holds."""

        @contextlib.contextmanager
        def begin(self) -> Any:
            yield first

    batch = [ingest_module.read_source(s) for s in sources[1:2]]
    ingest_module._write_sources(Held(), batch, postgres_url)  # writer 1 ingests them
    first.commit()
    first.close()
    second.join(60)
    engine.dispose()
    report = out["r"]
    assert report.ok, report.problems
    assert report.events == 0  # it saw writer 1's rows: nothing to add, nothing duplicated


def test_lineage_of_a_cycle_ends(tmp_path: Path, target: str) -> None:
    """A quantum that defers X and then writes X (an actual cycle): unlimited lineage ends."""
    from ledger import Quantum
    from ledger.testing import make_ref

    x = make_ref("X", 1, run="r")
    quantum = Quantum(
        task_label="loop",
        data_id={"instrument": "D", "visit": 1, "detector": 0},
        inputs={"X": (x,)},
        outputs={"X": (x,)},
    )
    (tmp_path / "repo").mkdir()
    with QuantumBackedButler.initialize(
        tmp_path / "repo", quantum, ledger=tmp_path / "q.ledger"
    ) as b:
        b.getDeferred(x)
        b.put({"v": 1}, x)
    ingest(target, [str(tmp_path / "q.ledger")])
    with Ledger.open(target) as central:
        for downstream in (False, True):
            graph = lineage(central, x.id, downstream=downstream)
            assert {e.relation for e in graph.edges} == {"input", "output"}
            assert [q.depth for q in graph.quanta.values()] == [1]
            assert "loop" in graph.tree()


def test_collect_and_transfer_takes_a_repeat_once_and_refuses_misaligned_lists(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """The same quantum twice transfers once; two claimants or shuffled lists are refused."""
    quanta, provenance = _replayed(pipeline)
    target = tmp_path / "central.sqlite"
    twice = collect_and_transfer(target, [quanta[0], quanta[0]], [provenance[0]] * 2)
    assert twice.total == len(provenance[0].actual_outputs)
    with pytest.raises(InvalidParameterError, match="same order"):
        collect_and_transfer(target, quanta[:2][::-1], provenance[:2])
    twin = quanta[1].model_copy(update={"id": uuid.uuid4()})
    with pytest.raises(IngestConflictError, match="in this call"):
        collect_and_transfer(target, [quanta[1], twin], [provenance[1], provenance[1]])


def test_an_unreachable_server_is_one_clear_error(pipeline: PipelineRun) -> None:
    """No server at the URL: LedgerUnavailableError, and the CLI exits 2 with one line."""
    url = "postgresql+psycopg://nobody@127.0.0.1:9/nothing"
    with pytest.raises(LedgerUnavailableError, match="cannot reach"):
        Ledger.open(url)
    ledger_file = str(pipeline.ledgers[0])
    for args in (["lineage", url, str(uuid.uuid4())], ["ingest", url, ledger_file]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("qledger: error: cannot reach postgresql+psycopg://nobody@")


def test_a_ledger_still_being_written_is_read_in_one_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker starting a quantum between ingest's reads changes nothing that ingest sees."""
    readonly_module = sys.modules["ledger.store.readonly"]  # where ingest opens its sources
    shared = tmp_path / "shared.ledger"
    fixtures = [make_quantum(tmp_path / "repo", visit=v, task_label="t") for v in (1, 2)]
    with QuantumBackedButler.initialize(
        fixtures[0].root, fixtures[0].quantum, ledger=shared
    ) as butler:
        butler.get(fixtures[0].inputs[0])
    worker = sqlite3.connect(shared)  # the worker still holds the ledger: it is in WAL mode
    worker.execute("PRAGMA journal_mode = WAL")
    worker.execute("SELECT count(*) FROM events").fetchone()
    real_connect = sqlite3.connect
    pending = [fixtures[1]]

    class Racing:
        """A connection whose quanta query lets a worker start another quantum right after."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            cursor = self.conn.execute(sql, *args)
            if "FROM quanta" in sql and pending:
                rows = cursor.fetchall()
                fixture = pending.pop()
                with QuantumBackedButler.initialize(
                    fixture.root, fixture.quantum, ledger=shared
                ) as butler:
                    butler.get(fixture.inputs[0])
                return _Fetched(rows)
            return cursor

        def close(self) -> None:
            self.conn.close()

    racy = types.SimpleNamespace(
        connect=lambda *a, **k: Racing(real_connect(*a, **k)),
        Error=sqlite3.Error,
        OperationalError=sqlite3.OperationalError,
    )
    monkeypatch.setattr(readonly_module, "sqlite3", racy)  # only the readers race
    report = ingest(tmp_path / "central.sqlite", [str(shared)], verify=False)
    monkeypatch.undo()
    worker.close()
    assert report.ok
    assert report.quanta == 1  # the quantum that was there when the read began
    with Ledger.open(tmp_path / "central.sqlite") as central:
        assert central.verify().ok
    again = ingest(tmp_path / "central.sqlite", [str(shared)])
    assert again.quanta == 1  # the later quantum comes with the next ingest
    with Ledger.open(tmp_path / "central.sqlite") as central:
        assert central.verify().ok


class _Fetched(list[Any]):
    """Rows already fetched, answering like a cursor."""

    def fetchall(self) -> list[Any]:
        return list(self)

    def fetchone(self) -> Any:
        return self[0] if self else None
