"""Settings: command line > environment > config file > defaults; shell completion."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, QuantumBackedButler
from ledger.cli import main
from ledger.testing import QuantumFixture, make_quantum

QLEDGER = Path(sys.executable).with_name("qledger")


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """Invoke qledger in-process with extra environment variables."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger", env=env)


def one_quantum(root: Path, ledger: Path, *, visit: int = 1) -> QuantumFixture:
    """Record a quantum that reads one input and writes one output."""
    fixture = make_quantum(root, visit=visit, n_inputs=1, n_outputs=1, output_type=f"out{visit}")
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger) as b:
        b.get(fixture.inputs[0])
        b.put({"x": visit}, fixture.outputs[0])
    return fixture


def quanta_in(target: Path) -> int:
    """How many quanta a ledger holds (0 when it does not exist)."""
    if not target.exists():
        return 0
    with Ledger.open(target) as led:
        return len(led.quantum_ids())


def write_config(tmp_path: Path, text: str) -> Path:
    """A config file, named by QLEDGER_CONFIG in the tests that use it."""
    path = tmp_path / "qledger.toml"
    path.write_text(text)
    return path


# --- the central ledger ------------------------------------------------------------


def test_central_from_the_environment_when_target_is_omitted(tmp_path: Path) -> None:
    """QLEDGER_CENTRAL is the TARGET of ingest, lineage, watch and report when none is given."""
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    fixture = one_quantum(tmp_path / "repo", ledgers / "a.ledger")
    central = tmp_path / "central.sqlite"
    env = {"QLEDGER_CENTRAL": str(central)}
    result = run("ingest", ledgers, "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    assert quanta_in(central) == 1
    output = str(fixture.outputs[0].id)
    tree = run("lineage", output, env=env)
    assert tree.exit_code == 0, tree.output
    assert "produced by task(" in tree.stdout
    watched = run("watch", "--once", "--json", env=env)
    assert watched.exit_code == 0, watched.output
    assert json.loads(watched.stdout)["source"] == str(central)
    report = run("report", "-o", tmp_path / "r.html", env=env)
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r.html").read_text().lower().startswith("<!doctype html>")
    listed = tmp_path / "list.txt"
    one_quantum(tmp_path / "repo", ledgers / "b.ledger", visit=2)
    listed.write_text(f"{ledgers / 'b.ledger'}\n")
    assert run("ingest", "--from-list", listed, "--no-progress", env=env).exit_code == 0
    assert quanta_in(central) == 2


def test_without_a_central_an_omitted_target_is_one_error_line(tmp_path: Path) -> None:
    """No TARGET and no central set: one line naming QLEDGER_CENTRAL, exit 2; TARGET as before."""
    for args in (("lineage", "8c47767b"), ("watch", "--once"), ("report",), ("ingest",)):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        (line,) = result.stderr.splitlines()
        assert line.startswith("qledger: error: "), line
        assert "QLEDGER_CENTRAL" in line, line
    alone = run("ingest", tmp_path / "central.sqlite")
    assert alone.exit_code == 2
    assert "no ledgers to ingest" in alone.stderr
    assert "was taken as TARGET" in alone.stderr


def test_central_precedence_command_line_then_environment_then_config_file(
    tmp_path: Path,
) -> None:
    """An explicit TARGET beats QLEDGER_CENTRAL, which beats central in the config file."""
    one_quantum(tmp_path / "repo", tmp_path / "a.ledger")
    by_file, by_env, given = (tmp_path / f"{n}.sqlite" for n in ("file", "env", "given"))
    config = write_config(tmp_path, f'central = "{by_file}"\n')
    env = {"QLEDGER_CONFIG": str(config)}
    assert run("ingest", tmp_path / "a.ledger", "--no-progress", env=env).exit_code == 0
    assert (quanta_in(by_file), quanta_in(by_env)) == (1, 0)
    env["QLEDGER_CENTRAL"] = str(by_env)
    assert run("ingest", tmp_path / "a.ledger", "--no-progress", env=env).exit_code == 0
    assert quanta_in(by_env) == 1
    result = run("ingest", given, tmp_path / "a.ledger", "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    assert quanta_in(given) == 1


# --- option defaults -----------------------------------------------------------------


def test_option_defaults_command_line_then_environment_then_config_file(tmp_path: Path) -> None:
    """[events] json/kind in the file, QLEDGER_EVENTS_JSON over it, --json over both."""
    one_quantum(tmp_path / "repo", tmp_path / "a.ledger")
    ledger = tmp_path / "a.ledger"
    config = write_config(tmp_path, '[events]\njson = true\nkind = ["put"]\n')
    env = {"QLEDGER_CONFIG": str(config)}
    from_file = run("events", ledger, env=env)
    assert from_file.exit_code == 0, from_file.output
    assert [json.loads(line)["kind"] for line in from_file.stdout.splitlines()] == ["put"]
    env["QLEDGER_EVENTS_JSON"] = "false"
    from_env = run("events", ledger, env=env)
    assert from_env.exit_code == 0, from_env.output
    assert not from_env.stdout.startswith("{")
    assert "\tput\t" in from_env.stdout
    assert "quantum_started" not in from_env.stdout
    from_line = run("events", ledger, "--json", "--kind", "get", env=env)
    assert [json.loads(line)["kind"] for line in from_line.stdout.splitlines()] == ["get"]
    env = {"QLEDGER_SHOW_JSON": "1"}
    assert json.loads(run("show", ledger, env=env).stdout)["status"] == "succeeded"
    assert run("show", ledger).stdout.startswith("ledger\tquantum_id\t")  # the default: a table


def test_the_user_config_file_is_read_from_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without QLEDGER_CONFIG, $XDG_CONFIG_HOME/qledger/config.toml is read if it exists."""
    one_quantum(tmp_path / "repo", tmp_path / "a.ledger")
    home = tmp_path / "xdg"
    (home / "qledger").mkdir(parents=True)
    (home / "qledger" / "config.toml").write_text("[show]\njson = true\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert json.loads(run("show", tmp_path / "a.ledger").stdout)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("central = [", "is not valid TOML"),
        ("centrall = 'x'\n", "unknown setting 'centrall'"),
        ("[events]\nsjon = true\n", "[events] has no option 'sjon'"),
        ("[ingest]\njobs = 'many'\n", "[ingest].jobs = 'many'"),
        ("[recover]\nadopt = true\n", "[recover] has no option 'adopt'"),
        ("[ingest]\ninto-existing = true\n", "[ingest] has no option 'into-existing'"),
        ("show = 1\n", "[show] must be a table"),
    ],
)
def test_a_bad_config_file_is_one_error_line_naming_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    """A config file that cannot be used: one line naming the file and the key, exit 2."""
    config = write_config(tmp_path, text)
    result = run("show", tmp_path / "a.ledger", env={"QLEDGER_CONFIG": str(config)})
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"qledger: error: {config}"), line
    assert expected in line, line


def test_qledger_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    """QLEDGER_CONFIG must name a file: one line saying so, exit 2."""
    result = run("show", "x.ledger", env={"QLEDGER_CONFIG": str(tmp_path / "nope.toml")})
    assert result.exit_code == 2
    assert "QLEDGER_CONFIG names" in result.stderr
    assert "not a file" in result.stderr


def test_options_that_write_are_taken_from_the_command_line_only(tmp_path: Path) -> None:
    """QLEDGER_RECOVER_ADOPT / _REMOVE / _FORCE never make recover write: the bytes stay."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    ledger = tmp_path / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=ledger)
    butler.close()  # interrupted before its put
    orphan = QuantumBackedButler.initialize(fixture.root, fixture.quantum)
    orphan.datastore.put({"x": 1}, fixture.outputs[0])  # an artifact without a recorded put
    orphan.close()
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    env = {"QLEDGER_RECOVER_ADOPT": "1", "QLEDGER_RECOVER_FORCE": "1"}
    result = run("recover", ledger, "--datastore", fixture.root, env=env)
    assert result.exit_code == 1, result.output
    assert "orphans" in result.stdout
    assert "adopted" not in result.stdout
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before
    env = {"QLEDGER_RECOVER_REMOVE": "1"}
    assert run("recover", ledger, "--datastore", fixture.root, env=env).exit_code == 1
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before


# --- shell completion ------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_shell_completion_script_is_produced(shell: str) -> None:
    """_QLEDGER_COMPLETE=<shell>_source qledger prints a completion script for that shell."""
    env = {**os.environ, "_QLEDGER_COMPLETE": f"{shell}_source"}
    result = subprocess.run([QLEDGER], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "_QLEDGER_COMPLETE" in result.stdout
    assert "qledger" in result.stdout


def test_completion_offers_commands_options_and_files(tmp_path: Path) -> None:
    """Completing 'qledger sh', 'qledger show --a' and a ledger path gives what a shell shows."""

    def complete(*words: str) -> list[str]:
        env = {
            **os.environ,
            "_QLEDGER_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["qledger", *words]),
            "COMP_CWORD": str(len(words)),
        }
        result = subprocess.run(
            [QLEDGER], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
        )
        return result.stdout.splitlines()

    assert "plain,show" in complete("sh")
    assert "plain,--all" in complete("show", "--a")
    assert complete("events", "led") == ["file,led"]  # the shell lists files and folders


def test_the_documented_config_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The config file example of the command-line reference is one qledger accepts."""
    from docs_text import blocks, section

    from ledger.cli._config import load_settings

    (example,) = blocks("toml", section("cli"))
    monkeypatch.setenv("QLEDGER_CONFIG", str(write_config(tmp_path, example)))
    settings = load_settings(main)
    assert settings.central is not None
    assert settings.central.startswith("postgresql+psycopg://")
    assert settings.default_map["ingest"] == {"jobs": 4, "batch_size": 20000}
    assert settings.default_map["events"] == {"kind": ["put", "prune"]}
