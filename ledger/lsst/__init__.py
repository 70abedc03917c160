"""Record a real ``lsst.daf.butler`` butler: the LSST stack keeps running, the ledger records.

`RecordingButler` wraps an upstream butler and records every call (see
`ledger.lsst.wrapper`); `to_upstream` and `from_upstream` convert provenance
both ways (`ledger.lsst.convert`). This package is the only part of the
library that imports ``lsst.*``; it needs the ``lsst`` extra
(``pip install 'quantum-ledger[lsst]'``).
"""

from __future__ import annotations

try:
    import lsst.daf.butler  # noqa: F401 -- only to say which extra is missing
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ledger.lsst needs the LSST data butler (lsst-daf-butler); install the extra with "
        "pip install 'quantum-ledger[lsst]'"
    ) from e

from .convert import from_upstream, quantum_from_upstream, to_upstream
from .wrapper import RecordingButler

__all__ = ["RecordingButler", "from_upstream", "quantum_from_upstream", "to_upstream"]
