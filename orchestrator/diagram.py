"""A saga definition as a flowchart: nodes (steps, compensations, ends) and edges (forward,
failure, compensation), then as Mermaid text. Pure: `sagaway sagas show --mermaid` and the
console's saga-type page (orchestrator/diagram_svg.py) draw the same graph.

The graph says what the engine does (docs/sagas.md): steps run left to right; a step that fails
before the pivot starts the compensations of the steps before it, newest first, ending
`compensated`; a step after the pivot that keeps failing leaves the saga `failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.dsl import RetryPolicy, SagaDefinition, StepSpec

NodeKind = Literal["start", "step", "compensation", "completed", "compensated", "failed"]
EdgeKind = Literal["forward", "failure", "compensation"]

START, COMPLETED, COMPENSATED, FAILED = "start", "completed", "compensated", "failed"


@dataclass(frozen=True, slots=True)
class Node:
    """A box of the flowchart. `column` is its element's position (0 = start); `row` its branch
    within a parallel group; `lane` 0 for the forward path, 1 for compensations and ends."""

    id: str
    kind: NodeKind
    title: str
    lines: tuple[str, ...] = ()
    column: int = 0
    row: int = 0
    lane: int = 0
    step: str | None = None
    pivot: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str = ""


@dataclass(frozen=True, slots=True)
class Diagram:
    saga_type: str
    version: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def step_node(self, step: str) -> Node | None:
        """The forward node of a step (to highlight the saga's current step)."""
        return next((n for n in self.nodes if n.kind == "step" and n.step == step), None)


def policy_text(policy: RetryPolicy) -> str:
    """`timeout 30s · 3 retries` (the backoff is in `sagaway sagas show`)."""
    retries = "1 retry" if policy.retries == 1 else f"{policy.retries} retries"
    return f"timeout {policy.timeout:g}s · {retries}"


def _step_node(spec: StepSpec, column: int, row: int, pivot: bool) -> Node:
    lines = [spec.command, policy_text(spec.policy)]
    if pivot:
        lines.append("pivot: no return after it")
    if spec.when is not None:
        lines.append("runs only when its condition holds")
    return Node(
        id=f"step{spec.element}_{row}", kind="step", title=spec.name, lines=tuple(lines),
        column=column, row=row, lane=0, step=spec.name, pivot=pivot,
    )


def _compensation_node(spec: StepSpec, column: int, row: int) -> Node:
    assert spec.compensation_command is not None and spec.compensation_policy is not None
    return Node(
        id=f"comp{spec.element}_{row}", kind="compensation", title=f"undo {spec.name}",
        lines=(spec.compensation_command, policy_text(spec.compensation_policy)),
        column=column, row=row, lane=1, step=spec.name,
    )


def build_diagram(definition: SagaDefinition) -> Diagram:
    """The flowchart of `definition`."""
    last_column = len(definition.elements) + 1
    nodes: list[Node] = [Node(START, "start", "start")]
    edges: list[Edge] = []
    groups: list[tuple[str, tuple[str, ...]]] = []
    previous: list[str] = [START]
    # The compensation nodes in the order they run when everything before them has to be undone.
    undo_chain: list[str] = []
    # For each element, the compensation that runs first when that element fails.
    first_undo: dict[int, str | None] = {}
    pivot = definition.pivot
    for element in definition.elements:
        column = element.index + 1
        forward = [
            _step_node(spec, column, row, pivot == element.index)
            for row, spec in enumerate(element.steps)
        ]
        undo = [
            _compensation_node(spec, column, row)
            for row, spec in enumerate(element.steps)
            if spec.compensatable
        ]
        nodes.extend(forward)
        nodes.extend(undo)
        if element.is_group:
            groups.append((element.name, tuple(n.id for n in forward)))
        for source in previous:
            for target in forward:
                edges.append(Edge(source, target.id, "forward"))
        # A step that fails undoes the elements before it; a branch of a group also undoes
        # the branches of its group that succeeded.
        before = undo_chain[-1] if undo_chain else COMPENSATED
        undo_chain.extend(reversed([n.id for n in undo]))
        first_undo[element.index] = (
            (undo_chain[-1] if undo_chain else COMPENSATED) if element.is_group else before
        )
        previous = [n.id for n in forward]
    for source in previous:
        edges.append(Edge(source, COMPLETED, "forward"))
    for newer, older in zip(reversed(undo_chain), list(reversed(undo_chain))[1:], strict=False):
        edges.append(Edge(newer, older, "compensation"))
    if undo_chain:
        edges.append(Edge(undo_chain[0], COMPENSATED, "compensation"))
    needs_failed = False
    for element in definition.elements:
        after_pivot = pivot is not None and element.index > pivot
        on_failure = FAILED if after_pivot else first_undo[element.index] or COMPENSATED
        needs_failed = needs_failed or after_pivot
        if element.is_group:
            # One edge for the group, from its last branch: any branch failing undoes them all.
            last = len(element.steps) - 1
            edges.append(
                Edge(f"step{element.index}_{last}", on_failure, "failure", "a branch fails")
            )
            continue
        label = "keeps failing" if after_pivot else "fails"
        edges.append(Edge(f"step{element.index}_0", on_failure, "failure", label))
    nodes.append(Node(COMPLETED, "completed", "completed", column=last_column))
    nodes.append(Node(COMPENSATED, "compensated", "compensated", lane=1))
    if needs_failed:
        nodes.append(Node(FAILED, "failed", "failed", ("an operator resumes it",),
                          column=last_column, lane=1))
    return Diagram(
        definition.saga_type, definition.version, tuple(nodes), tuple(edges), tuple(groups)
    )


_MERMAID_SHAPES: dict[NodeKind, tuple[str, str]] = {
    "start": ("([", "])"),
    "step": ("[", "]"),
    "compensation": ("[[", "]]"),
    "completed": ("([", "])"),
    "compensated": ("([", "])"),
    "failed": ("([", "])"),
}
_MERMAID_ARROWS: dict[EdgeKind, str] = {
    "forward": "-->",
    "failure": "-.->",
    "compensation": "==>",
}


def _mermaid_text(text: str) -> str:
    """Mermaid's quoted label: a double quote is written as an entity."""
    return text.replace('"', "#quot;")


def _mermaid_node(node: Node) -> str:
    opening, closing = _MERMAID_SHAPES[node.kind]
    label = "<br/>".join(_mermaid_text(t) for t in (node.title, *node.lines))
    return f'{node.id}{opening}"{label}"{closing}'


def to_mermaid(diagram: Diagram) -> str:
    """The diagram as a Mermaid flowchart (left to right)."""
    lines = [
        "---",
        f"title: {diagram.saga_type} v{diagram.version}",
        "---",
        "flowchart LR",
    ]
    grouped = {node_id: name for name, ids in diagram.groups for node_id in ids}
    emitted_groups: set[str] = set()
    for node in diagram.nodes:
        group = grouped.get(node.id)
        if group is None:
            lines.append(f"    {_mermaid_node(node)}")
            continue
        if group in emitted_groups:
            continue
        emitted_groups.add(group)
        ids = dict(diagram.groups)[group]
        index = next(i for i, (name, _) in enumerate(diagram.groups) if name == group)
        lines.append(f'    subgraph group{index}["parallel: {_mermaid_text(group)}"]')
        lines.extend(f"        {_mermaid_node(diagram.node(i))}" for i in ids)
        lines.append("    end")
    for edge in diagram.edges:
        arrow = _MERMAID_ARROWS[edge.kind]
        label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
        lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
    pivots = [n.id for n in diagram.nodes if n.pivot]
    lines.append("    classDef pivot stroke-width:3px")
    lines.append("    classDef compensation stroke-dasharray:4 2")
    if pivots:
        lines.append(f"    class {','.join(pivots)} pivot")
    undo = [n.id for n in diagram.nodes if n.kind == "compensation"]
    if undo:
        lines.append(f"    class {','.join(undo)} compensation")
    return "\n".join(lines) + "\n"
