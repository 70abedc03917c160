"""Lineage: which quanta made a dataset, from what, and so on up — or down.

One recursive SQL query walks the graph whose edges are *actual* inputs and
*actual* outputs (exactly the ``provenance`` view's columns of those names):
upstream, a dataset's producer is a quantum whose actual outputs hold it,
whose actual inputs have producers in turn; downstream, the reverse.
Predicted-only datasets (never read, never written) are not edges.

The query walks the predicted graph in the ``datasets`` table first (indexed
both ways), folds the events of only the quanta it found, and then walks the
actual edges among them (see `lineage_sql`): it never aggregates the whole log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from ..errors import DatasetNotFoundError, InvalidParameterError, OutOfRangeError
from ..store.ledger import Ledger
from ..store.validate import data_id_value, show
from .producers import actual_producers, purge_sql
from .target import chunks

__all__ = ["Lineage", "LineageDataset", "LineageEdge", "LineageQuantum", "lineage", "lineage_sql"]

Direction = Literal["upstream", "downstream"]

#: What lineage counts, said in every rendering.
NOTE = "only actual inputs and actual outputs count: datasets only predicted are not edges"


def lineage_sql(direction: Direction, dialect: str, *, limited: bool) -> str:
    """The recursive query: rows (relation, quantum_id, dataset_id, depth).

    Parameters (``?``): the start dataset id, the depth limit, the start again,
    the depth limit again. Relation ``output``: the quantum actually wrote the
    dataset; ``input``: it actually read it. Depth 1 is the start's producers
    (upstream) or readers (downstream).

    Three steps, all in SQL: ``cand`` walks the *predicted* graph from the
    ``datasets`` table alone (indexed both ways); ``flags`` folds the events of
    just those candidate quanta once, exactly as the ``provenance`` view does,
    into ``actual_in`` and ``actual_out`` edges; ``walk`` then follows only
    actual edges (a walk step joins the indexed ``datasets`` table). Only
    candidate quanta's events are read: the cost follows the size of the
    lineage, not of the ledger. ``limited`` bounds ``cand`` by depth too (else
    it is plain reachability, which stops on any graph).
    """
    upstream = direction == "upstream"
    # Predicted step from a dataset: to the quanta that make it (upstream) or read it,
    # then on to what those read (upstream) or make.
    near, far = ("o", "i") if upstream else ("i", "o")
    # Unlimited, both walks are plain reachability (a constant depth), so UNION stops
    # them on any graph, cycles included; `lineage` then measures depths from the edges.
    step_depth = "c.depth + 1" if limited else "0"
    walk_step = "w.depth + 1" if limited else "1"
    purge = purge_sql(dialect)
    near_rel, far_rel = ("output", "input") if upstream else ("input", "output")
    # SQLite: CROSS JOIN keeps the join order as written (the walk's few rows first).
    join = "CROSS JOIN" if dialect == "sqlite" else "JOIN"
    return f"""
