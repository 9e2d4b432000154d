"""`sagaway audit`: check that the example system conserved money and stock, and that every
`place-order` saga left exactly the traces its outcome calls for.

The core, `audit(snapshot)`, is a pure function of the rows of the four databases (inventory,
payments, shipping, orchestrator); `load_snapshot` reads them. The rules:

- per customer: credit remaining + net (unrefunded) charges = initial credit;
- per sku: available + reserved = initial, and reserved = the units of the live reservations;
  and available + reserved-not-shipped + shipped = initial, where shipped counts the units in
  shipments (so every shipment is backed by the reservation of its order);
- a completed order has a live reservation, a captured charge and a shipment; a compensated order
  has none of them; a failed saga is a violation (it needs an operator); no reservation, charge or
  shipment belongs to an order the orchestrator does not know;
- with no saga in flight: completed orders = shipments = captured charges.

Before any of that, `check_databases` makes sure each database is the one of the service it is
read as, so that a wrong URL is refused instead of reported as hundreds of violations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.place_order.inventory import RESERVED
from examples.place_order.models import accounts, charges, reservations, shipments, stock
from examples.place_order.payments import CHARGED
from orchestrator.models import saga_instances

SAGA_TYPE = "place-order"
IN_FLIGHT = ("running", "compensating")

# The tables each service's database holds (every migrated database has them all).
SERVICE_TABLES: dict[str, tuple[sa.Table, ...]] = {
    "inventory": (stock, reservations),
    "payments": (accounts, charges),
    "shipping": (shipments,),
    "orchestrator": (saga_instances,),
}
# The row a completed order leaves in each participant's database.
COMPLETED_ORDER_ROWS: dict[str, sa.Table] = {
    "inventory": reservations,
    "payments": charges,
    "shipping": shipments,
}


@dataclass
class Snapshot:
    """The rows the audit looks at, read from the four databases."""

    sagas: dict[str, str] = field(default_factory=dict)  # saga id → status (place-order only)
    stock: list[dict[str, Any]] = field(default_factory=list)
    reservations: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    # Saga ids read again after the participants' rows, so a saga started meanwhile is no orphan.
    later_sagas: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule, about what (a customer, sku or order), and the figures."""

    rule: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "subject": self.subject, "message": self.message}


@dataclass
class AuditReport:
    """The totals and the violations; `clean` when there are none."""

    totals: dict[str, int]
    violations: list[Violation]

    @property
    def clean(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            **self.totals,
            "clean": self.clean,
            "violations": [v.to_json() for v in self.violations],
        }

    def lines(self) -> list[str]:
        """The human report: one total per line, then the violations."""
        out = [f"{name.replace('_', ' ')}: {value}" for name, value in self.totals.items()]
        if self.clean:
            out.append("no violations")
        else:
            out.append(f"{len(self.violations)} violation(s):")
            out.extend(f"  [{v.rule}] {v.subject}: {v.message}" for v in self.violations)
        return out


def _lines(items: Any) -> list[tuple[str, int]]:
    return [(str(line["sku"]), int(line["quantity"])) for line in items or []]


