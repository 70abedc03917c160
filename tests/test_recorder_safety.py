"""The recorder under hostile text and a full disk: the caller's error survives, nothing is lost."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import (
    Ledger,
    LedgerDiskFullError,
    QuantumBackedButler,
)
from ledger.errors import InvalidParameterError
from ledger.testing import QuantumFixture, make_quantum

#: A name as Python decodes a non-UTF-8 file name (surrogateescape): a lone surrogate.
BAD_NAME = os.fsdecode(b"scan-\xff.fits")


def _events(path: Path) -> list[tuple[str, str | None, str | None]]:
    with Ledger.open(path) as led:
        assert led.verify().ok
        return [(e.kind.value, e.error_type, e.error_message) for e in led.events()]


# --- text that is not valid UTF-8 -------------------------------------------------------


def test_a_task_error_with_a_lone_surrogate_propagates_and_is_recorded(tmp_path: Path) -> None:
    """The task's own exception leaves the with block; its message is recorded escaped."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    error = ValueError(f"cannot open {BAD_NAME}")
    with (
        pytest.raises(ValueError, match="cannot open") as caught,
        QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
    ):
        raise error
    assert caught.value is error
    assert not getattr(error, "__notes__", None)  # recorded: nothing to note
    *_, end = _events(path)
    assert end == ("quantum_failed", "ValueError", "cannot open scan-\\udcff.fits")
    with Ledger.open(path) as led:
        (failed,) = led.events(kind="quantum_failed")
        assert failed.detail is not None
        assert "scan-\\udcff.fits" in failed.detail["traceback"]


def test_a_failed_call_with_a_lone_surrogate_keeps_its_exception(tmp_path: Path) -> None:
    """A get that raises with such text raises its own error, recorded; the chain verifies."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = tmp_path / "q.ledger"
    with QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path) as butler:
        with pytest.raises(InvalidParameterError, match="scan-"):
            butler.get(fixture.inputs[0], parameters={BAD_NAME: 1})
        assert butler.get(fixture.inputs[0])  # the butler goes on recording
    with Ledger.open(path) as led:
        (failed,) = led.events(kind="get", outcome="error")
        assert failed.error_message is not None
        assert "scan-\\udcff.fits" in failed.error_message
        assert failed.detail == {"parameters": {"scan-\\udcff.fits": 1}}
    assert [kind for kind, *_ in _events(path)][-2:] == ["get", "quantum_succeeded"]


def test_escaping_is_deterministic(tmp_path: Path) -> None:
    """The same surrogate text records the same escaped row in two ledgers."""
    messages = []
    for name in ("a", "b"):
        fixture = make_quantum(tmp_path / name, n_inputs=1, n_outputs=1)
        path = tmp_path / f"{name}.ledger"
        with (
            pytest.raises(OSError, match="unreadable"),
            QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path),
        ):
            raise OSError(f"{BAD_NAME}: unreadable")
        messages.append(_events(path)[-1])
    assert (
        messages[0] == messages[1] == ("quantum_failed", "OSError", "scan-\\udcff.fits: unreadable")
    )


# --- a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (needs root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem is full; the file."""
    filler = directory / "filler"
    written = 0
    with filler.open("wb", buffering=0) as f:
        for _ in range(1 << 20):
            try:
                f.write(b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return filler
            written += 4096
    raise AssertionError(f"wrote {written} bytes into {directory} without filling it")


def _until_full(butler: QuantumBackedButler, fixture: QuantumFixture) -> tuple[int, str]:
    """Call ``stored`` until the ledger's disk is full; (calls made, the error text)."""
    for n in range(1, 20_000):
        try:
            butler.stored(fixture.inputs[0])
        except LedgerDiskFullError as e:
            return n, str(e)
    raise AssertionError("the disk never filled up")


def test_batch_mode_keeps_its_buffer_on_a_full_disk(tmp_path: Path, small_disk: Path) -> None:
    """A full disk raises LedgerDiskFullError; after freeing space every buffered event lands."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = small_disk / "q.ledger"
    butler = QuantumBackedButler.initialize(
        fixture.root, fixture.quantum, ledger=path, durability="batch", batch_size=20
    )
    filler = _fill(small_disk)
    calls, message = _until_full(butler, fixture)
    assert str(path) in message
    assert "disk is full" in message
    assert "free space" in message
    for _ in range(5):  # still alive: calls keep being buffered (each flush fails again)
        with pytest.raises(LedgerDiskFullError):
            butler.stored(fixture.inputs[0])
    filler.unlink()
    butler.finish()
    kinds = [kind for kind, *_ in _events(path)]
    assert kinds == ["quantum_started", *["stored"] * (calls + 5), "quantum_succeeded"]
    with Ledger.open(path) as led:
        assert [e.quantum_seq for e in led.events()] == list(range(1, calls + 8))


def test_normal_mode_reports_a_full_disk_and_loses_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    """In normal mode the failing call raises LedgerDiskFullError; acknowledged calls stay."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = small_disk / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    filler = _fill(small_disk)
    calls, message = _until_full(butler, fixture)
    assert str(path) in message
    assert "disk is full" in message
    assert "free space" in message
    filler.unlink()
    butler.stored(fixture.inputs[0])
    butler.finish()
    kinds = [kind for kind, *_ in _events(path)]
    # the call that met the full disk is not recorded; every acknowledged one is
    assert kinds == ["quantum_started", *["stored"] * calls, "quantum_succeeded"]


def test_a_full_disk_never_replaces_the_task_error(tmp_path: Path, small_disk: Path) -> None:
    """When the end cannot be recorded, the task's exception still propagates, with a note."""
    fixture = make_quantum(tmp_path / "repo", n_inputs=1, n_outputs=1)
    path = small_disk / "q.ledger"
    butler = QuantumBackedButler.initialize(fixture.root, fixture.quantum, ledger=path)
    filler = _fill(small_disk)
    _until_full(butler, fixture)
    error = RuntimeError("the task failed")
    with pytest.raises(RuntimeError) as caught, butler:
        raise error
    assert caught.value is error
    assert any("disk is full" in note for note in getattr(error, "__notes__", []))
    filler.unlink()
    butler.finish(error)  # the ledger stayed open: the end is recorded now
    *_, end = _events(path)
    assert end == ("quantum_failed", "RuntimeError", "the task failed")
