"""Render a `CampaignReport` as one self-contained HTML file (Jinja2, autoescaped).

The page references nothing outside itself: styles are inline, the lineage is
inline SVG, and there is no script. Its Content-Security-Policy forbids
scripts and every fetch, so even a report opened from a hostile ledger runs no
code; and every text from the ledger (task labels, data IDs, error messages,
tracebacks) is escaped by Jinja's autoescaping in the first place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import MissingDependencyError
from .report import CampaignReport

__all__ = ["render_report"]

#: Colours of the statuses (text on white, and the fill of a quantum's box).
STATUS_COLOURS = {
    "succeeded": ("#1a7f37", "#dafbe1"),
    "failed": ("#cf222e", "#ffebe9"),
    "interrupted": ("#9a6700", "#fff8c5"),
    "running": ("#0969da", "#ddf4ff"),
}


def _data_id(value: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in value.items())


def _when(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def _first_line(value: str | None) -> str:
    lines = (value or "").strip().splitlines()
    return lines[0] if lines else ""


def render_report(report: CampaignReport) -> str:
    """The report as HTML text.

    Raises:
        MissingDependencyError: Jinja2 is not installed (the ``report`` extra).
    """
    try:
        import jinja2
    except ImportError as e:
        raise MissingDependencyError(
            "the HTML report needs Jinja2: pip install 'quantum-ledger[report]'"
        ) from e
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ledger.campaign", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_id"] = _data_id
    env.filters["when"] = _when
    env.filters["first_line"] = _first_line
    env.filters["short"] = lambda value: str(value)[:8]
    template = env.get_template("report.html")
    return template.render(report=report, colours=STATUS_COLOURS)