WITH RECURSIVE
cand(dataset_id, depth) AS (
    SELECT CAST(? AS VARCHAR(36)), 0
  UNION
    SELECT {far}.dataset_id, {step_depth}
    FROM cand c
    {join} datasets {near} ON {near}.dataset_id = c.dataset_id AND {_role(near)}
    {join} datasets {far} ON {far}.quantum_id = {near}.quantum_id AND {_role(far)}
    WHERE c.depth < ?
),
cq AS (
    SELECT DISTINCT {near}.quantum_id
    FROM cand c {join} datasets {near} ON {near}.dataset_id = c.dataset_id AND {_role(near)}
),
flags AS (
    SELECT e.quantum_id, e.dataset_id,
           MAX(CASE WHEN e.kind IN ('get', 'stored') AND e.outcome = 'missing'
                    THEN 1 ELSE 0 END) AS missing,
           MAX(CASE WHEN e.kind IN ('get', 'get_deferred') AND e.outcome = 'ok'
                    THEN e.quantum_seq ELSE 0 END) AS last_use,
           MAX(CASE WHEN e.kind = 'mark_input_unused' AND e.outcome = 'ok'
                    THEN e.quantum_seq ELSE 0 END) AS last_unused,
           MAX(CASE WHEN e.kind = 'put' AND e.outcome = 'ok'
                    THEN e.quantum_seq ELSE 0 END) AS last_put,
           MAX(CASE WHEN e.kind = 'prune' AND e.outcome = 'ok' AND {purge}
                    THEN e.quantum_seq ELSE 0 END) AS last_purge
    FROM events e
    WHERE e.quantum_id IN (SELECT quantum_id FROM cq) AND e.dataset_id IS NOT NULL
    GROUP BY e.quantum_id, e.dataset_id
),
actual_in AS (
    SELECT quantum_id, dataset_id FROM flags WHERE missing = 0 AND last_use > last_unused
),
actual_out AS (SELECT quantum_id, dataset_id FROM flags WHERE last_put > last_purge),
walk(quantum_id, dataset_id, depth) AS (
    SELECT {near}.quantum_id, {near}.dataset_id, 1 FROM datasets {near}
    WHERE {near}.dataset_id = ? AND {_role(near)} AND {_actual(near, dialect)}
  UNION
    SELECT {near}.quantum_id, {near}.dataset_id, {walk_step}
    FROM walk w
    {join} datasets {far} ON {far}.quantum_id = w.quantum_id AND {_role(far)}
    {join} datasets {near} ON {near}.dataset_id = {far}.dataset_id AND {_role(near)}
    WHERE w.depth < ? AND {_actual(far, dialect)} AND {_actual(near, dialect)}
),
walked AS (SELECT quantum_id, MIN(depth) AS depth FROM walk GROUP BY quantum_id)
SELECT '{near_rel}', quantum_id, dataset_id, MIN(depth) FROM walk GROUP BY quantum_id, dataset_id
UNION ALL
SELECT '{far_rel}', {far}.quantum_id, {far}.dataset_id, w.depth
FROM walked w {join} datasets {far} ON {far}.quantum_id = w.quantum_id AND {_role(far)}
WHERE {_actual(far, dialect)}
"""


def _actual(side: str, dialect: str) -> str:
    """SQL: the ``datasets`` row aliased ``side`` is an actual input (``i``) or output (``o``).

    PostgreSQL gets an uncorrelated IN, which it hashes once whatever its row
    estimates for a CTE (far too low for a good join plan); SQLite an EXISTS,
    which it answers from an automatic index on the materialised CTE (an IN
    would lead it to scan the whole set for every row).
    """
    edges = "actual_in" if side == "i" else "actual_out"
    if dialect == "postgresql":
        return (
            f"({side}.quantum_id, {side}.dataset_id) IN "
            f"(SELECT quantum_id, dataset_id FROM {edges})"
        )
    return (
        f"EXISTS (SELECT 1 FROM {edges} x WHERE x.quantum_id = {side}.quantum_id "
        f"AND x.dataset_id = {side}.dataset_id)"
    )


def _role(side: str, alias: str | None = None) -> str:
    """SQL: the ``datasets`` row is an input (side ``i``) or an output (``o``)."""
    alias = alias or side
    if side == "i":
        return f"{alias}.role IN ('input', 'init_input')"
    return f"{alias}.role = 'output'"


class LineageDataset(BaseModel):
    """A dataset in a lineage graph (type, data ID and run as its quanta predicted them).

    ``producers`` lists every quantum of the ledger that actually wrote it, in
    the graph or not; more than one means the dataset was made twice (ingest
    warns about it), and the label says so.
    """

    dataset_id: str
    dataset_type: str | None = None
    run: str | None = None
    data_id: dict[str, Any] = {}
    producers: list[str] = []

    def label(self) -> str:
        data_id = ", ".join(f"{k}={v}" for k, v in self.data_id.items())
        kind = self.dataset_type or "(unknown to this ledger)"
        several = f" ({len(self.producers)} producers)" if len(self.producers) > 1 else ""
        return f"{kind}({data_id}) {self.dataset_id} run={self.run}{several}"


class LineageQuantum(BaseModel):
    """A quantum in a lineage graph, with how it ended."""

    quantum_id: str
    task_label: str
    data_id: dict[str, Any] = {}
    status: str
    depth: int

    def label(self) -> str:
        data_id = ", ".join(f"{k}={v}" for k, v in self.data_id.items())
        return f"{self.task_label}({data_id}) {self.quantum_id} [{self.status}]"


class LineageEdge(BaseModel):
    """The quantum actually read (``input``) or actually wrote (``output``) the dataset."""

    quantum_id: str
    dataset_id: str
    relation: Literal["input", "output"]


class Lineage(BaseModel):
    """The lineage of one dataset, upstream or downstream, as a graph."""

    dataset_id: str
    direction: Direction
    depth: int | None
    note: str = NOTE
    datasets: dict[str, LineageDataset]
    quanta: dict[str, LineageQuantum]
    edges: list[LineageEdge]

    def _next(self, node: str, is_dataset: bool) -> list[str]:
        """Children of a node in the tree of this direction."""
        upstream = self.direction == "upstream"
        if is_dataset:
            relation = "output" if upstream else "input"
            found = [
                e.quantum_id for e in self.edges if e.dataset_id == node and e.relation == relation
            ]
        else:
            relation = "input" if upstream else "output"
            found = [
                e.dataset_id for e in self.edges if e.quantum_id == node and e.relation == relation
            ]
        return sorted(set(found))

    def tree(self) -> str:
        """A text tree from the dataset: datasets, then the quanta that made (or read) them."""
        verb = "produced by" if self.direction == "upstream" else "read by"
        depth = (
            "all levels"
            if self.depth is None
            else f"at most {self.depth} level{'s' * (self.depth != 1)} of quanta"
        )
        lines = [
            f"{self.direction} lineage of {self.dataset_id} ({depth})",
            f"{self.note}",
            "",
            self.datasets[self.dataset_id].label(),
        ]
        shown: set[str] = set()

        def walk(node: str, is_dataset: bool, prefix: str) -> Iterator[str]:
            children = self._next(node, is_dataset)
            if is_dataset and not children and node != self.dataset_id:
                return
            for n, child in enumerate(children):
                last = n == len(children) - 1
                branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
                if is_dataset:
                    text = f"{verb} {self.quanta[child].label()}"
                else:
                    text = self.datasets[child].label()
                if child in shown and self._next(child, not is_dataset):
                    yield f"{prefix}{branch}{text} (shown above)"
                    continue
                shown.add(child)
                yield f"{prefix}{branch}{text}"
                yield from walk(child, not is_dataset, prefix + indent)

        lines.extend(walk(self.dataset_id, True, ""))
        if not self._next(self.dataset_id, True):
            none = "producer" if self.direction == "upstream" else "reader"
            lines.append(f"(no {none} in this ledger)")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The graph as JSON (nodes and edges)."""
        return self.model_dump_json(indent=2)

    def to_dot(self) -> str:
        """The graph in Graphviz dot: datasets as ellipses, quanta as boxes."""

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [
            f"digraph lineage {{  // {self.direction} of {self.dataset_id}; {self.note}",
            "  rankdir=LR;",
        ]
        for d in self.datasets.values():
            style = ", style=bold" if d.dataset_id == self.dataset_id else ""
            lines.append(
                f"  {quote(d.dataset_id)} [shape=ellipse, label={quote(d.label())}{style}];"
            )
        for q in self.quanta.values():
            lines.append(f"  {quote(q.quantum_id)} [shape=box, label={quote(q.label())}];")
        for e in sorted(self.edges, key=lambda e: (e.relation, e.quantum_id, e.dataset_id)):
            if e.relation == "input":
                lines.append(f"  {quote(e.dataset_id)} -> {quote(e.quantum_id)} [label=read];")
            else:
                lines.append(f"  {quote(e.quantum_id)} -> {quote(e.dataset_id)} [label=wrote];")
        lines.append("}")
        return "\n".join(lines)


def lineage(
    ledger: Ledger,
    dataset_id: uuid.UUID | str,
    *,
    downstream: bool = False,
    depth: int | None = None,
) -> Lineage:
    """The lineage of a dataset in an open ledger (a central one, usually).

    Args:
        ledger: the ledger to ask (`Ledger.open` of a path or URL).
        dataset_id: the dataset to start from.
        downstream: walk to the quanta that read it and what they wrote, instead
            of to the quanta that wrote it and what they read.
        depth: at most this many levels of quanta (None: all).

    Raises:
        InvalidParameterError: the id is not a UUID, or ``depth`` is below 1.
        OutOfRangeError: ``depth`` is past 2**63 - 1.
        DatasetNotFoundError: no quantum of the ledger predicted the dataset.
    """
    try:
        start = str(uuid.UUID(str(dataset_id)))
    except ValueError as e:
        raise InvalidParameterError(f"{dataset_id!r} is not a dataset id (a UUID)") from e
    if depth is not None and depth < 1:
        raise InvalidParameterError(f"depth must be at least 1, not {depth}")
    if depth is not None and depth > 2**63 - 1:  # more than SQL binds (and than any ledger has)
        raise OutOfRangeError(f"depth {depth} is beyond any lineage: give a smaller one, or none")
    if not any(ledger.rows("SELECT 1 FROM datasets WHERE dataset_id = ? LIMIT 1", [start])):
        raise DatasetNotFoundError(
            f"dataset {start} is not in {ledger.where}: no quantum there predicted it"
        )
    direction: Direction = "downstream" if downstream else "upstream"
    limit = depth if depth is not None else 1_000_000
    sql = lineage_sql(direction, ledger.dialect, limited=depth is not None)
    edges = [
        LineageEdge(quantum_id=qid, dataset_id=did, relation=relation)
        for relation, qid, did, _ in ledger.rows(sql, [start, limit, start, limit])
    ]
    depths = _depths(start, edges, downstream=downstream)
    dataset_ids = sorted({start} | {e.dataset_id for e in edges})
    return Lineage(
        dataset_id=start,
        direction=direction,
        depth=depth,
        datasets=_datasets(ledger, dataset_ids),
        quanta=_quanta(ledger, depths),
        edges=sorted(edges, key=lambda e: (e.quantum_id, e.relation, e.dataset_id)),
    )


