"""What a campaign report says: status per task, failures, retries, and a lineage.

`build_report` asks an open ledger (a central one, usually) a few queries and
returns a `CampaignReport`, a plain model that `ledger.campaign.html` renders
into one self-contained HTML file (and ``qledger report --json`` could print).
Long lists are cut at ``max_items`` and say how many there were; everything in
them is text as recorded, escaped only when rendered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ..central.lineage import lineage
from ..central.target import chunks
from ..errors import InvalidParameterError
from ..store.ledger import Ledger
from ..store.validate import is_uuid
from .picture import Picture, draw_lineage
from .watch import STATUSES

__all__ = [
    "AttemptEnd",
    "CampaignReport",
    "FailedQuantum",
    "LineageChoice",
    "RetriedQuantum",
    "TaskRow",
    "build_report",
]

_LIFECYCLE = ("quantum_started", "quantum_succeeded", "quantum_failed")


class TaskRow(BaseModel):
    """How the quanta of one task ended: status -> count, and how many were retried."""

    task_label: str
    counts: dict[str, int]
    retried: int
    total: int


class FailedQuantum(BaseModel):
    """A quantum whose last attempt failed: its error and traceback."""

    quantum_id: str
    task_label: str
    data_id: dict[str, Any]
    attempts: int
    ended_at: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None


class AttemptEnd(BaseModel):
    """One attempt of a quantum and how it ended."""

    attempt: int
    started_at: str | None
    ended_at: str | None
    outcome: str  # succeeded, failed, interrupted
    error_type: str | None = None
    error_message: str | None = None


class RetriedQuantum(BaseModel):
    """A quantum run more than once, with each attempt's end."""

    quantum_id: str
    task_label: str
    data_id: dict[str, Any]
    status: str
    attempts: list[AttemptEnd]


class LineageChoice(BaseModel):
    """The dataset whose lineage is drawn, and why that one."""

    dataset_id: str
    dataset_type: str | None
    data_id: dict[str, Any]
    reason: str


class CampaignReport(BaseModel):
    """Everything the HTML report shows."""

    source: str
    generated_at: str
    n_quanta: int
    n_events: int
    statuses: list[str]
    totals: dict[str, int]
    tasks: list[TaskRow]
    failed: list[FailedQuantum]
    n_failed: int
    interrupted: list[FailedQuantum]
    n_interrupted: int
    retried: list[RetriedQuantum]
    n_retried: int
    lineage: LineageChoice | None
    picture: Picture | None
    #: Why there is no lineage picture, when there is none.
    no_lineage: str | None = None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    """A count as recorded, or 0 for a value no recorder writes (an edited row)."""
    return value if type(value) is int else 0


def _loads(text: object) -> dict[str, Any]:
    """A JSON object column, or the text as is under ``data_id`` (hostile rows render too)."""
    if not text:
        return {}
    try:
        value = json.loads(str(text))
    except (ValueError, RecursionError):
        return {"data_id": str(text)}
    return value if isinstance(value, dict) else {"data_id": str(text)}


