"""The example services driven directly: commands produced to `<service>.requests`, replies read
back from the reply topic — on the embedded broker + SQLite and on tansu + PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from examples.place_order.models import accounts, charges, reservations, shipments, stock
from sagaway.messaging.envelope import Message
from tests.harness.stack import Stack

pytestmark = pytest.mark.timeout(60)


def order_id() -> str:
    return str(uuid.uuid4())


async def stock_of(system: Stack, sku: str) -> tuple[int, int]:
    rows = await system.rows(
        "inventory", sa.select(stock.c.available, stock.c.reserved).where(stock.c.sku == sku)
    )
    return rows[0]["available"], rows[0]["reserved"]


async def credit_of(system: Stack, customer: str) -> int:
    rows = await system.rows(
        "payments", sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == customer)
    )
    return int(rows[0]["credit_cents"])


async def call(system: Stack, name: str, payload: dict[str, Any], saga_id: str) -> Message:
    """Send a command to its participant; its reply."""
    return await system.client.call(system.client.command(name, payload, saga_id))


@pytest.fixture
async def running(system: Stack) -> Stack:
    await system.roles.start_examples()
    return system


async def test_reserve_takes_every_line_and_replies_with_the_reservation(running: Stack) -> None:
    order = order_id()
    command = running.client.command(
        "inventory.reserve",
        {"items": [{"sku": "sku-1", "quantity": 3}, {"sku": "sku-2", "quantity": 2},
                   {"sku": "sku-1", "quantity": 1}]},
        order,
        step="reserve-stock",
    )
    reply = await running.client.call(command)

    assert reply.outcome == "success"
    assert reply.causation_id == command.message_id
    assert (reply.saga_id, reply.saga_step, reply.attempt) == (order, "reserve-stock", 1)
    assert reply.correlation_id == order
    assert reply.payload["units"] == 6
    assert uuid.UUID(reply.payload["reservation_id"])
    assert await stock_of(running, "sku-1") == (1_000_000 - 4, 4)
    assert await stock_of(running, "sku-2") == (1_000_000 - 2, 2)


async def test_reserve_rejects_an_unknown_sku_and_reserves_nothing(running: Stack) -> None:
    command = running.client.command(
        "inventory.reserve",
        {"items": [{"sku": "sku-5", "quantity": 1}, {"sku": "sku-nope", "quantity": 1}]},
        order_id(),
    )
    reply = await running.client.call(command)

    assert reply.outcome == "failure"
    assert reply.payload["sku"] == "sku-nope"
    assert "unknown sku sku-nope" in reply.payload["reason"]
    assert await stock_of(running, "sku-5") == (1_000_000, 0)
    assert await running.rows("inventory", sa.select(reservations)) == []


async def test_reserve_rejects_naming_the_sku_short_of_stock_and_reserves_nothing(
    running: Stack,
) -> None:
    command = running.client.command(
        "inventory.reserve",
        {"items": [{"sku": "sku-7", "quantity": 10}, {"sku": "sku-8", "quantity": 1_000_001}]},
        order_id(),
    )
    reply = await running.client.call(command)

    assert reply.outcome == "failure"
    assert reply.payload["sku"] == "sku-8"
    assert reply.payload["requested"] == 1_000_001
    assert reply.payload["available"] == 1_000_000
    assert "sku-8" in reply.payload["reason"]
    assert await stock_of(running, "sku-7") == (1_000_000, 0)


async def test_an_invalid_payload_is_a_rejection_with_the_reason(running: Stack) -> None:
    command = running.client.command(
        "inventory.reserve", {"items": [{"sku": "sku-1", "quantity": 0}]}, order_id()
    )
    reply = await running.client.call(command)

    assert reply.outcome == "failure"
    assert reply.payload["reason"].startswith("invalid inventory.reserve payload: items.0.quantity")
    assert reply.payload["errors"][0]["loc"] == ["items", "0", "quantity"]
    assert running.roles.services["inventory"].runner is not None
    assert running.roles.services["inventory"].runner.dead_lettered == 0


async def test_an_unknown_command_is_a_rejection(running: Stack) -> None:
    reply = await call(running, "inventory.steal", {}, order_id())

    assert reply.outcome == "failure"
    assert "no handler for inventory.steal" in reply.payload["reason"]
    assert reply.payload["known_commands"] == ["inventory.release", "inventory.reserve"]


async def test_a_command_delivered_twice_runs_once_and_is_answered_twice(running: Stack) -> None:
    order = order_id()
    first = running.client.command(
        "payments.charge", {"customer_id": "c-3", "amount_cents": 2500}, order, step="charge"
    )
    again = first.evolve(attempt=2, message_id=first.message_id)
    await running.client.send(first, first)
    await running.client.send(again)
    replies = await running.client.reply_to(first, count=3)

    assert [r.outcome for r in replies] == ["success"] * 3
    assert len({r.payload["payment_id"] for r in replies}) == 1
    assert sorted(r.attempt or 0 for r in replies) == [1, 1, 2]
    assert all(r.causation_id == first.message_id for r in replies)
    # The exact redelivery keeps the reply's message id; the re-sent attempt gets a new one.
    ids: dict[int | None, set[str]] = {r.attempt: set() for r in replies}
    for r in replies:
        ids[r.attempt].add(r.message_id)
    assert len(ids[1]) == 1 and ids[2].isdisjoint(ids[1])
    assert await credit_of(running, "c-3") == 1_000_000 - 2500
    assert len(await running.rows("payments", sa.select(charges))) == 1


async def test_a_rejection_delivered_twice_is_answered_with_the_same_rejection(
    running: Stack,
) -> None:
    command = running.client.command(
        "payments.charge", {"customer_id": "c-404404", "amount_cents": 1}, order_id()
    )
    await running.client.send(command)
    await running.client.send(command.evolve(attempt=2))
    replies = await running.client.reply_to(command, count=2)

    assert [r.outcome for r in replies] == ["failure", "failure"]
    assert replies[0].payload == replies[1].payload
    assert replies[0].payload["reason"] == "unknown customer c-404404"
    assert sorted(r.attempt or 0 for r in replies) == [1, 2]


async def test_charge_rejects_insufficient_credit_and_refund_gives_credit_back(
    running: Stack,
) -> None:
    too_much = running.client.command(
        "payments.charge", {"customer_id": "c-9", "amount_cents": 1_000_001}, order_id()
    )
    rejected = await running.client.call(too_much)
    assert rejected.outcome == "failure"
    assert rejected.payload["available_cents"] == 1_000_000
    assert "insufficient credit" in rejected.payload["reason"]

    order = order_id()
    charged = await call(
        running, "payments.charge", {"customer_id": "c-9", "amount_cents": 999}, order
    )
    assert charged.outcome == "success"
    assert await credit_of(running, "c-9") == 1_000_000 - 999
    refunded = await call(
        running, "payments.refund", {"customer_id": "c-9", "amount_cents": 999}, order
    )
    assert refunded.payload == {
        "payment_id": charged.payload["payment_id"], "refunded_cents": 999, "tombstone": False,
    }
    # A second refund (another message) changes nothing.
    again = await call(running, "payments.refund", {"customer_id": "c-9"}, order)
    assert again.outcome == "success" and again.payload["refunded_cents"] == 0
    assert await credit_of(running, "c-9") == 1_000_000


async def test_a_release_before_its_reserve_leaves_nothing_reserved(running: Stack) -> None:
    order = order_id()
    release = await call(running, "inventory.release", {}, order)
    assert release.outcome == "success"
    assert release.payload["tombstone"] is True

    late = await call(
        running, "inventory.reserve", {"items": [{"sku": "sku-4", "quantity": 5}]}, order
    )
    assert late.outcome == "failure"
    assert "already released" in late.payload["reason"]
    assert await stock_of(running, "sku-4") == (1_000_000, 0)
    rows = await running.rows("inventory", sa.select(reservations))
    assert [(r["order_id"], r["status"], r["units"]) for r in rows] == [(order, "released", 0)]


async def test_a_refund_before_its_charge_leaves_nothing_charged(running: Stack) -> None:
    order = order_id()
    refund = await call(running, "payments.refund", {"customer_id": "c-2"}, order)
    assert refund.payload["tombstone"] is True
    late = await call(running, "payments.charge", {"customer_id": "c-2", "amount_cents": 10}, order)
    assert late.outcome == "failure"
    assert await credit_of(running, "c-2") == 1_000_000


async def test_release_gives_back_the_stock_once(running: Stack) -> None:
    order = order_id()
    await call(running, "inventory.reserve", {"items": [{"sku": "sku-3", "quantity": 7}]}, order)
    first = await call(running, "inventory.release", {}, order)
    second = await call(running, "inventory.release", {}, order)

    assert first.payload["released_units"] == 7
    assert second.payload["released_units"] == 0
    assert await stock_of(running, "sku-3") == (1_000_000, 0)


async def test_shipping_refuses_aq_and_schedules_elsewhere(running: Stack) -> None:
    items = [{"sku": "sku-1", "quantity": 2}]
    refused = await call(
        running, "shipping.schedule", {"country": "AQ", "items": items}, order_id()
    )
    assert refused.outcome == "failure"
    assert refused.payload == {"reason": "we do not ship to AQ", "country": "AQ"}

    bad = await call(running, "shipping.schedule", {"country": "XX", "items": items}, order_id())
    assert bad.outcome == "failure" and "ISO 3166" in bad.payload["reason"]

    order = order_id()
    scheduled = await call(
        running,
        "shipping.schedule",
        {"country": "FR", "items": items, "customer_id": "c-1"},
        order,
    )
    assert scheduled.outcome == "success"
    rows = await running.rows("shipping", sa.select(shipments))
    assert [(r["order_id"], r["shipment_id"], r["units"]) for r in rows] == [
        (order, scheduled.payload["shipment_id"], 2)
    ]
