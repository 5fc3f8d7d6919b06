"""The run page's DAG: each step a node (its state, and for a fan-out "x N" with its counts
by state), each ``needs`` an edge from the needed step down to the step that needs it.

Drawn on the server as inline SVG (``dag.html``), so it shows with JavaScript off and under
the UI's CSP (no script, no style attribute: colours come from ``ui.css`` classes). The
layout is small and deterministic, so one run always draws the same picture:

- layers by longest path: a step sits one layer below the deepest step it needs;
- within a layer, steps are ordered by the barycentre of the steps they need (the mean of
  their centres), ties in file order; the first layer keeps file order;
- each layer is a row of equal-width nodes centred on the widest row, a row as tall as its
  tallest node, so no two nodes can overlap whatever the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_W = 200
"""Width of a node (px): room for about 24 characters at the node's font size."""
GAP_X = 24
GAP_Y = 56
"""Space between rows, where the edges run."""
MARGIN = 8
LINE_H = 16
PAD_Y = 10
LABEL_CHARS = 22
"""A step id longer than this is cut (with an ellipsis) on its node; its title has it all."""
MAX_STEPS = 400
"""Past this many steps the page lists the steps without a drawing (it would not read)."""


@dataclass(frozen=True)
class Node:
    id: str
    state: str
    name: str
    """The id as the node shows it: cut at LABEL_CHARS with an ellipsis."""
    lines: tuple[str, ...]
    """Text under the step's id: its state (and "x N"), then its counts for a fan-out."""
    label: str
    """The whole of what the node says, for its accessible name and tooltip."""
    x: int
    y: int
    h: int
    w: int = NODE_W


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    d: str
    """The SVG path, from the bottom of ``source`` to the top of ``target``."""


@dataclass(frozen=True)
class Dag:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layers(steps: list[dict[str, Any]]) -> dict[str, int]:
    """Each step's layer: 0 for a step that needs none, else one more than the deepest of
    the steps it needs (``steps`` is acyclic: the parser refuses a cycle)."""
    needs = {s["id"]: s["needs"] for s in steps}
    out: dict[str, int] = {}
    while len(out) < len(needs):  # each pass places every step whose needs are placed
        for step, wanted in needs.items():
            if step not in out and all(n in out for n in wanted):
                out[step] = 1 + max((out[n] for n in wanted), default=-1)
    return out


def _lines(step: dict[str, Any]) -> tuple[str, ...]:
    head = step["state"] + (f" · x {step['total']}" if step["total"] > 1 else "")
    if step["total"] <= 1:
        return (head,)
    counts = sorted(step["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    return (head, *(f"{n} {state}" for state, n in counts))


def _label(step: dict[str, Any], lines: tuple[str, ...]) -> str:
    said = f"{step['state']}, {step['total']} tasks: {', '.join(lines[1:])}" \
        if len(lines) > 1 else step["state"]
    needs = f"; needs {', '.join(step['needs'])}" if step["needs"] else ""
    return f"step {step['id']}: {said}{needs}"


def layout(steps: list[dict[str, Any]]) -> Dag | None:
    """The drawing of ``steps`` (:func:`bridgehead.domain.runs.summarize`'s, in file
    order), or None when there are more than MAX_STEPS."""
    if not steps or len(steps) > MAX_STEPS:
        return None
    layer_of = layers(steps)
    rows: list[list[dict[str, Any]]] = [[] for _ in range(max(layer_of.values()) + 1)]
    for s in steps:  # file order within each row to start with (and for ties)
        rows[layer_of[s["id"]]].append(s)
    widest = max(len(r) for r in rows)
    centre: dict[str, float] = {}  # a node's centre, in node slots
    for row in rows:
        def barycentre(s: dict[str, Any]) -> float:
            mine = [centre[n] for n in s["needs"]]
            return sum(mine) / len(mine) if mine else 0.0
        if row is not rows[0]:
            row.sort(key=barycentre)  # stable: ties stay in file order
        offset = (widest - len(row)) / 2
        for i, s in enumerate(row):
            centre[s["id"]] = offset + i + 0.5
    nodes: dict[str, Node] = {}
    y = MARGIN
    for row in rows:
        drawn = [(s, _lines(s)) for s in row]
        height = max(PAD_Y * 2 + LINE_H * (1 + len(lines)) for _, lines in drawn)
        for s, lines in drawn:
            x = MARGIN + round((centre[s["id"]] - 0.5) * (NODE_W + GAP_X))
            nodes[s["id"]] = Node(s["id"], s["state"], _short(s["id"]), lines,
                                  _label(s, lines), x, y, height)
        y += height + GAP_Y
    edges = [_edge(nodes[n], nodes[s["id"]]) for s in steps for n in s["needs"]]
    width = 2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X
    return Dag(nodes=[nodes[s["id"]] for s in steps], edges=edges, width=width,
               height=y - GAP_Y + MARGIN)


def _edge(source: Node, target: Node) -> Edge:
    """A curve from the middle of ``source``'s bottom to the middle of ``target``'s top
    (where its arrow head ends)."""
    x1, y1 = source.x + source.w // 2, source.y + source.h
    x2, y2 = target.x + target.w // 2, target.y - 2
    bend = max(GAP_Y // 2, (y2 - y1) // 3)
    return Edge(source.id, target.id,
                f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}")


def _short(step_id: str) -> str:
    return step_id if len(step_id) <= LABEL_CHARS else step_id[:LABEL_CHARS - 1] + "…"
