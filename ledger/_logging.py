"""The library's loggers: structlog's API over the standard `logging` module, silent by default.

An unconfigured structlog logger prints to stdout (a ``PrintLogger``), which
would put lines into the output of every program using the library. Here each
logger wraps the standard ``logging.getLogger(name)`` with its own processors,
whatever structlog's global configuration says, and the ``ledger`` logger has a
`logging.NullHandler`: nothing appears unless the application configures
logging (``logging.basicConfig()``, or a handler on ``"ledger"``). The message
of a record is the event followed by its bound values, ``key=value``.
Only the command line configures logging (to stderr). structlog itself is
imported when a logger is first used, not when a module asks for one: it costs
~40 ms (with rich's tracebacks and pygments), which ``qledger show`` need not pay.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
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


def _wrap(name: str) -> structlog.stdlib.BoundLogger:
    import structlog

    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,  # nothing is rendered for a level nobody hears
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger


class _Deferred:
    """Stands for a structlog logger, made (and structlog imported) at its first use."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: structlog.stdlib.BoundLogger | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            self._logger = _wrap(self._name)
        return getattr(self._logger, attribute)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger (``bind``, ``warning`` …) writing to ``logging.getLogger(name)``.

    ``name`` is a module's ``__name__``, so every logger sits under ``ledger``.
    """
    return cast("structlog.stdlib.BoundLogger", _Deferred(name))
