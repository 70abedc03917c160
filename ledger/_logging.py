"""The library's loggers: structlog's API over the standard `logging` module, silent by default.

An unconfigured structlog logger prints to stdout (a ``PrintLogger``), which
would put lines into the output of every program using the library. Here each
logger wraps the standard ``logging.getLogger(name)`` with its own processors,
whatever structlog's global configuration says, and the ``ledger`` logger has a
`logging.NullHandler`: nothing appears unless the application configures
logging (``logging.basicConfig()``, or a handler on ``"ledger"``). The message
of a record is the event followed by its bound values, ``key=value``.
Only the command line configures logging (to stderr).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

__all__ = ["LOGGER_NAME", "get_logger"]

#: The root of the library's loggers (``ledger.butler``, ``ledger.central.ingest`` …).
LOGGER_NAME = "ledger"

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def _render(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """``event key=value …`` as one message line for the standard logger."""
    event = str(event_dict.pop("event", ""))
    values = " ".join(f"{key}={value!r}" for key, value in sorted(event_dict.items()))
    return f"{event} {values}" if values else event


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # nothing is rendered for a level nobody listens to
    structlog.processors.format_exc_info,
    _render,
]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger (``bind``, ``warning`` …) writing to ``logging.getLogger(name)``.

    ``name`` is a module's ``__name__``, so every logger sits under ``ledger``.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger
