"""Who actually wrote a dataset. Two producers of one dataset is a fact worth telling.

A quantum *produced* a dataset when the dataset is among its actual outputs:
its last successful ``put`` of it is later than its last successful purging
``prune`` (the ``provenance`` view's rule, and lineage's edges). Two quanta
that both predicted and wrote one dataset id (the same type, data ID and run:
a quantum run twice under two ids, two graphs writing into one run) are both
producers; lineage then has two branches there. Ingest reports it, lineage
marks it; neither refuses it, since both histories are genuine.

The queries read the indexed ``datasets`` table first (which quanta predicted
each dataset as an output), then fold the events of just those quanta.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .target import chunks

__all__ = ["Query", "actual_producers", "purge_sql", "several_producers"]

#: Runs a query written with ``?`` placeholders; its rows.
Query = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]


def purge_sql(dialect: str, alias: str = "e") -> str:
    """SQL: the event aliased ``alias`` is a prune with ``purge`` set (its detail says so)."""
    if dialect == "postgresql":
        return f"({alias}.detail::jsonb ->> 'purge') = 'true'"
    return f"json_extract({alias}.detail, '$.purge') = 1"


def _candidates(query: Query, dataset_ids: Iterable[str]) -> dict[str, set[str]]:
    """Dataset id -> the quanta that predicted it as an output."""
    found: dict[str, set[str]] = {}
    for chunk in chunks(sorted(set(dataset_ids))):
        marks = ", ".join("?" * len(chunk))
        for did, qid in query(
            "SELECT dataset_id, quantum_id FROM datasets "
            f"WHERE role = 'output' AND dataset_id IN ({marks})",
            chunk,
        ):
            found.setdefault(str(did), set()).add(str(qid))
    return found


def _fold(query: Query, dialect: str, candidates: dict[str, set[str]]) -> dict[str, list[str]]:
    """Keep, of each dataset's candidate quanta, those that actually wrote it (sorted)."""
    pairs = sorted((qid, did) for did, qids in candidates.items() for qid in qids)
    wrote: dict[str, list[str]] = {did: [] for did in candidates}
    for chunk in chunks(pairs, 250):
        wanted = set(chunk)
        qids = sorted({qid for qid, _ in chunk})
        dids = sorted({did for _, did in chunk})
        sql = (
            "SELECT e.quantum_id, e.dataset_id, "
            "MAX(CASE WHEN e.kind = 'put' AND e.outcome = 'ok' THEN e.quantum_seq ELSE 0 END), "
            "MAX(CASE WHEN e.kind = 'prune' AND e.outcome = 'ok' AND "
            f"{purge_sql(dialect)} THEN e.quantum_seq ELSE 0 END) "
            f"FROM events e WHERE e.quantum_id IN ({', '.join('?' * len(qids))}) "
            f"AND e.dataset_id IN ({', '.join('?' * len(dids))}) "
            "GROUP BY e.quantum_id, e.dataset_id"
        )
        for qid, did, last_put, last_purge in query(sql, [*qids, *dids]):
            if (str(qid), str(did)) in wanted and (last_put or 0) > (last_purge or 0):
                wrote[str(did)].append(str(qid))
    return {did: sorted(qids) for did, qids in wrote.items()}


def actual_producers(
    query: Query, dialect: str, dataset_ids: Iterable[str]
) -> dict[str, list[str]]:
    """Dataset id -> the quanta that actually wrote it (sorted; empty when none did)."""
    ids = list(dataset_ids)
    found = _fold(query, dialect, _candidates(query, ids))
    return {did: found.get(did, []) for did in ids}


def several_producers(
    query: Query, dialect: str, dataset_ids: Iterable[str]
) -> dict[str, list[str]]:
    """Of these datasets, those that more than one quantum actually wrote: id -> the quanta.

    Only datasets that several quanta predicted as an output have their events
    folded: the common case (one quantum predicts each output) costs one
    indexed lookup per chunk of ids.
    """
    several = {did: qids for did, qids in _candidates(query, dataset_ids).items() if len(qids) > 1}
    return {did: qids for did, qids in _fold(query, dialect, several).items() if len(qids) > 1}
