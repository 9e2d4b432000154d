"""`audit`: a consistent system is clean, and each broken invariant is named."""

from __future__ import annotations

from typing import Any

from examples.place_order.audit import Snapshot, audit


def consistent() -> Snapshot:
    """Two skus, two customers; order o1 completed, o2 compensated, o3 in flight (reserved)."""
    return Snapshot(
        sagas={"o1": "completed", "o2": "compensated", "o3": "running"},
        stock=[
            {"sku": "a", "initial": 100, "available": 93, "reserved": 7},
            {"sku": "b", "initial": 50, "available": 48, "reserved": 2},
        ],
        reservations=[
            {"order_id": "o1", "status": "reserved", "items": [{"sku": "a", "quantity": 5},
                                                             {"sku": "b", "quantity": 2}]},
            {"order_id": "o2", "status": "released", "items": [{"sku": "a", "quantity": 9}]},
            {"order_id": "o3", "status": "reserved", "items": [{"sku": "a", "quantity": 2}]},
        ],
        accounts=[
            {"customer_id": "c-1", "initial_credit_cents": 1000, "credit_cents": 700},
            {"customer_id": "c-2", "initial_credit_cents": 1000, "credit_cents": 1000},
        ],
        charges=[
            {"order_id": "o1", "status": "charged", "customer_id": "c-1", "amount_cents": 300},
            {"order_id": "o2", "status": "refunded", "customer_id": "c-2", "amount_cents": 50},
        ],
        shipments=[
            {"order_id": "o1", "items": [{"sku": "a", "quantity": 5}, {"sku": "b", "quantity": 2}]}
        ],
    )


def rules(snap: Snapshot) -> list[tuple[str, str]]:
    return [(v.rule, v.subject) for v in audit(snap).violations]


def test_a_consistent_system_is_clean_and_totalled() -> None:
    report = audit(consistent())

    assert report.clean
    totals: dict[str, Any] = report.to_json()
    assert totals["violations"] == []
    assert totals["orders_completed"] == 1
    assert totals["orders_compensated"] == 1
    assert totals["orders_in_flight"] == 1
    assert totals["charged_cents_net"] == 300
    assert totals["units_shipped"] == 7
    assert totals["units_reserved"] == 2


def test_credit_that_does_not_add_up_is_a_violation() -> None:
    snap = consistent()
    snap.accounts[0]["credit_cents"] = 701
    assert rules(snap) == [("credit-conserved", "c-1")]


def test_stock_that_does_not_add_up_is_a_violation() -> None:
    snap = consistent()
    snap.stock[1]["available"] = 47
    assert ("stock-conserved", "b") in rules(snap)


def test_reserved_units_without_a_reservation_are_a_violation() -> None:
    snap = consistent()
    snap.stock[0].update(available=92, reserved=8)
    assert rules(snap) == [("stock-reserved", "a"), ("stock-shipped", "a")]


def test_a_shipment_not_backed_by_its_reservation_is_a_violation() -> None:
    snap = consistent()
    snap.shipments[0]["items"] = [{"sku": "a", "quantity": 6}, {"sku": "b", "quantity": 2}]
    assert rules(snap) == [("stock-shipped", "a")]


def test_a_compensated_order_holding_a_charge_is_a_violation() -> None:
    snap = consistent()
    snap.charges[1]["status"] = "charged"
    snap.accounts[1]["credit_cents"] = 950
    assert rules(snap) == [("compensated-order", "o2")]


def test_a_completed_order_without_a_shipment_is_a_violation() -> None:
    snap = consistent()
    snap.shipments = []
    found = rules(snap)
    assert ("completed-order", "o1") in found


def test_a_failed_saga_and_an_orphan_charge_are_violations() -> None:
    snap = consistent()
    snap.sagas["o4"] = "failed"
    snap.charges.append(
        {"order_id": "o9", "status": "charged", "customer_id": "c-2", "amount_cents": 0}
    )
    assert rules(snap) == [("saga-failed", "o4"), ("orphan", "o9")]


def test_counts_are_compared_once_nothing_is_in_flight() -> None:
    snap = consistent()
    snap.sagas["o3"] = "compensated"
    found = rules(snap)
    # o3 compensated but still reserved: the order rule catches it, the counts still agree.
    assert found == [("compensated-order", "o3")]
    snap.reservations[2]["status"] = "released"
    snap.stock[0].update(available=95, reserved=5)
    assert rules(snap) == []
    snap.shipments.append({"order_id": "o3", "items": []})
    assert ("order-counts", "place-order") in rules(snap)


def test_the_human_report_lists_totals_then_violations() -> None:
    snap = consistent()
    snap.accounts[0]["credit_cents"] = 0
    lines = audit(snap).lines()
    assert "orders completed: 1" in lines
    assert lines[-2] == "1 violation(s):"
    assert lines[-1].startswith("  [credit-conserved] c-1: credit 0 + net charges 300")