def _depths(start: str, edges: list[LineageEdge], *, downstream: bool) -> dict[str, int]:
    """Each quantum's level: 1 for the start's producers (or readers), and so on."""
    near, far = ("input", "output") if downstream else ("output", "input")
    by_dataset: dict[str, list[str]] = {}
    by_quantum: dict[str, list[str]] = {}
    for e in edges:
        if e.relation == near:
            by_dataset.setdefault(e.dataset_id, []).append(e.quantum_id)
        elif e.relation == far:
            by_quantum.setdefault(e.quantum_id, []).append(e.dataset_id)
    depths: dict[str, int] = {}
    frontier, level = [start], 1
    while frontier:
        found = [q for d in frontier for q in by_dataset.get(d, ()) if q not in depths]
        for q in found:
            depths.setdefault(q, level)
        frontier = [d for q in dict.fromkeys(found) for d in by_quantum.get(q, ())]
        level += 1
    return depths


def _in_list(ledger: Ledger, sql: str, ids: list[str]) -> Iterator[tuple[Any, ...]]:
    for chunk in chunks(ids):
        yield from ledger.rows(sql.format(marks=", ".join("?" * len(chunk))), chunk)


def _datasets(ledger: Ledger, ids: list[str]) -> dict[str, LineageDataset]:
    found = {i: LineageDataset(dataset_id=i) for i in ids}
    sql = (
        "SELECT dataset_id, dataset_type, run, data_id FROM datasets WHERE dataset_id IN ({marks})"
    )
    for did, dataset_type, run, data_id in _in_list(ledger, sql, ids):
        if found[did].dataset_type is None:
            found[did] = LineageDataset(
                dataset_id=did,
                dataset_type=dataset_type,
                run=run,
                data_id=data_id_value(data_id, ledger.where, f"the datasets row of {show(did)}"),
            )
    for did, producers in actual_producers(ledger.rows, ledger.dialect, ids).items():
        if producers:
            found[did] = found[did].model_copy(update={"producers": producers})
    return found


_STATUS = {"quantum_succeeded": "succeeded", "quantum_failed": "failed"}


def _quanta(ledger: Ledger, depths: dict[str, int]) -> dict[str, LineageQuantum]:
    # The quantum_status view's rule, for just these quanta (the view aggregates them all):
    # the last lifecycle event decides; a start after the last end means interrupted.
    sql = (
        "SELECT q.quantum_id, q.task_label, q.data_id, "
        "(SELECT e.kind FROM events e WHERE e.quantum_id = q.quantum_id AND e.kind IN "
        "('quantum_started', 'quantum_succeeded', 'quantum_failed') "
        "ORDER BY e.quantum_seq DESC LIMIT 1) "
        "FROM quanta q WHERE q.quantum_id IN ({marks})"
    )
    return {
        qid: LineageQuantum(
            quantum_id=qid,
            task_label=task,
            data_id=data_id_value(data_id, ledger.where, f"the quanta row of {show(qid)}"),
            status=_STATUS.get(last, "interrupted"),
            depth=depths[qid],
        )
        for qid, task, data_id, last in _in_list(ledger, sql, sorted(depths))
    }
