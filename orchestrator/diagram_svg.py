"""A saga's flowchart (orchestrator/diagram.py) as inline SVG, laid out on a grid: one column per
element, the forward path on top, compensations and the ends below. Pure text out, no script and
no style attribute (the console's CSP allows neither): colours come from SVG presentation
attributes, which the console's stylesheet overrides through the `sg-*` classes."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from orchestrator.diagram import Diagram, Edge, Node

# Estimates of one character's width (12px text, 13px bold titles): boxes fit their text.
CHAR_W = 7.2
TITLE_CHAR_W = 8.6
TITLE_H = 18
LINE_H = 15
PAD = 10
GAP_X = 56
GAP_Y = 18
LANE_GAP = 64
MARGIN = 16
END_H = 30

_FILLS = {
    "start": "#eef2f7", "step": "#ffffff", "compensation": "#fff7ed",
    "completed": "#e7f6ec", "compensated": "#fdf3d8", "failed": "#fde8e8",
}
_EDGE_STROKES = {"forward": "#4b5563", "failure": "#b45309", "compensation": "#9a3412"}


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


def _size(node: Node) -> tuple[float, float]:
    longest = max([len(node.title) * TITLE_CHAR_W, *(len(t) * CHAR_W for t in node.lines)])
    width = longest + 2 * PAD
    if node.kind == "step" or node.kind == "compensation":
        return max(width, 120), TITLE_H + LINE_H * len(node.lines) + PAD
    return max(width, 90), END_H + LINE_H * len(node.lines)


def layout(diagram: Diagram) -> dict[str, Box]:
    """Every node's box: columns as wide as their widest node, rows as tall as their tallest."""
    sizes = {n.id: _size(n) for n in diagram.nodes}
    columns = max(n.column for n in diagram.nodes) + 1
    widths = [0.0] * columns
    for node in diagram.nodes:
        widths[node.column] = max(widths[node.column], sizes[node.id][0])
    row_h = [0.0, 0.0]
    rows = [1, 1]
    for node in diagram.nodes:
        row_h[node.lane] = max(row_h[node.lane], sizes[node.id][1])
        rows[node.lane] = max(rows[node.lane], node.row + 1)
    lane_top = [float(MARGIN), MARGIN + rows[0] * (row_h[0] + GAP_Y) - GAP_Y + LANE_GAP]
    xs = [float(MARGIN)]
    for width in widths[:-1]:
        xs.append(xs[-1] + width + GAP_X)
    boxes: dict[str, Box] = {}
    for node in diagram.nodes:
        w, h = sizes[node.id]
        x = xs[node.column] + (widths[node.column] - w) / 2
        cell_top = lane_top[node.lane] + node.row * (row_h[node.lane] + GAP_Y)
        boxes[node.id] = Box(x, cell_top + (row_h[node.lane] - h) / 2, w, h)
    return boxes


def _anchors(a: Box, b: Box) -> tuple[float, float, float, float]:
    """Where an edge from box `a` to box `b` leaves and arrives."""
    if abs(a.cx - b.cx) < 1:  # same column: vertical
        if b.cy > a.cy:
            return a.cx, a.y + a.h, b.cx, b.y
        return a.cx, a.y, b.cx, b.y + b.h
    if b.y >= a.y + a.h:  # lower lane: leave from the bottom, arrive at the side facing us
        bx = b.x + b.w if b.cx < a.cx else b.x
        return a.cx, a.y + a.h, bx, b.cy
    if b.cx > a.cx:
        return a.x + a.w, a.cy, b.x, b.cy
    return a.x, a.cy, b.x + b.w, b.cy


def _edge(edge: Edge, boxes: dict[str, Box]) -> str:
    x1, y1, x2, y2 = _anchors(boxes[edge.source], boxes[edge.target])
    dash = ' stroke-dasharray="5 4"' if edge.kind == "failure" else ""
    out = (
        f'<line class="sg-edge sg-edge-{edge.kind}" x1="{x1:.1f}" y1="{y1:.1f}" '
        f'x2="{x2:.1f}" y2="{y2:.1f}" stroke="{_EDGE_STROKES[edge.kind]}" stroke-width="1.5"'
        f'{dash} marker-end="url(#sg-arrow-{edge.kind})"/>'
    )
    if edge.label:
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        out += (
            f'<text class="sg-edge-label" x="{mx + 4:.1f}" y="{my - 3:.1f}" font-size="11" '
            f'fill="{_EDGE_STROKES[edge.kind]}">{escape(edge.label)}</text>'
        )
    return out


