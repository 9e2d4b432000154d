"""The `place-order` saga end to end: start commands produced to `orchestrator.requests`, the
orchestrator and the three example services each on its own database with its own relay — on the
embedded broker + SQLite and on tansu + PostgreSQL — and `sagaway audit` clean afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from examples.place_order.audit import audit, load_snapshot
from examples.place_order.models import accounts, charges, reservations, shipments, stock
from examples.place_order.saga import define_place_order, place_order
from orchestrator.models import saga_steps
from orchestrator.registry import SagaRegistry
from orchestrator.testing import refuse, reply, run_saga, time_out
from sagaway.inbox import inbox
from tests.examples.place_order.tampering import (
    TamperingTransport,
    any_participant_command,
    command_named,
)
from tests.harness.stack import Stack
from tests.harness.waiting import eventually
from tests.participants.test_sdk import flaky_payments

pytestmark = pytest.mark.timeout(60)

SAGAWAY = Path(sys.executable).with_name("sagaway")


def order(
    customer: str = "c-1",
    items: list[tuple[str, int]] | None = None,
    total: int = 1000,
    country: str = "FR",
) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"sku": s, "quantity": q} for s, q in (items or [("sku-1", 1)])],
        "total_cents": total,
        "country": country,
    }


def new_id() -> str:
    return str(uuid.uuid4())


async def place(system: Stack, orders: list[tuple[str, dict[str, Any]]]) -> None:
    """Start place-order sagas, as the gateway does: (saga id, order) each."""
    saga_type = place_order.saga_type
    await system.client.start_sagas([(saga_id, saga_type, data) for saga_id, data in orders])


async def audit_now(system: Stack) -> dict[str, Any]:
    e = system.engines
    snapshot = await load_snapshot(e["inventory"], e["payments"], e["shipping"], e["orchestrator"])
    return audit(snapshot).to_json()


async def run_audit_command(system: Stack) -> tuple[int, dict[str, Any]]:
    """`sagaway audit --json` as a user runs it: embedded files from SAGAWAY_DATA_DIR, or URLs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env["SAGAWAY_DATA_DIR"] = str(system.settings.storage.data_dir)
    args = [str(SAGAWAY), "audit", "--json"]
    if system.kind == "kafka":
        for service in ("inventory", "payments", "shipping", "orchestrator"):
            args += [f"--{service}-url", system.urls[service]]
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, timeout=50, check=False
    )
    assert done.stdout, done.stderr.decode()
    return done.returncode, orjson.loads(done.stdout)


async def compensations(system: Stack, saga_id: str) -> list[tuple[str, str]]:
    rows = await system.rows(
        "orchestrator",
        sa.select(saga_steps.c.step_name, saga_steps.c.status)
        .where(saga_steps.c.saga_id == saga_id, saga_steps.c.kind == "compensation")
        .order_by(saga_steps.c.id),
    )
    return [(r["step_name"], r["status"]) for r in rows if r["status"] != "sent"]


# ---------------------------------------------------------------- the saga's logic, with the kit
# (orchestrator.testing: the pure engine against scripted services, no broker, no database)

SERVICES = {
    "inventory.reserve": reply({"reservation_id": "r-1"}),
    "payments.charge": reply({"payment_id": "p-1"}),
    "shipping.schedule": reply({"shipment_id": "s-1"}),
}


def test_kit_each_command_carries_what_its_service_needs() -> None:
    run = run_saga(place_order, order("c-7", [("sku-2", 3), ("sku-5", 1)], 4200, "DE"), SERVICES)

    items = [{"sku": "sku-2", "quantity": 3}, {"sku": "sku-5", "quantity": 1}]
    assert run.payloads("inventory.reserve") == [{"items": items}]
    assert run.payloads("payments.charge") == [{"customer_id": "c-7", "amount_cents": 4200}]
    assert run.payloads("shipping.schedule") == [
        {"customer_id": "c-7", "country": "DE", "items": items}
    ]
    assert run.result == {
        "reservation_id": "r-1", "payment_id": "p-1", "shipment_id": "s-1",
        "customer_id": "c-7", "total_cents": 4200,
    }


