"""Datastore record paths: the quick check agrees with the full pathlib rule on any text."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import PathEscapeError
from ledger.records import check_relative_path


def _refused_by_the_rule(path: str) -> bool:
    """The rule spelled out with pathlib alone: empty, NUL, absolute, a drive, or '..'."""
    if not path or "\x00" in path:
        return True
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).drive or path.startswith("\\"):
        return True
    return ".." in PurePosixPath(path).parts or ".." in PureWindowsPath(path).parts


_PIECES = st.sampled_from(["a", "b.fits", "..", ".", "/", "\\", ":", "c:", "//", "\\\\", "x..y"])


@given(st.one_of(st.text(max_size=30), st.lists(_PIECES, max_size=8).map("".join)))
def test_quick_path_check_agrees_with_the_full_rule(path: str) -> None:
    """Every path is accepted or refused exactly as the pathlib rule says."""
    try:
        check_relative_path(path)
        refused = False
    except PathEscapeError:
        refused = True
    assert refused == _refused_by_the_rule(path)
