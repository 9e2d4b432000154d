"""Saga diagrams (issue 16, item 6): a definition as nodes and edges, as Mermaid and as SVG."""

from __future__ import annotations

from xml.etree import ElementTree

from examples.place_order.saga import place_order
from orchestrator.diagram import build_diagram, to_mermaid
from orchestrator.diagram_svg import to_svg
from tests.orchestrator.contract_sagas import ship_parcel

SVG = "{http://www.w3.org/2000/svg}"


def edges(definition: object) -> set[tuple[str, str, str]]:
    diagram = build_diagram(definition)  # type: ignore[arg-type]
    title = {n.id: n.title for n in diagram.nodes}
    return {(title[e.source], e.kind, title[e.target]) for e in diagram.edges}


def test_place_order_runs_forward_and_undoes_newest_first() -> None:
    assert edges(place_order) == {
        ("start", "forward", "reserve-stock"),
        ("reserve-stock", "forward", "charge-payment"),
        ("charge-payment", "forward", "schedule-shipping"),
        ("schedule-shipping", "forward", "completed"),
        ("reserve-stock", "failure", "compensated"),
        ("charge-payment", "failure", "undo reserve-stock"),
        ("schedule-shipping", "failure", "undo charge-payment"),
        ("undo charge-payment", "compensation", "undo reserve-stock"),
        ("undo reserve-stock", "compensation", "compensated"),
    }
    diagram = build_diagram(place_order)
    assert [n.title for n in diagram.nodes if n.pivot] == ["schedule-shipping"]
    assert "failed" not in {n.kind for n in diagram.nodes}


def test_a_group_fans_out_and_a_step_after_the_pivot_ends_failed() -> None:
    found = edges(ship_parcel)
    assert {("hold", "forward", "notify"), ("hold", "forward", "log"),
            ("notify", "forward", "pay"), ("log", "forward", "pay")} <= found
    # A failing branch undoes the group's branches, then the steps before it.
    assert ("log", "failure", "undo notify") in found
    assert ("undo log", "compensation", "undo hold") in found
    assert ("pay", "failure", "undo notify") in found
    assert ("label", "failure", "failed") in found
    hold = build_diagram(ship_parcel).step_node("hold")
    assert hold is not None and hold.lines == ("warehouse.hold", "timeout 5s · 2 retries")


def test_mermaid_flowchart_names_every_step_and_command() -> None:
    text = to_mermaid(build_diagram(ship_parcel))
    assert text.splitlines()[3] == "flowchart LR"
    assert 'subgraph group0["parallel: tell"]' in text
    for word in ("hold", "warehouse.hold", "warehouse.unhold", "notify", "mail.retract",
                 "billing.pay", "printer.label", "pivot: no return after it"):
        assert word in text
    assert "step0_0 -.->|fails| compensated" in text
    assert "class step2_0 pivot" in text


def test_svg_is_well_formed_with_a_node_per_step_and_the_current_one_marked() -> None:
    markup = to_svg(build_diagram(ship_parcel), current_step="pay")
    root = ElementTree.fromstring(markup)
    assert root.tag == f"{SVG}svg"
    assert "style" not in markup  # the console's CSP allows no style attribute
    steps = {g.get("data-step"): g.get("class", "") for g in root.iter(f"{SVG}g")
             if g.get("data-step")}
    assert set(steps) == {"hold", "notify", "log", "pay", "label"}
    assert "sg-current" in steps["pay"] and "sg-pivot" in steps["pay"]
    assert not any("sg-current" in cls for name, cls in steps.items() if name != "pay")
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"hold", "undo hold", "mail.retract", "compensated", "completed", "failed"} <= texts



def test_svg_without_a_current_step_marks_none() -> None:
    markup = to_svg(build_diagram(place_order))
    assert "sg-current" not in markup
    assert markup.count('class="sg-node sg-step') == 3


def test_svg_highlights_every_branch_when_the_current_step_is_a_group() -> None:
    root = ElementTree.fromstring(to_svg(build_diagram(ship_parcel), current_step="tell"))
    marked = {g.get("data-step") for g in root.iter(f"{SVG}g")
              if "sg-current" in g.get("class", "")}
    assert marked == {"notify", "log"}