def test_kit_out_of_stock_ends_compensated_with_nothing_to_undo() -> None:
    run = run_saga(place_order, order(), {**SERVICES, "inventory.reserve": refuse("no sku-1")})

    assert run.sent == ["inventory.reserve"]
    assert (run.status, run.failure) == (
        "compensated", {"step": "reserve-stock", "reason": "no sku-1"}
    )


def test_kit_a_reserve_never_answered_is_released_without_its_reservation_id() -> None:
    # The release must be safe without the reserve's reply (docs/sagas.md, compensation).
    quick = define_place_order(timeout=1.0, retries=0)
    run = run_saga(quick, order(), {**SERVICES, "inventory.reserve": time_out()})

    assert run.sent == ["inventory.reserve", "inventory.release"]
    assert run.payloads("inventory.release") == [{"reservation_id": None}]
    assert run.status == "compensated"


def test_kit_a_refused_shipment_refunds_the_payment_it_took() -> None:
    run = run_saga(place_order, order(country="AQ"), {
        **SERVICES, "shipping.schedule": refuse("we do not ship to AQ"),
    })

    assert run.compensations == ["payments.refund", "inventory.release"]
    assert run.payloads("payments.refund") == [{"customer_id": "c-1", "payment_id": "p-1"}]
    assert run.payloads("inventory.release") == [{"reservation_id": "r-1"}]


def test_kit_the_pivot_is_never_undone_once_sent() -> None:
    run = run_saga(
        place_order, order(), {**SERVICES, "shipping.schedule": time_out()},
        until=lambda run: "shipping.schedule" in run.sent,
    )
    assert run.abort() == "the pivot 'schedule-shipping' is in flight; wait for its outcome"

    run.proceed()
    assert run.status == "failed" and run.compensations == []
    assert run.skip("schedule-shipping", {"shipment_id": "by-hand"}) is None
    assert run.result is not None and run.result["shipment_id"] == "by-hand"


@pytest.fixture
async def running(system: Stack) -> Stack:
    await system.roles.start_examples()
    await system.roles.start_orchestrator(SagaRegistry([place_order]))
    return system


async def test_an_order_completes_with_the_reservation_payment_and_shipment_ids(
    running: Stack,
) -> None:
    saga_id = new_id()
    await place(running, [(saga_id, order("c-7", [("sku-2", 3)], total=4200))])

    final = await running.client.final_reply(saga_id)

    assert final.outcome == "success"
    assert final.payload["status"] == "completed"
    result = final.payload["result"]
    shipment = (await running.rows("shipping", sa.select(shipments)))[0]
    charge = (await running.rows("payments", sa.select(charges)))[0]
    reservation = (await running.rows("inventory", sa.select(reservations)))[0]
    assert result["shipment_id"] == shipment["shipment_id"]
    assert result["payment_id"] == charge["payment_id"]
    assert result["reservation_id"] == reservation["reservation_id"]
    assert (charge["amount_cents"], charge["customer_id"], charge["order_id"]) == (
        4200, "c-7", saga_id,
    )
    assert (await running.saga(saga_id))["status"] == "completed"
    report = await audit_now(running)
    assert report["violations"] == []
    assert (report["orders_completed"], report["charged_cents_net"], report["units_shipped"]) == (
        1, 4200, 3,
    )


async def test_a_rejection_at_each_step_compensates_what_was_done(running: Stack) -> None:
    unknown_sku, no_stock, no_credit, antarctica = (new_id() for _ in range(4))
    await place(
        running,
        [
            (unknown_sku, order("c-1", [("sku-1", 1), ("sku-zzz", 1)])),
            (no_stock, order("c-2", [("sku-2", 1_000_001)])),
            (no_credit, order("c-3", [("sku-3", 2)], total=1_000_001)),
            (antarctica, order("c-4", [("sku-4", 5)], total=300, country="AQ")),
        ],
    )
    statuses = await running.wait_terminal([unknown_sku, no_stock, no_credit, antarctica])

    assert set(statuses.values()) == {"compensated"}
    failures = {s: (await running.saga(s))["failure"] for s in statuses}
    assert failures[unknown_sku]["step"] == "reserve-stock"
    assert "unknown sku sku-zzz" in failures[unknown_sku]["reason"]
    assert failures[no_stock]["step"] == "reserve-stock"
    assert "sku-2" in failures[no_stock]["reason"]
    assert failures[no_credit]["step"] == "charge-payment"
    assert "insufficient credit" in failures[no_credit]["reason"]
    assert failures[antarctica] == {"step": "schedule-shipping", "reason": "we do not ship to AQ"}
    # What was done is undone, newest first; what was refused needs no undo.
    assert await compensations(running, unknown_sku) == []
    assert await compensations(running, no_stock) == []
    assert await compensations(running, no_credit) == [("reserve-stock", "succeeded")]
    assert await compensations(running, antarctica) == [
        ("charge-payment", "succeeded"),
        ("reserve-stock", "succeeded"),
    ]
    final = await running.client.final_reply(antarctica)
    assert final.outcome == "failure" and final.payload["status"] == "compensated"
    stock_rows = await running.rows("inventory", sa.select(stock).where(stock.c.reserved != 0))
    assert stock_rows == []
    credit = await running.rows(
        "payments", sa.select(accounts).where(accounts.c.credit_cents != 1_000_000)
    )
    assert credit == []
    assert await running.rows("shipping", sa.select(shipments)) == []

    code, report = await run_audit_command(running)
    assert (code, report["violations"]) == (0, [])
    assert (report["orders_completed"], report["orders_compensated"]) == (0, 4)
    assert (report["charged_cents_net"], report["units_shipped"]) == (0, 0)


async def test_every_command_delivered_twice_changes_nothing_twice(system: Stack) -> None:
    await system.roles.start_examples()
    doubling = lambda t: TamperingTransport(t, duplicate=any_participant_command)  # noqa: E731
    orchestrator = await system.roles.start_orchestrator(
        SagaRegistry([place_order]), wrap=doubling
    )
    good = [new_id() for _ in range(5)]
    refused = [new_id() for _ in range(3)]
    await place(
        system,
        [(s, order(f"c-{i + 1}", [("sku-9", 2)], total=100)) for i, s in enumerate(good)]
        + [(s, order(f"c-{i + 50}", [("sku-9", 2)], total=100, country="AQ"))
           for i, s in enumerate(refused)],
    )
    statuses = await system.wait_terminal(good + refused)

    assert orchestrator.transport.duplicated >= 5 * 3 + 3 * 5
    assert Counter(statuses.values()) == {"completed": 5, "compensated": 3}
    [sku] = await system.rows("inventory", sa.select(stock).where(stock.c.sku == "sku-9"))
    assert (sku["available"], sku["reserved"]) == (1_000_000 - 10, 10)
    charged = await system.rows("payments", sa.select(charges).where(charges.c.status == "charged"))
    assert sorted(c["order_id"] for c in charged) == sorted(good)
    report = await audit_now(system)
    assert report["violations"] == []
    assert (report["charged_cents_net"], report["units_shipped"]) == (500, 10)


