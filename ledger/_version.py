"""The library version: the one place it is written (pyproject.toml reads it from here).

A constant rather than ``importlib.metadata.version()``, which scans the installed
distributions (~40 ms at every start of ``qledger``).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
