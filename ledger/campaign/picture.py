"""A lineage graph laid out in layers, for a screen: boxes, labels and edge paths.

`draw_lineage` turns a `Lineage` into a `Picture`: tasks (quanta) and datasets
as nodes, the actual read/write edges between them, laid out left to right in
layers by grandalf's Sugiyama layout (the layered layout of Graphviz's dot).
Labels are short: the dataset type or task label on the first line, the data
ID on the second, without the keys every node shares (said once, in the
picture's notes). A large lineage keeps the ``max_nodes`` nodes nearest the
chosen dataset and says what was cut. The picture holds text only; the HTML
template escapes it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

from pydantic import BaseModel

from ..central.lineage import Lineage
from ..errors import MissingDependencyError

__all__ = ["Picture", "PictureEdge", "PictureNode", "draw_lineage"]

#: Label metrics, in pixels: monospace text, so a label's width follows its length.
FONT_SIZE = 12
CHAR_WIDTH = 7.3
LINE_HEIGHT = 16
PAD_X = 10
PAD_Y = 7
#: Space between layers (columns) and between nodes of a layer.
LAYER_GAP = 56
NODE_GAP = 14
MARGIN = 12
#: Longest label line kept (longer ones end with an ellipsis; the tooltip has all).
MAX_LABEL = 32


class PictureNode(BaseModel):
    """A box: its place (top-left corner), size, two label lines and a tooltip."""

    id: str
    kind: Literal["dataset", "quantum"]
    x: float
    y: float
    width: float
    height: float
    title: str
    subtitle: str
    tooltip: str
    status: str | None = None
    start: bool = False
    #: Neighbours left out of the picture (a large lineage is cut).
    hidden: int = 0


class PictureEdge(BaseModel):
    """An arrow along a smooth path (SVG path data), read or written."""

    source: str
    target: str
    relation: Literal["input", "output"]
    path: str


class Picture(BaseModel):
    """A laid-out lineage: size in pixels, nodes, edges, and notes to show with it."""

    width: float
    height: float
    nodes: list[PictureNode]
    edges: list[PictureEdge]
    notes: list[str]
    n_nodes: int
    n_shown: int


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _data_id_text(data_id: dict[str, Any], common: set[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in data_id.items() if k not in common) or "(all shared)"


def _keep(graph: Lineage, max_nodes: int) -> tuple[list[str], dict[str, int]]:
    """The nodes nearest the start (breadth first, both ways), and each one's cut neighbours."""
    neighbours: dict[str, set[str]] = {}
    for e in graph.edges:
        neighbours.setdefault(e.dataset_id, set()).add(e.quantum_id)
        neighbours.setdefault(e.quantum_id, set()).add(e.dataset_id)
    order = [graph.dataset_id]
    seen = {graph.dataset_id}
    queue = deque(order)
    while queue:
        node = queue.popleft()
        for other in sorted(neighbours.get(node, ())):
            if other not in seen:
                seen.add(other)
                order.append(other)
                queue.append(other)
    kept = order[:max_nodes]
    kept_set = set(kept)
    hidden = {n: len(neighbours.get(n, set()) - kept_set) for n in kept}
    return kept, hidden


class _View:
    """Size and place of a vertex, as grandalf wants them (w across a layer, h along)."""

    def __init__(self, w: float, h: float) -> None:
        self.w = w
        self.h = h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = list(points)