def _node(node: Node, box: Box, current: bool) -> str:
    classes = ["sg-node", f"sg-{node.kind}"]
    if node.pivot:
        classes.append("sg-pivot")
    if current:
        classes.append("sg-current")
    radius = box.h / 2 if node.kind not in ("step", "compensation") else 6
    stroke = "#1d4ed8" if current else "#374151"
    width = 3 if current or node.pivot else 1.2
    dash = ' stroke-dasharray="4 2"' if node.kind == "compensation" else ""
    step = f' data-step="{escape(node.step)}"' if node.step and node.kind == "step" else ""
    parts = [
        f'<g class="{" ".join(classes)}" id="sg-{node.id}"{step}>',
        f"<title>{escape(' · '.join((node.title, *node.lines)))}</title>",
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
        f'rx="{radius:.1f}" fill="{_FILLS[node.kind]}" stroke="{stroke}" '
        f'stroke-width="{width}"{dash}/>',
    ]
    centred = node.kind not in ("step", "compensation")
    x = box.cx if centred else box.x + PAD
    anchor = ' text-anchor="middle"' if centred else ""
    y = box.y + (box.h / 2 + 4 - LINE_H * len(node.lines) / 2 if centred else TITLE_H - 3)
    parts.append(
        f'<text class="sg-title" x="{x:.1f}" y="{y:.1f}" font-size="13" '
        f'font-weight="bold"{anchor}>{escape(node.title)}</text>'
    )
    for i, line in enumerate(node.lines, start=1):
        parts.append(
            f'<text class="sg-line" x="{x:.1f}" y="{y + i * LINE_H:.1f}" font-size="12"'
            f'{anchor}>{escape(line)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _markers() -> str:
    return "".join(
        f'<marker id="sg-arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{colour}"/></marker>'
        for kind, colour in _EDGE_STROKES.items()
    )


def _group_frames(diagram: Diagram, boxes: dict[str, Box]) -> str:
    out = []
    for name, ids in diagram.groups:
        members = [boxes[i] for i in ids]
        x = min(b.x for b in members) - 6
        y = min(b.y for b in members) - 20
        w = max(b.x + b.w for b in members) - x + 6
        h = max(b.y + b.h for b in members) - y + 6
        out.append(
            f'<g class="sg-group"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'rx="8" fill="none" stroke="#9ca3af" stroke-dasharray="2 3"/>'
            f'<text x="{x + 6:.1f}" y="{y + 13:.1f}" font-size="11" fill="#6b7280">'
            f"parallel: {escape(name)}</text></g>"
        )
    return "".join(out)


def to_svg(diagram: Diagram, *, current_step: str | None = None) -> str:
    """The diagram as an `<svg>` element; the forward node of `current_step` (every branch, when
    it names a parallel group) is highlighted (class `sg-current`)."""
    boxes = layout(diagram)
    width = max(b.x + b.w for b in boxes.values()) + MARGIN
    height = max(b.y + b.h for b in boxes.values()) + MARGIN
    shift = 14.0 if diagram.groups else 0.0  # room for the top group's caption
    title = f"{diagram.saga_type} v{diagram.version}"
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="saga-diagram" role="img" '
        f'viewBox="0 {-shift:.0f} {width:.0f} {height + shift:.0f}" width="{width:.0f}" '
        f'height="{height + shift:.0f}" font-family="system-ui, sans-serif" '
        f'aria-label="Flowchart of saga {escape(title)}">',
        f"<title>Flowchart of saga {escape(title)}</title>",
        f"<defs>{_markers()}</defs>",
        _group_frames(diagram, boxes),
    ]
    body.extend(_edge(e, boxes) for e in diagram.edges)
    current = {n.id for n in diagram.nodes if n.kind == "step" and n.step == current_step}
    current.update(i for name, ids in diagram.groups if name == current_step for i in ids)
    body.extend(_node(n, boxes[n.id], n.id in current) for n in diagram.nodes)
    body.append("</svg>")
    return "".join(body)
