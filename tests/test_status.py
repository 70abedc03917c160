"""Status a person can trust: attempts that exist, and datasets with two producers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, QuantumBackedButler, UnknownAttemptError
from ledger.cli import main
from ledger.testing import QuantumFixture, make_quantum


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


def quantum_id(ledger: Path) -> str:
    """The id of the ledger's only quantum."""
    with Ledger.open(ledger) as led:
        return str(led.quantum_ids()[0])


def two_attempts(tmp_path: Path) -> tuple[QuantumFixture, Path]:
    """A quantum that failed once and succeeded on its second attempt."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=2)
    ledger = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger)
    butler.get(fixture.inputs[0])
    butler.put({"x": 1}, fixture.outputs[0])
    butler.__exit__(RuntimeError, RuntimeError("first attempt fails"), None)  # it failed
    with QuantumBackedButler.resume(fixture.root, ledger, skip_existing=True) as b:
        b.get(fixture.inputs[0])
        b.put({"x": 1}, fixture.outputs[0])
        b.put({"x": 2}, fixture.outputs[1])
    return fixture, ledger


# --- attempts -----------------------------------------------------------------------


def test_replay_of_an_attempt_never_made_is_refused_by_the_library(tmp_path: Path) -> None:
    """Ledger.replay(attempt=5) of a 2-attempt quantum raises UnknownAttemptError naming 1..2."""
    fixture, ledger = two_attempts(tmp_path)
    qid = quantum_id(ledger)
    with Ledger.open(ledger) as led:
        assert led.replay(attempt=2).actual_outputs == {r.id for r in fixture.outputs}
        for bad in (5, 3, 0):
            with pytest.raises(UnknownAttemptError) as info:
                led.replay(attempt=bad)
            assert f"quantum {qid} has attempts 1..2" in str(info.value)
            assert f"no attempt {bad}" in str(info.value)
        assert list(led.events(attempt=7)) == []  # events filter: no such attempt, no events


def test_replay_attempt_out_of_range_is_one_line_exit_2(tmp_path: Path) -> None:
    """qledger replay --attempt 5 of a 2-attempt quantum: one error line, exit 2, no JSON."""
    fixture, ledger = two_attempts(tmp_path)
    result = run("replay", ledger, "--attempt", "5")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("qledger: error: ")
    assert f"quantum {quantum_id(ledger)} has attempts 1..2" in line
    replayed = json.loads(run("replay", ledger, "--attempt", "1").stdout)
    assert replayed["actual_outputs"] == [str(fixture.outputs[0].id)]


# --- two producers of one dataset ----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A central ledger to create: a SQLite path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "central.sqlite")
    return str(request.getfixturevalue("postgres_url"))


def made_twice(tmp_path: Path) -> tuple[QuantumFixture, list[Path]]:
    """One quantum run twice (two quantum ids, two datastores), plus an unrelated quantum."""
    ledgers = []
    for name in ("first", "second"):
        fixture = make_quantum(tmp_path / name, n_inputs=1, n_outputs=2)
        ledger = tmp_path / f"{name}.ledger"
        with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
            b.get(fixture.inputs[0])
            for ref in fixture.outputs:
                b.put({"x": 1}, ref)
        ledgers.append(ledger)
    other = make_quantum(tmp_path / "first", visit=2, n_inputs=1, n_outputs=1)
    with QuantumBackedButler.initialize(
        other.root, other.quantum, ledger=tmp_path / "other.ledger"
    ) as b:
        b.put({"x": 3}, other.outputs[0])
    ledgers.append(tmp_path / "other.ledger")
    return fixture, ledgers


def test_ingest_reports_two_producers_of_one_dataset_and_still_ingests(
    tmp_path: Path, target: str
) -> None:
    """Each dataset two quanta wrote is one warning naming both quanta and sources; exit 0."""
    fixture, ledgers = made_twice(tmp_path)
    first, second = quantum_id(ledgers[0]), quantum_id(ledgers[1])
    result = run("ingest", target, *ledgers, "--no-progress", "-j", "1")
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == len(fixture.outputs), result.stderr
    for ref, line in zip(sorted(fixture.outputs, key=lambda r: str(r.id)), warnings, strict=True):
        assert line.startswith("qledger: warning: dataset calexp ")
        assert f"({ref.id}) has 2 producers" in line
        assert f"quantum {first} (task, from {ledgers[0]})" in line
        assert f"quantum {second} (task, from {ledgers[1]})" in line
    assert "2 datasets with several producers" in result.stdout
    with Ledger.open(target) as led:
        assert len(led.quantum_ids()) == 3  # ingested all the same
    again = run("ingest", target, *ledgers, "--no-progress")
    assert (again.exit_code, again.stderr) == (0, "")  # nothing new: nothing to report


def test_ingest_report_lists_the_producers_of_a_dataset_written_twice(tmp_path: Path) -> None:
    """IngestReport.duplicate_producers names the dataset, both quanta and their sources."""
    from ledger.central import ingest

    fixture, ledgers = made_twice(tmp_path)
    central = tmp_path / "central.sqlite"
    ingest(central, [str(ledgers[0]), str(ledgers[2])])
    report = ingest(central, [str(ledgers[1])])  # the second producer arrives later
    assert report.ok
    found = {d.dataset_id: d for d in report.duplicate_producers}
    assert set(found) == {str(r.id) for r in fixture.outputs}
    one = found[str(fixture.outputs[0].id)]
    assert (one.dataset_type, one.run) == ("calexp", fixture.outputs[0].run)
    assert {(p.quantum_id, p.source) for p in one.producers} == {
        (quantum_id(ledgers[0]), str(ledgers[0])),
        (quantum_id(ledgers[1]), str(ledgers[1])),
    }
    assert json.loads(report.model_dump_json())["duplicate_producers"][0]["producers"]


def test_lineage_marks_a_dataset_with_two_producers(tmp_path: Path, target: str) -> None:
    """tree, JSON and dot say '2 producers' on a dataset two quanta wrote, and list both."""
    fixture, ledgers = made_twice(tmp_path)
    assert run("ingest", target, *ledgers, "--no-progress").exit_code == 0
    dataset = str(fixture.outputs[0].id)
    tree = run("lineage", target, dataset)
    assert tree.exit_code == 0, tree.output
    assert f"{dataset} run={fixture.outputs[0].run} (2 producers)" in tree.stdout
    assert tree.stdout.count("produced by task(") == 2
    graph = json.loads(run("lineage", target, dataset, "--format", "json").stdout)
    assert graph["datasets"][dataset]["producers"] == sorted(
        [quantum_id(ledgers[0]), quantum_id(ledgers[1])]
    )
    read = str(fixture.inputs[0].id)
    assert graph["datasets"].get(read, {}).get("producers", []) == []
    assert "(2 producers)" in run("lineage", target, dataset, "--format", "dot").stdout
    down = run("lineage", target, read, "--downstream")
    assert "(2 producers)" in down.stdout
    single = str(next(iter(json.loads(run("replay", ledgers[2]).stdout)["actual_outputs"])))
    assert "producers)" not in run("lineage", target, single).stdout