def _curve(points: list[tuple[float, float]]) -> str:
    """SVG path data through the points, each step a curve leaving and arriving level."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        dx = (x1 - x0) / 2
        parts.append(f"C{x0 + dx:.1f},{y0:.1f} {x1 - dx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def _place(along: float, span: tuple[float, float], mirror: bool) -> float:
    """Where a layout coordinate along the layers lands, left to right (mirrored or not)."""
    left, right = span
    return MARGIN + (right - along if mirror else along - left)


def draw_lineage(graph: Lineage, *, max_nodes: int = 60) -> Picture:
    """Lay out ``graph`` in layers, left to right (inputs on the left).

    Upstream, the layers count back from the dataset (on the right); downstream,
    forward from it (on the left).

    Raises:
        MissingDependencyError: grandalf is not installed (the ``report`` extra).
    """
    try:
        from grandalf.graphs import Edge, Graph, Vertex
        from grandalf.layouts import SugiyamaLayout
    except ImportError as e:
        raise MissingDependencyError(
            "the lineage picture needs grandalf: pip install 'quantum-ledger[report]'"
        ) from e
    kept, hidden = _keep(graph, max_nodes)
    data_ids = [graph.datasets[n].data_id for n in kept if n in graph.datasets] + [
        graph.quanta[n].data_id for n in kept if n in graph.quanta
    ]
    common = {
        k
        for k, v in (data_ids[0].items() if data_ids else ())
        if len(data_ids) > 1 and all(d.get(k, object()) == v for d in data_ids)
    }
    nodes: dict[str, PictureNode] = {}
    for n in kept:
        if n in graph.datasets:
            d = graph.datasets[n]
            title = d.dataset_type or "(unknown dataset)"
            node = PictureNode(
                id=n,
                kind="dataset",
                x=0,
                y=0,
                width=0,
                height=0,
                title=_short(title),
                subtitle=_short(_data_id_text(d.data_id, common)),
                tooltip=d.label(),
                start=n == graph.dataset_id,
                hidden=hidden[n],
            )
        else:
            q = graph.quanta[n]
            node = PictureNode(
                id=n,
                kind="quantum",
                x=0,
                y=0,
                width=0,
                height=0,
                title=_short(q.task_label),
                subtitle=_short(_data_id_text(q.data_id, common)),
                tooltip=q.label(),
                status=q.status,
                hidden=hidden[n],
            )
        longest = max(len(node.title), len(node.subtitle) + (4 if node.hidden else 0))
        node.width = round(longest * CHAR_WIDTH + 2 * PAD_X, 1)
        node.height = 2 * LINE_HEIGHT + 2 * PAD_Y
        nodes[n] = node

    vertices = {n: Vertex(n) for n in kept}
    for n, v in vertices.items():
        # Layers run left to right: grandalf's "across a layer" is our height.
        v.view = _View(nodes[n].height, nodes[n].width)
    edges = []
    links = []
    mirror = graph.direction == "upstream"
    for edge in graph.edges:
        if edge.dataset_id in vertices and edge.quantum_id in vertices:
            a, b = (
                (edge.dataset_id, edge.quantum_id)
                if edge.relation == "input"
                else (edge.quantum_id, edge.dataset_id)
            )
            # Upstream, layers count back from the dataset (laid out from it, then
            # mirrored), so a type lines up in one column even where the graph is cut.
            link = Edge(vertices[b], vertices[a]) if mirror else Edge(vertices[a], vertices[b])
            link.view = _EdgeView()
            links.append(link)
            edges.append((a, b, edge.relation, link))
    layout_graph = Graph(list(vertices.values()), links)
    offset = 0.0  # components stacked one under the other
    for component in layout_graph.C:
        layout = SugiyamaLayout(component)
        layout.xspace = NODE_GAP
        layout.yspace = LAYER_GAP
        layout.init_all()
        layout.draw()
        views = [v.view for v in component.sV]
        top = min(v.xy[0] - v.w / 2 for v in views)
        span = (
            float(min(v.xy[1] - v.h / 2 for v in views)),
            float(max(v.xy[1] + v.h / 2 for v in views)),
        )
        bottom = offset
        for v in component.sV:
            node = nodes[v.data]
            across, along = v.view.xy
            node.x = round(_place(along, span, mirror) - node.width / 2, 1)
            node.y = round(MARGIN + offset + across - top - node.height / 2, 1)
            bottom = max(bottom, node.y + node.height - MARGIN)
        for _, _, _, link in edges:
            if link.v[0] in component.sV:
                points = [
                    (_place(p[1], span, mirror), MARGIN + offset + p[0] - top)
                    for p in link.view.points
                ]
                link.view.points = points[::-1] if mirror else points
        offset = bottom + NODE_GAP * 2

    picture_edges = []
    for a, b, relation, link in edges:
        points = list(link.view.points)
        if len(points) < 2:
            continue
        source, target = nodes[a], nodes[b]
        # Leave the source at its right side and reach the target at its left side.
        points[0] = (source.x + source.width, source.y + source.height / 2)
        points[-1] = (target.x, target.y + target.height / 2)
        picture_edges.append(
            PictureEdge(source=a, target=b, relation=relation, path=_curve(points))
        )
    width = max((n.x + n.width for n in nodes.values()), default=0) + MARGIN
    height = max((n.y + n.height for n in nodes.values()), default=0) + MARGIN
    notes = []
    if common and data_ids:
        shared = " ".join(f"{k}={data_ids[0][k]}" for k in sorted(common))
        notes.append(f"every node shown has {shared}")
    total = len(graph.datasets) + len(graph.quanta)
    if len(kept) < total:
        cut_q = sum(1 for n in graph.quanta if n not in nodes)
        cut_d = sum(1 for n in graph.datasets if n not in nodes)
        notes.append(
            f"large lineage: showing the {len(kept)} nodes nearest the dataset out of {total}; "
            f"cut {cut_q} quant{'um' if cut_q == 1 else 'a'} and {cut_d} "
            f"dataset{'s' * (cut_d != 1)} (a +N on a node counts its neighbours cut)"
        )
    return Picture(
        width=round(width, 1),
        height=round(height, 1),
        nodes=list(nodes.values()),
        edges=picture_edges,
        notes=notes,
        n_nodes=total,
        n_shown=len(kept),
    )