def _in_list(led: Ledger, sql: str, ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    for chunk in chunks(list(ids)):
        yield from led.rows(sql.format(marks=", ".join("?" * len(chunk))), chunk)


def _tasks(led: Ledger) -> tuple[list[str], list[TaskRow]]:
    """Status per task, by the shipped ``quantum_status`` definition (never the file's view)."""
    by_task: dict[str, TaskRow] = {}
    statuses = list(STATUSES)
    for task, status, n, retried in led.rows(
        "SELECT task_label, status, COUNT(*), SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END) "
        f"FROM {led.shipped_view('quantum_status')} GROUP BY task_label, status"
    ):
        if status not in statuses:
            statuses.append(status)
        task = str(task)  # the ledger is untrusted: a label is shown as text, whatever it is
        row = by_task.setdefault(task, TaskRow(task_label=task, counts={}, retried=0, total=0))
        row.counts[status] = int(n)
        row.retried += int(retried or 0)
        row.total += int(n)
    rows = [by_task[t] for t in sorted(by_task)]
    for row in rows:
        for status in statuses:
            row.counts.setdefault(status, 0)
    return statuses, rows


def _ended_badly(led: Ledger, status: str, max_items: int) -> tuple[list[FailedQuantum], int]:
    """Failed (with tracebacks) or interrupted quanta, oldest first, at most ``max_items``."""
    (n,) = next(
        led.rows(
            f"SELECT COUNT(*) FROM {led.shipped_view('quantum_status')} WHERE status = ?",
            [status],
        )
    )
    found = [
        FailedQuantum(
            quantum_id=str(qid),
            task_label=str(task),
            data_id=_loads(data_id),
            attempts=_int(attempts),
            ended_at=_text(ended_at if status == "failed" else started_at),
            error_type=_text(error_type),
            error_message=_text(error_message),
            traceback=None,
        )
        for qid, task, data_id, attempts, started_at, ended_at, error_type, error_message in (
            led.rows(
                "SELECT quantum_id, task_label, data_id, attempts, started_at, ended_at, "
                "error_type, error_message "
                f"FROM {led.shipped_view('quantum_status')} WHERE status = ? "
                "ORDER BY COALESCE(ended_at, started_at), quantum_id LIMIT ?",
                [status, max_items],
            )
        )
    ]
    if status == "failed" and found:
        tracebacks: dict[str, str] = {}
        for qid, detail in _in_list(
            led,
            "SELECT quantum_id, detail FROM events WHERE kind = 'quantum_failed' "
            "AND quantum_id IN ({marks}) ORDER BY quantum_seq",
            [f.quantum_id for f in found],
        ):
            tracebacks[qid] = str(_loads(detail).get("traceback") or "")  # the last one wins
        found = [f.model_copy(update={"traceback": tracebacks.get(f.quantum_id)}) for f in found]
    return found, int(n)


def _retried(led: Ledger, max_items: int) -> tuple[list[RetriedQuantum], int]:
    """Quanta with more than one attempt, and how each attempt ended."""
    (n,) = next(
        led.rows(f"SELECT COUNT(*) FROM {led.shipped_view('quantum_status')} WHERE attempts > 1")
    )
    quanta = {
        str(qid): RetriedQuantum(
            quantum_id=str(qid),
            task_label=str(task),
            data_id=_loads(data_id),
            status=str(status),
            attempts=[],
        )
        for qid, task, data_id, status in led.rows(
            "SELECT quantum_id, task_label, data_id, status "
            f"FROM {led.shipped_view('quantum_status')} "
            "WHERE attempts > 1 ORDER BY started_at, quantum_id LIMIT ?",
            [max_items],
        )
    }
    ends: dict[str, dict[int, AttemptEnd]] = {qid: {} for qid in quanta}
    marks = ", ".join(f"'{k}'" for k in _LIFECYCLE)
    for qid, attempt, kind, recorded_at, error_type, error_message in _in_list(
        led,
        "SELECT quantum_id, attempt, kind, recorded_at, error_type, error_message FROM events "
        f"WHERE kind IN ({marks}) AND quantum_id IN ({{marks}}) ORDER BY quantum_id, quantum_seq",
        list(quanta),
    ):
        if type(attempt) is not int:
            continue  # an edited row: verify names it; the report shows the rest
        attempts = ends[str(qid)]
        if kind == "quantum_started":
            attempts[attempt] = AttemptEnd(
                attempt=attempt, started_at=_text(recorded_at), ended_at=None, outcome="interrupted"
            )
            continue
        start = attempts.get(attempt)
        attempts[attempt] = AttemptEnd(
            attempt=attempt,
            started_at=start.started_at if start else None,
            ended_at=_text(recorded_at),
            outcome="succeeded" if kind == "quantum_succeeded" else "failed",
            error_type=_text(error_type),
            error_message=_text(error_message),
        )
    for qid, quantum in quanta.items():
        quantum.attempts = [ends[qid][a] for a in sorted(ends[qid])]
    return list(quanta.values()), int(n)


def _choose_dataset(led: Ledger) -> tuple[str, str] | None:
    """A final output (written, read by no quantum) of the succeeded quanta that started last.

    The first start, not the end: a retry late in a campaign does not make an
    early task's quantum look like the pipeline's last step.
    """
    fallback: str | None = None
    for (qid,) in led.rows(
        f"SELECT quantum_id FROM {led.shipped_view('quantum_status')} "
        "WHERE status = 'succeeded' "
        "ORDER BY started_at DESC, quantum_id LIMIT 50"
    ):
        written = [
            r[0]
            for r in led.rows(
                "SELECT DISTINCT e.dataset_id, d.dataset_type FROM events e "
                "JOIN datasets d ON d.quantum_id = e.quantum_id AND d.dataset_id = e.dataset_id "
                "WHERE e.quantum_id = ? AND e.kind = 'put' AND e.outcome = 'ok' "
                "ORDER BY d.dataset_type, e.dataset_id",
                [qid],
            )
        ]
        for dsid in filter(is_uuid, written):
            fallback = fallback or dsid
            readers = led.rows(
                "SELECT 1 FROM datasets WHERE dataset_id = ? "
                "AND role IN ('input', 'init_input') LIMIT 1",
                [dsid],
            )
            if not any(readers):
                return dsid, (
                    "chosen: a final output (written, and read by no quantum) of the succeeded "
                    "quantum that started last; pick another with --lineage DATASET_ID"
                )
    if fallback is not None:
        return fallback, (
            "chosen: an output of the succeeded quantum that started last (every output is "
            "read by some quantum); pick another with --lineage DATASET_ID"
        )
    return None


def build_report(
    led: Ledger,
    *,
    lineage_dataset: str | uuid.UUID | None = None,
    max_nodes: int = 60,
    max_items: int = 200,
) -> CampaignReport:
    """The report of the campaign recorded in ``led``.

    Args:
        led: an open ledger (a central one, usually).
        lineage_dataset: the dataset whose upstream lineage is drawn; None picks
            a final output of the succeeded quantum that started last
            (and says so).
        max_nodes: the lineage picture keeps the nodes nearest the dataset, at most this many.
        max_items: failed, interrupted and retried quanta listed, at most this many each.

    Raises:
        InvalidParameterError: ``lineage_dataset`` is not a UUID, or a limit is below 1.
        DatasetNotFoundError: no quantum of the ledger predicted ``lineage_dataset``.
    """
    if max_nodes < 1 or max_items < 1:
        raise InvalidParameterError("max_nodes and max_items must be at least 1")
    with led.snapshot():  # one moment of a campaign still being ingested
        return _build(led, lineage_dataset, max_nodes, max_items)


def _build(
    led: Ledger, lineage_dataset: str | uuid.UUID | None, max_nodes: int, max_items: int
) -> CampaignReport:
    statuses, tasks = _tasks(led)
    totals = {s: sum(t.counts.get(s, 0) for t in tasks) for s in statuses}
    failed, n_failed = _ended_badly(led, "failed", max_items)
    interrupted, n_interrupted = _ended_badly(led, "interrupted", max_items)
    retried, n_retried = _retried(led, max_items)
    (n_events,) = next(led.rows("SELECT COUNT(*) FROM events"))
    choice: LineageChoice | None = None
    picture: Picture | None = None
    no_lineage: str | None = None
    if lineage_dataset is not None:
        try:
            chosen: tuple[str, str] | None = (
                str(uuid.UUID(str(lineage_dataset))),
                "chosen with --lineage",
            )
        except ValueError as e:
            raise InvalidParameterError(f"{lineage_dataset!r} is not a dataset id") from e
    else:
        chosen = _choose_dataset(led)
        if chosen is None:
            no_lineage = "no quantum has succeeded and written a dataset yet: nothing to trace"
    if chosen is not None:
        graph = lineage(led, chosen[0])
        start = graph.datasets[graph.dataset_id]
        choice = LineageChoice(
            dataset_id=start.dataset_id,
            dataset_type=start.dataset_type,
            data_id=start.data_id,
            reason=chosen[1],
        )
        picture = draw_lineage(graph, max_nodes=max_nodes)
    return CampaignReport(
        source=led.where,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        n_quanta=sum(t.total for t in tasks),
        n_events=int(n_events),
        statuses=statuses,
        totals=totals,
        tasks=tasks,
        failed=failed,
        n_failed=n_failed,
        interrupted=interrupted,
        n_interrupted=n_interrupted,
        retried=retried,
        n_retried=n_retried,
        lineage=choice,
        picture=picture,
        no_lineage=no_lineage,
    )
