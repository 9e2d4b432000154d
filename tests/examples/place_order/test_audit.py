"""`audit`: a consistent system is clean, and each broken invariant is named; `sagaway audit`
refuses a database that is not the service's it is read as, instead of reporting violations."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from examples.place_order.audit import Snapshot, audit
from examples.place_order.saga import place_order
from orchestrator.registry import SagaRegistry
from sagaway.cli.main import main
from sagaway.storage.migrate import upgrade
from tests.harness.processes import SAGAWAY, base_environment
from tests.harness.stack import Servers, open_stack


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


# ---------------------------------------------------------------- `sagaway audit` on PostgreSQL


def run_audit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAGAWAY, "audit", "--json", *args], env={**base_environment(), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.timeout(120)
async def test_audit_refuses_one_database_read_for_every_service(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The README's pattern without {service}: SAGAWAY_DATABASE_URL is the orchestrator's
    database, so the audit would read every service there and call each order a violation."""
    system = await open_stack("kafka", tmp_path / "data", Servers.of("kafka", request))
    try:
        await system.roles.start_examples()
        await system.roles.start_orchestrator(SagaRegistry([place_order]))
        orders = [str(uuid.uuid4()) for _ in range(3)]
        data = {"customer_id": "c-1", "items": [{"sku": "sku-1", "quantity": 1}],
                "total_cents": 100, "country": "FR"}
        await system.client.start_sagas([(o, place_order.saga_type, data) for o in orders])
        assert set((await system.wait_terminal(orders)).values()) == {"completed"}
        orchestrator = system.urls["orchestrator"]
        database = orchestrator.rsplit("/", 1)[1]

        refused = await asyncio.to_thread(run_audit, {"SAGAWAY_DATABASE_URL": orchestrator})

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stdout == ""
        host = orchestrator.split("@", 1)[1].rsplit("/", 1)[0]
        for service, others, table in (
            ("inventory", "payments, shipping and orchestrator", "inventory_reservations"),
            ("payments", "inventory, shipping and orchestrator", "payments_charges"),
            ("shipping", "inventory, payments and orchestrator", "shipping_shipments"),
        ):
            assert (
                f"- the {service} database, PostgreSQL at {host}/{database} (the one read for "
                f"{others} too), has no {service} rows ({table} is empty) although the "
                "orchestrator's database holds 3 completed orders;"
            ) in refused.stderr
        assert (
            "set --inventory-url, --payments-url and --shipping-url, or SAGAWAY_DATABASE_URL "
            "with {service} in it"
        ) in refused.stderr
        assert "the orchestrator database" not in refused.stderr
        assert refused.stderr.startswith(
            "inventory, payments, shipping and orchestrator are read from one database, "
            f"PostgreSQL at {host}/{database}\n"
        )

        urls = [f"--{s}-url={system.urls[s]}" for s in ("inventory", "payments", "shipping")]
        clean = await asyncio.to_thread(
            run_audit, {"SAGAWAY_DATABASE_URL": orchestrator}, *urls
        )

        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "read from one database" not in clean.stderr
        report = orjson.loads(clean.stdout)
        assert (report["orders_completed"], report["violations"]) == (3, [])
    finally:
        await system.close()


def test_audit_refuses_a_database_without_its_services_tables(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for service in ("orchestrator", "inventory", "shipping"):
        upgrade(f"sqlite+aiosqlite:///{data_dir / f'{service}.db'}")
    sqlite3.connect(data_dir / "payments.db").close()  # there, but never migrated

    result = CliRunner().invoke(main, ["audit"], env={"SAGAWAY_DATA_DIR": str(data_dir)})

    assert result.exit_code == 2, result.output
    assert (
        f"- the payments database, SQLite file {(data_dir / 'payments.db').resolve()}, has no "
        "payments tables (payments_accounts, payments_charges): if it is the payments database, "
        "run `sagaway migrate --service payments` first;"
    ) in result.output
    assert "the inventory database" not in result.output
