"""A campaign as a whole: a live view of it, and a report of it.

`CampaignState` folds events into counts per task and status, retries, recent
failures and a rate, fed by `open_source` (a central ledger followed by
``seq``, or a folder of ledger files polled); `build_report` gathers status per
task, failures with tracebacks, retries and a lineage, and `render_report`
writes it as one self-contained HTML file (the ``report`` extra: Jinja2 and
grandalf).
"""

from .html import render_report
from .picture import Picture, draw_lineage
from .report import CampaignReport, build_report
from .sources import CampaignSource, CentralSource, FolderSource, open_source
from .watch import STATUSES, CampaignState, FailureLine

__all__ = [
    "STATUSES",
    "CampaignReport",
    "CampaignSource",
    "CampaignState",
    "CentralSource",
    "FailureLine",
    "FolderSource",
    "Picture",
    "build_report",
    "draw_lineage",
    "open_source",
    "render_report",
]
