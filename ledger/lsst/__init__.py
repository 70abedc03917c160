"""Record a real ``lsst.daf.butler`` butler: the LSST stack keeps running, the ledger records.

`RecordingButler` wraps an upstream butler and records every call (see
`ledger.lsst.wrapper`); `to_upstream` and `from_upstream` convert provenance
both ways (`ledger.lsst.convert`). `RecordingButlerFactory` makes one for each
quantum upstream's ``SingleQuantumExecutor`` runs (`ledger.lsst.factory`),
`RecordingQuantumExecutor` gives it each quantum's graph id
(`ledger.lsst.executor`), and `run_qbb` is ``pipetask run-qbb`` with every
quantum recorded (`ledger.lsst.run`, the ``qledger run-qbb`` command). This
package is the only part of the library that imports ``lsst.*``; it needs the
``lsst`` extra (``pip install 'quantum-ledger[lsst]'``). The wrapper and the
factory need only ``lsst-daf-butler``; the executor and `run_qbb` need
``lsst-pipe-base`` too, and are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import lsst.daf.butler  # noqa: F401 -- only to say which extra is missing
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ledger.lsst needs the LSST data butler (lsst-daf-butler); install the extra with "
        "pip install 'quantum-ledger[lsst]'"
    ) from e

from .convert import from_upstream, quantum_from_upstream, to_upstream
from .factory import RecordingButlerFactory
from .wrapper import RecordingButler

if TYPE_CHECKING:
    from .executor import RecordingQuantumExecutor
    from .run import RunResult, run_qbb

__all__ = [
    "RecordingButler",
    "RecordingButlerFactory",
    "RecordingQuantumExecutor",
    "RunResult",
    "from_upstream",
    "quantum_from_upstream",
    "run_qbb",
    "to_upstream",
]

#: Names whose modules import lsst-pipe-base: imported when first asked for.
_LAZY = {"RecordingQuantumExecutor": "executor", "RunResult": "run", "run_qbb": "run"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