def audit(snap: Snapshot) -> AuditReport:
    """Check every rule of the module docstring against `snap`."""
    violations: list[Violation] = []

    def broken(rule: str, subject: str, message: str) -> None:
        violations.append(Violation(rule, subject, message))

    statuses = Counter(snap.sagas.values())
    in_flight = sum(statuses[s] for s in IN_FLIGHT)
    live_reservations = {r["order_id"]: r for r in snap.reservations if r["status"] == RESERVED}
    captured = {c["order_id"]: c for c in snap.charges if c["status"] == CHARGED}
    shipped_orders = {s["order_id"]: s for s in snap.shipments}

    # Money.
    net_by_customer: Counter[str] = Counter()
    for charge in captured.values():
        net_by_customer[str(charge["customer_id"])] += int(charge["amount_cents"])
    known_customers = set()
    for account in snap.accounts:
        customer = str(account["customer_id"])
        known_customers.add(customer)
        net = net_by_customer[customer]
        if account["credit_cents"] + net != account["initial_credit_cents"]:
            broken(
                "credit-conserved", customer,
                f"credit {account['credit_cents']} + net charges {net} != initial "
                f"{account['initial_credit_cents']}",
            )
    for customer in sorted(set(net_by_customer) - known_customers):
        broken("credit-conserved", customer, "captured charges for a customer with no account")

    # Stock.
    reserved_by_sku: Counter[str] = Counter()
    pending_by_sku: Counter[str] = Counter()
    for order_id, reservation in live_reservations.items():
        for sku, quantity in _lines(reservation["items"]):
            reserved_by_sku[sku] += quantity
            if order_id not in shipped_orders:
                pending_by_sku[sku] += quantity
    shipped_by_sku: Counter[str] = Counter()
    for shipment in snap.shipments:
        for sku, quantity in _lines(shipment["items"]):
            shipped_by_sku[sku] += quantity
    known_skus = set()
    for row in snap.stock:
        sku = str(row["sku"])
        known_skus.add(sku)
        initial, available, reserved = row["initial"], row["available"], row["reserved"]
        if available + reserved != initial:
            broken(
                "stock-conserved", sku,
                f"available {available} + reserved {reserved} != initial {initial}",
            )
        if reserved != reserved_by_sku[sku]:
            broken(
                "stock-reserved", sku,
                f"reserved {reserved} != {reserved_by_sku[sku]} units in live reservations",
            )
        pending, shipped = pending_by_sku[sku], shipped_by_sku[sku]
        if available + pending + shipped != initial:
            broken(
                "stock-shipped", sku,
                f"available {available} + reserved {pending} + shipped {shipped} != "
                f"initial {initial}",
            )
    for sku in sorted((set(reserved_by_sku) | set(shipped_by_sku)) - known_skus):
        broken("stock-conserved", sku, "reserved or shipped units of a sku with no stock row")

    # Orders.
    for order_id, status in sorted(snap.sagas.items()):
        held = [
            what
            for what, rows in (
                ("a reservation", live_reservations),
                ("a charge", captured),
                ("a shipment", shipped_orders),
            )
            if order_id in rows
        ]
        if status == "completed" and len(held) != 3:
            missing = {"a reservation", "a charge", "a shipment"} - set(held)
            broken("completed-order", order_id, "completed without " + " or ".join(sorted(missing)))
        elif status == "compensated" and held:
            broken("compensated-order", order_id, "compensated but holds " + " and ".join(held))
        elif status == "failed":
            broken("saga-failed", order_id, "the saga failed and needs an operator")
    known_orders = set(snap.sagas) | snap.later_sagas
    for what, rows in (
        ("reservation", live_reservations),
        ("charge", captured),
        ("shipment", shipped_orders),
    ):
        for order_id in sorted(set(rows) - known_orders):
            broken("orphan", order_id, f"a {what} for an order the orchestrator does not know")
    if in_flight == 0 and not (statuses["completed"] == len(shipped_orders) == len(captured)):
        broken(
            "order-counts", SAGA_TYPE,
            f"completed orders {statuses['completed']}, shipments {len(shipped_orders)}, "
            f"captured charges {len(captured)} differ",
        )

    totals = {
        "orders_completed": statuses["completed"],
        "orders_compensated": statuses["compensated"],
        "orders_failed": statuses["failed"],
        "orders_in_flight": in_flight,
        "charged_cents_net": sum(int(c["amount_cents"]) for c in captured.values()),
        "charges_captured": len(captured),
        "shipments": len(shipped_orders),
        "units_shipped": sum(shipped_by_sku.values()),
        "units_reserved": sum(pending_by_sku.values()),
        "customers": len(snap.accounts),
        "skus": len(snap.stock),
    }
    return AuditReport(totals, violations)


@dataclass(frozen=True)
class WrongDatabase:
    """The database read as `service` is not that service's: `problem` says why."""

    service: str
    problem: str


async def check_databases(engines: Mapping[str, AsyncEngine]) -> list[WrongDatabase]:
    """Each service's database (`engines` by service name) must hold that service's tables and,
    once the orchestrator has completed orders, the rows a completed order leaves there. One
    that does not is another service's — typically a URL without {service} read for every
    service — and auditing it would call every order a violation."""
    wrong = []
    for service, tables in SERVICE_TABLES.items():
        async with engines[service].connect() as conn:
            present = set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
        missing = [table.name for table in tables if table.name not in present]
        if missing:
            wrong.append(
                WrongDatabase(
                    service,
                    f"has no {service} tables ({', '.join(missing)}): if it is the {service} "
                    f"database, run `sagaway migrate --service {service}` first",
                )
            )
    if wrong:
        return wrong
    async with engines["orchestrator"].connect() as conn:
        completed = int(
            await conn.scalar(
                sa.select(sa.func.count()).where(
                    saga_instances.c.saga_type == SAGA_TYPE, saga_instances.c.status == "completed"
                )
            )
            or 0
        )
    if not completed:
        return []
    for service, table in COMPLETED_ORDER_ROWS.items():
        async with engines[service].connect() as conn:
            if await conn.scalar(sa.select(sa.literal(1)).select_from(table).limit(1)) is None:
                wrong.append(
                    WrongDatabase(
                        service,
                        f"has no {service} rows ({table.name} is empty) although the "
                        f"orchestrator's database holds {completed} completed orders",
                    )
                )
    return wrong


async def _rows(engine: AsyncEngine, query: sa.Select[Any]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in (await conn.execute(query)).all()]


async def load_snapshot(
    inventory: AsyncEngine, payments: AsyncEngine, shipping: AsyncEngine, orchestrator: AsyncEngine
) -> Snapshot:
    """Read the rows of the four databases. Saga statuses are read first: a saga seen terminal
    has finished with the participants, so their later-read rows show its final traces."""
    sagas = await _rows(
        orchestrator,
        sa.select(saga_instances.c.id, saga_instances.c.status).where(
            saga_instances.c.saga_type == SAGA_TYPE
        ),
    )
    snap = Snapshot(
        sagas={row["id"]: row["status"] for row in sagas},
        stock=await _rows(inventory, sa.select(stock)),
        reservations=await _rows(inventory, sa.select(reservations)),
        accounts=await _rows(payments, sa.select(accounts)),
        charges=await _rows(payments, sa.select(charges)),
        shipments=await _rows(shipping, sa.select(shipments)),
    )
    later = await _rows(
        orchestrator,
        sa.select(saga_instances.c.id).where(saga_instances.c.saga_type == SAGA_TYPE),
    )
    snap.later_sagas = {row["id"] for row in later}
    return snap


__all__ = [
    "AuditReport",
    "Snapshot",
    "Violation",
    "WrongDatabase",
    "audit",
    "check_databases",
    "load_snapshot",
]