async def test_a_release_that_overtakes_its_reserve_leaves_nothing_reserved(
    system: Stack,
) -> None:
    await system.roles.start_examples()
    holding = lambda t: TamperingTransport(t, hold=command_named("inventory.reserve"))  # noqa: E731
    quick = define_place_order(timeout=1.0, retries=0)
    orchestrator = await system.roles.start_orchestrator(SagaRegistry([quick]), wrap=holding)
    saga_id = new_id()
    await place(system, [(saga_id, order("c-8", [("sku-8", 4)]))])

    statuses = await system.wait_terminal([saga_id])
    assert statuses[saga_id] == "compensated"
    assert await compensations(system, saga_id) == [("reserve-stock", "succeeded")]
    # The reserve, late, arrives now: the tombstone its release left makes inventory refuse it.
    held = orchestrator.transport.held
    assert {r.header("saga-id") for r in held} == {saga_id.encode()}
    late = held[0]
    await orchestrator.transport.release_held()
    late_id = late.header("message-id").decode()
    [row] = await eventually(
        lambda: system.rows("inventory", sa.select(inbox).where(inbox.c.message_id == late_id)),
        timeout_s=20,
        what="the late reserve to be handled",
    )
    assert row["reply"]["headers"]["outcome"] == "failure"
    assert "already released" in row["reply"]["payload"]["reason"]
    [sku] = await system.rows("inventory", sa.select(stock).where(stock.c.sku == "sku-8"))
    assert (sku["available"], sku["reserved"]) == (1_000_000, 0)
    assert (await system.saga(saga_id))["status"] == "compensated"
    report = await audit_now(system)
    assert report["violations"] == []


async def test_a_handler_failing_transiently_twice_still_completes_the_order(
    system: Stack,
) -> None:
    calls: Counter[str] = Counter()
    await system.roles.start_examples({"payments": flaky_payments(2, calls)})
    await system.roles.start_orchestrator(SagaRegistry([place_order]))
    saga_id = new_id()
    await place(system, [(saga_id, order("c-11", [("sku-11", 1)], total=777))])

    final = await system.client.final_reply(saga_id)

    assert final.payload["status"] == "completed"
    assert calls[saga_id] == 3
    assert system.roles.services["payments"].runner is not None
    assert system.roles.services["payments"].runner.dead_lettered == 0
    [account] = await system.rows(
        "payments", sa.select(accounts).where(accounts.c.customer_id == "c-11")
    )
    assert account["credit_cents"] == 1_000_000 - 777
    assert (await audit_now(system))["violations"] == []


@pytest.mark.slow
@pytest.mark.timeout(120)  # ~30 s on an idle 2-core machine; room for a loaded one
async def test_500_concurrent_orders_end_audited_clean_with_the_counts_sent(
    running: Stack,
) -> None:
    rng = random.Random(500)
    sent: list[tuple[str, dict[str, Any]]] = []
    expected = Counter[str]()
    charged = units = 0
    for n in range(500):
        lines = [
            (f"sku-{rng.randint(1, 100)}", rng.randint(1, 5)) for _ in range(rng.randint(1, 3))
        ]
        kind = "aq" if n % 10 == 0 else "over-credit" if n % 10 == 5 else "ok"
        total = 1_000_001 + n if kind == "over-credit" else rng.randint(0, 20_000)
        data = order(
            f"c-{rng.randint(1, 1000)}", lines, total, "AQ" if kind == "aq" else "DE"
        )
        sent.append((new_id(), data))
        if kind == "ok":
            expected["completed"] += 1
            charged += total
            units += sum(q for _, q in lines)
        else:
            expected["compensated"] += 1
    await place(running, sent)

    statuses = await running.wait_terminal([s for s, _ in sent], timeout_s=50)

    assert Counter(statuses.values()) == expected == {"completed": 400, "compensated": 100}
    code, report = await run_audit_command(running)
    assert report["violations"] == []
    assert code == 0
    assert report["orders_completed"] == 400
    assert report["orders_compensated"] == 100
    assert report["orders_in_flight"] == 0
    assert report["charged_cents_net"] == charged
    assert report["units_shipped"] == units
    assert report["shipments"] == report["charges_captured"] == 400
