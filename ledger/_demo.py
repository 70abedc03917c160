"""``qledger demo``: a small pipeline with a failure and a killed quantum, recovered and retried.

Three tasks (isr -> calibrate -> coadd), twenty quanta (eighteen at first; the
last two coadds once recovery gave them their inputs), real files in a
`FileDatastore` and one ledger file per quantum, as an executor would run
them. One calibrate quantum fails with an exception; another runs in a child
process that is killed with SIGKILL right after its first output reached the
disk and before the ``put`` was recorded. The narration then runs real
``qledger`` commands on the result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from .butler import QuantumBackedButler
from .datastore import FileDatastore
from .errors import LedgerError
from .events import EventKind
from .model import DatasetRef, DatasetType
from .provenance import QuantumProvenanceData
from .quantum import Quantum
from .store.ledger import Ledger
from .store.log import EventLog, PendingCall

__all__ = ["run_demo"]

RUN = "demo/run1"
INSTRUMENT = "DemoCam"
VISITS = (1, 2)
DETECTORS = (0, 1, 2, 3)
#: (visit, detector) of the calibrate quantum whose first attempt raises.
FAILING = (2, 3)
#: (visit, detector) of the calibrate quantum killed mid-way.
KILLED = (1, 2)
_READY = "artifact written"

Task = Callable[[QuantumBackedButler, Quantum, bool], None]


# --- the pipeline ------------------------------------------------------------------


def _ref(name: str, data_id: Mapping[str, int | str]) -> DatasetRef:
    dataset_type = DatasetType(
        name=name, dimensions=tuple(data_id), storage_class="StructuredDataDict"
    )
    return DatasetRef(dataset_type=dataset_type, data_id=dict(data_id), run=RUN)


def _exposure(visit: int, detector: int) -> dict[str, int | str]:
    return {"instrument": INSTRUMENT, "visit": visit, "detector": detector}


def _patch(patch: int) -> dict[str, int | str]:
    return {"instrument": INSTRUMENT, "patch": patch}


def isr(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    """Subtract the bias from a raw exposure."""
    (raw,) = quantum.inputs["raw"]
    (out,) = quantum.outputs["postISRCCD"]
    exposure = butler.get(raw)
    butler.put({"pixels": [p - exposure["bias"] for p in exposure["pixels"]]}, out)


def calibrate(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    """Detect sources, then fit the PSF and the zero point; the fit may fail."""
    (exposure_ref,) = quantum.inputs["postISRCCD"]
    (src,) = quantum.outputs["src"]
    (calexp,) = quantum.outputs["calexp"]
    exposure = butler.get(exposure_ref)
    stars = [p for p in exposure["pixels"] if p > 40]
    butler.put({"n_sources": len(stars), "fluxes": stars}, src)
    if fail:
        raise ValueError(f"PSF fit did not converge ({len(stars)} stars, 25 needed)")
    zero_point = 27.0 + sum(stars) / (1000.0 * max(len(stars), 1))
    butler.put({"pixels": exposure["pixels"], "zero_point": round(zero_point, 3)}, calexp)


def coadd(butler: QuantumBackedButler, quantum: Quantum, fail: bool) -> None:
    """Stack the calibrated exposures of one patch that are available."""
    refs = list(quantum.inputs["calexp"])
    (out,) = quantum.outputs["deepCoadd"]
    present = butler.stored_many(refs)
    images = [butler.get(ref) for ref in refs if present[ref]]
    depth = sum(image["zero_point"] for image in images) / max(len(images), 1)
    butler.put({"n_visits": len(images), "depth": round(depth, 3)}, out)


TASKS: dict[str, Task] = {"isr": isr, "calibrate": calibrate, "coadd": coadd}


def _quantum(task: str, data_id: Mapping[str, int | str], repo: FileDatastore) -> Quantum:
    inputs: dict[str, list[DatasetRef]]
    outputs: dict[str, list[DatasetRef]]
    if task == "isr":
        inputs = {"raw": [_ref("raw", data_id)]}
        outputs = {"postISRCCD": [_ref("postISRCCD", data_id)]}
    elif task == "calibrate":
        inputs = {"postISRCCD": [_ref("postISRCCD", data_id)]}
        outputs = {"src": [_ref("src", data_id)], "calexp": [_ref("calexp", data_id)]}
    else:
        patch = int(data_id["patch"])
        inputs = {"calexp": [_ref("calexp", _exposure(v, patch)) for v in VISITS]}
        outputs = {"deepCoadd": [_ref("deepCoadd", data_id)]}
    refs = [ref for group in inputs.values() for ref in group]
    return Quantum(
        task_label=task,
        data_id=dict(data_id),
        inputs={k: tuple(v) for k, v in inputs.items()},
        outputs={k: tuple(v) for k, v in outputs.items()},
        datastore_records=dict(repo.export_records(refs)),
    )


def _ledger_name(task: str, data_id: Mapping[str, int | str]) -> str:
    if "patch" in data_id:
        return f"ledgers/{task}-p{data_id['patch']}.ledger"
    return f"ledgers/{task}-v{data_id['visit']}-d{data_id['detector']}.ledger"


def _execute(
    task: str, quantum: Quantum, ledger: str, root: str, *, fail: bool = False
) -> QuantumProvenanceData | BaseException:
    """Run one quantum as an executor does; its provenance, or the exception it raised."""
    try:
        with QuantumBackedButler.initialize(root, quantum, ledger=ledger) as butler:
            TASKS[task](butler, quantum, fail)
            return butler.extract_provenance_data()
    except Exception as e:
        return e


# --- the killed quantum ------------------------------------------------------------------


def killable_child(argv: Sequence[str]) -> None:
    """Child process body: run calibrate, and stop forever right before recording a put.

    The put's artifact is already on disk when ``EventLog.append`` is called
    for it; the parent, told so on stdout, kills this process with SIGKILL.
    """
    root, ledger, quantum_file = argv
    quantum = Quantum.model_validate_json(Path(quantum_file).read_text())
    append = EventLog.append

    def stall_before_put(log: EventLog, call: PendingCall) -> None:
        if call.kind == EventKind.PUT:
            sys.stdout.write(_READY + "\n")
            sys.stdout.flush()
            time.sleep(120)
        append(log, call)

    EventLog.append = stall_before_put  # type: ignore[method-assign,assignment]
    with QuantumBackedButler.initialize(root, quantum, ledger=ledger) as butler:
        calibrate(butler, quantum, False)


def _run_and_kill(quantum: Quantum, ledger: str, root: str) -> int:
    """Run calibrate in a child process and SIGKILL it between write and record; its pid."""
    quantum_file = Path(ledger).with_suffix(".quantum.json")
    quantum_file.write_text(quantum.model_dump_json())
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    code = "import sys; from ledger._demo import killable_child; killable_child(sys.argv[1:])"
    child = subprocess.Popen(
        [sys.executable, "-c", code, root, ledger, str(quantum_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
    finally:
        watchdog.cancel()
        quantum_file.unlink(missing_ok=True)
    if line != _READY:
        raise LedgerError(f"demo: the child process running calibrate ended early: {err.strip()}")
    return child.pid


# --- narration ---------------------------------------------------------------------------


class _Narrator:
    def __init__(self, console: Console, invoke: Callable[[Sequence[str]], int]) -> None:
        self.console = console
        self.invoke = invoke
        self.step = 0

    def section(self, title: str) -> None:
        self.step += 1
        self.console.print()
        self.console.rule(Text(f"{self.step}. {title}", style="bold"), align="left")

    def say(self, message: str | Text) -> None:
        self.console.print(message)

    def command(self, *args: str, shown: Sequence[str] | None = None) -> int:
        self.console.print(Text("$ qledger " + " ".join(shown or args), style="bold cyan"))
        sys.stdout.flush()
        return self.invoke(list(args))


def _prepare(directory: str | None) -> Path:
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="qledger-demo-"))
    path = Path(directory)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LedgerError(f"{path} is not an empty folder; give a new or empty one for the demo")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_demo(
    directory: str | None,
    console: Console,
    *,
    invoke: Callable[[Sequence[str]], int],
    recovery: bool = True,
) -> None:
    """Build and run the demo pipeline in ``directory`` (or a new temporary folder).

    With ``recovery=False`` it stops after the status table, leaving the failed
    and the killed quantum for the user to recover.
    """
    started = time.perf_counter()
    where = _prepare(directory).resolve()
    previous = os.getcwd()
    os.chdir(where)
    try:
        _narrate(where, _Narrator(console, invoke), recovery=recovery)
    finally:
        os.chdir(previous)
    failed = _ledger_name("calibrate", _exposure(*FAILING))
    killed = _ledger_name("calibrate", _exposure(*KILLED))
    console.print()
    console.print(f"Done in {time.perf_counter() - started:.1f} s. Everything is in {where}:")
    console.print(f"  cd {where}")
    if recovery:
        console.print('  qledger sql ledgers/coadd-p3.ledger "SELECT * FROM provenance"')
        console.print("  qledger export ledgers/coadd-p3.ledger --format prov-json")
    else:
        console.print(f"  qledger recover {failed} --datastore repo")
        console.print(f"  qledger recover {killed} --datastore repo --adopt")


def _narrate(where: Path, say: _Narrator, *, recovery: bool) -> None:
    root = "repo"
    Path("ledgers").mkdir()
    repo = FileDatastore(root, fsync=False)
    say.say(f"quantum-ledger demo in {where}")
    say.say("(cd there to run the commands yourself: each $ line below is a real qledger call)")

    say.section("Run a pipeline: isr -> calibrate -> coadd, one ledger per quantum")
    for visit in VISITS:
        for detector in DETECTORS:
            pixels = [100 + (i * 7 + visit * 13 + detector * 5) % 60 for i in range(48)]
            repo.put({"bias": 100, "pixels": pixels}, _ref("raw", _exposure(visit, detector)))
    say.say(f"wrote {len(VISITS) * len(DETECTORS)} raw exposures into the datastore {root}/")

    outcomes: dict[str, str] = {}
    exposures = [(v, d) for v in VISITS for d in DETECTORS]
    plan: list[tuple[str, dict[str, int | str]]] = [
        *(("isr", _exposure(v, d)) for v, d in exposures),
        *(("calibrate", _exposure(v, d)) for v, d in exposures),
        *(("coadd", _patch(p)) for p in DETECTORS[:2]),
    ]
    killed_pid = 0
    with Progress(console=say.console, transient=True) as progress:
        bar = progress.add_task("running quanta", total=len(plan))
        for task, data_id in plan:
            quantum = _quantum(task, data_id, repo)
            ledger = _ledger_name(task, data_id)
            key = (data_id.get("visit"), data_id.get("detector"))
            if task == "calibrate" and key == KILLED:
                killed_pid = _run_and_kill(quantum, ledger, root)
                outcomes[ledger] = "killed"
            else:
                result = _execute(
                    task, quantum, ledger, root, fail=task == "calibrate" and key == FAILING
                )
                if isinstance(result, QuantumProvenanceData):
                    repo.import_records(result.datastore_records)
                    outcomes[ledger] = "succeeded"
                else:
                    outcomes[ledger] = f"failed: {type(result).__name__}: {result}"
            progress.advance(bar)
    failed = _ledger_name("calibrate", _exposure(*FAILING))
    killed = _ledger_name("calibrate", _exposure(*KILLED))
    total = len(plan) + len(DETECTORS[2:])  # the coadds that wait run after the recovery
    say.say(
        f"ran {len(plan)} of the pipeline's {total} quanta, each recorded in its own ledger "
        "under ledgers/; of those:"
    )
    say.say(f"  {failed} {outcomes[failed]}")
    say.say(f"  {killed} was killed (SIGKILL, pid {killed_pid})")
    say.say("    after writing its src artifact, before recording the put")
    say.say("  coadd-p2 and coadd-p3 wait for the two calexps these did not write")

    ledgers = sorted(str(p) for p in Path("ledgers").glob("*.ledger"))
    say.section("Status of every quantum (the quantum_status view)")
    say.command("show", *ledgers, shown=["show", "ledgers/*.ledger"])
    if not recovery:
        return

    say.section("What the failed quantum did, replayed from its ledger alone")
    say.command("events", failed)
    say.command("replay", failed)

    say.section("Recovery: what was written, what is missing, what is orphaned")
    say.command("recover", failed, "--datastore", root)
    say.command("recover", killed, "--datastore", root)
    say.command("recover", killed, "--datastore", root, "--adopt")

    say.section("Retry: the next attempt, in the same ledger")
    for ledger in (failed, killed):
        say.say(
            Text(
                f'QuantumBackedButler.resume("{root}", "{ledger}", skip_existing=True)',
                style="bold",
            )
        )
        with QuantumBackedButler.resume(root, ledger, skip_existing=True) as butler:
            calibrate(butler, butler.quantum, False)
            repo.import_records(butler.extract_provenance_data().datastore_records)
        with Ledger.open(ledger) as led:
            skipped = [
                e
                for e in led.events(kind="put", attempt=butler.attempt)
                if (e.detail or {}).get("skipped_existing")
            ]
        say.say(
            f"  attempt {butler.attempt} succeeded; {len(skipped)} output kept from before "
            "(skip_existing), the rest written now"
        )
    for patch in DETECTORS[2:]:
        ledger = _ledger_name("coadd", _patch(patch))
        result = _execute("coadd", _quantum("coadd", _patch(patch), repo), ledger, root)
        if not isinstance(result, QuantumProvenanceData):
            raise LedgerError(f"demo: coadd of patch {patch} failed: {result}")
    say.say("ran coadd-p2 and coadd-p3 now that their calexps exist")
    calibrate_and_coadd = [
        failed,
        killed,
        *sorted(str(p) for p in Path("ledgers").glob("coadd-*.ledger")),
    ]
    say.command(
        "show",
        *calibrate_and_coadd,
        shown=["show", failed, killed, "ledgers/coadd-*.ledger"],
    )
    say.command("verify", failed, "--datastore", root)
    say.command("head", failed)

    say.section("Central ledger: every quantum in one database, lineage across them")
    say.command("ingest", "central.sqlite", "ledgers", "--no-progress", shown=[
        "ingest", "central.sqlite", "ledgers/"])  # fmt: skip
    coadd = _ref("deepCoadd", _patch(KILLED[1]))
    say.say(
        f"which quanta made the patch-{KILLED[1]} coadd, from what (it needed the retried calexp):"
    )
    say.command("lineage", "central.sqlite", str(coadd.id)[:8])
