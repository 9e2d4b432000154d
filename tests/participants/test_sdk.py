"""The participant SDK: declarations are checked, a rejection undoes the handler's writes but is
answered, a transient failure is retried and then dead-lettered, never answered twice."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from examples.place_order import example
from examples.place_order import payments as payments_example
from examples.place_order.models import accounts, charges
from examples.place_order.settings import ShippingSettings
from participants.sdk import (
    CommandContext,
    Participant,
    ParticipantDefinitionError,
    Rejection,
)
from sagaway.inbox import claim, inbox
from sagaway.messaging.envelope import Message
from sagaway.messaging.topics import TopicNames
from tests.harness.stack import Stack
from tests.harness.waiting import eventually
from tests.sagaway.outbox.broker_reader import BrokerReader

pytestmark = pytest.mark.timeout(60)


class Amount(BaseModel):
    cents: int


# -- declarations ------------------------------------------------------------------------------


def test_a_participant_name_must_be_a_topic_friendly_word() -> None:
    with pytest.raises(ParticipantDefinitionError, match="not valid"):
        Participant("in ventory")
    with pytest.raises(ParticipantDefinitionError, match="not valid"):
        Participant("")


def test_a_handler_is_registered_only_for_its_own_commands() -> None:
    shop = Participant("shop")

    async def handler(ctx: CommandContext, payload: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(ParticipantDefinitionError, match="shop.<verb>"):
        shop.handles("billing.charge")(handler)
    with pytest.raises(ParticipantDefinitionError, match="verb"):
        shop.handles("shop.")(handler)
    shop.handles("shop.buy", payload=Amount)(handler)
    with pytest.raises(ParticipantDefinitionError, match="already"):
        shop.handles("shop.buy")(handler)
    assert shop.commands == ["shop.buy"]
    spec = shop.handler_for("shop.buy")
    assert spec is not None and spec.payload_model is Amount


def test_a_handler_must_be_async_and_a_payload_a_pydantic_model() -> None:
    shop = Participant("shop")
    with pytest.raises(ParticipantDefinitionError, match="async def"):
        shop.handles("shop.buy")(lambda ctx, payload: {})  # type: ignore[arg-type,return-value]
    with pytest.raises(ParticipantDefinitionError, match="pydantic model"):
        shop.handles("shop.sell", payload=dict)  # type: ignore[type-var]


def test_a_participant_builds_the_settings_it_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Participant("shop").settings() is None
    monkeypatch.setenv("SAGAWAY_SHIPPING_BLOCKED_COUNTRIES", "fr, DE")
    built = example("shipping").settings()
    assert isinstance(built, ShippingSettings)
    assert built.shipping_blocked_countries == ["fr", "DE"]
    monkeypatch.setenv("SAGAWAY_SHIPPING_BLOCKED_COUNTRIES", '["US"]')
    assert ShippingSettings().shipping_blocked_countries == ["US"]
    monkeypatch.delenv("SAGAWAY_SHIPPING_BLOCKED_COUNTRIES")
    assert ShippingSettings().shipping_blocked_countries == ["AQ"]
    with pytest.raises(ParticipantDefinitionError, match="settings= must be a pydantic model"):
        Participant("shop", settings=dict)  # type: ignore[arg-type]


def test_a_rejection_is_a_reason_and_details() -> None:
    rejection = Rejection("no stock of sku-9", sku="sku-9", available=0)
    assert rejection.to_payload() == {"reason": "no stock of sku-9", "sku": "sku-9", "available": 0}
    with pytest.raises(TypeError):
        Rejection("")
    with pytest.raises(TypeError):
        Rejection("x", **{"reason": "y"})


def test_an_invalid_payload_names_the_field_and_the_problem() -> None:
    shop = Participant("shop")

    @shop.handles("shop.buy", payload=Amount)
    async def buy(ctx: CommandContext, payload: Amount) -> dict[str, Any]:
        return {}

    spec = shop.handler_for("shop.buy")
    assert spec is not None
    with pytest.raises(Rejection) as caught:
        spec.parse({"cents": "many"})
    assert caught.value.reason.startswith("invalid shop.buy payload: cents:")
    assert caught.value.details["errors"][0]["loc"] == ["cents"]


# -- running -----------------------------------------------------------------------------------


def flaky_payments(failures: int, calls: Counter[str]) -> Participant:
    """The payments example whose charge raises a transient error `failures` times per order."""
    flaky = Participant("payments")

    @flaky.handles("payments.charge", payload=payments_example.ChargeCustomer)
    async def charge(ctx: CommandContext, payload: payments_example.ChargeCustomer) -> Any:
        calls[ctx.require_saga_id()] += 1
        if calls[ctx.require_saga_id()] <= failures:
            raise ConnectionError("the card network timed out")
        return await payments_example.charge(ctx, payload)

    flaky.handles("payments.refund", payload=payments_example.RefundCharge)(
        payments_example.refund
    )
    return flaky


async def test_a_handler_that_fails_transiently_twice_then_succeeds_answers_once(
    system: Stack,
) -> None:
    calls: Counter[str] = Counter()
    service = await system.roles.start_participant(flaky_payments(2, calls))
    await service.wait_ready()
    order = str(uuid.uuid4())
    command = system.client.command(
        "payments.charge", {"customer_id": "c-1", "amount_cents": 70}, order
    )

    reply = await system.client.call(command)

    assert reply.outcome == "success"
    assert calls[order] == 3
    assert service.runner is not None and service.runner.dead_lettered == 0
    credit = await system.rows(
        "payments", sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == "c-1")
    )
    assert credit[0]["credit_cents"] == 1_000_000 - 70
    # Nothing more comes: the failed tries left no reply and no inbox row behind.
    async with BrokerReader(system.client.transport, [system.client.reply_topic]) as reader:
        await reader.read_for(0.5)
    assert len(system.client.replies[command.message_id]) == 1


async def test_a_handler_that_keeps_failing_goes_to_the_dlq_without_a_trace(
    system: Stack,
) -> None:
    calls: Counter[str] = Counter()
    service = await system.roles.start_participant(flaky_payments(1000, calls))
    await service.wait_ready()
    order = str(uuid.uuid4())
    command = system.client.command(
        "payments.charge", {"customer_id": "c-1", "amount_cents": 70}, order
    )
    dlq = TopicNames.dlq(system.topics.requests("payments"))
    async with BrokerReader(system.client.transport, [dlq]) as reader:
        await system.client.send(command)
        letters = await reader.read_until(1)

    assert calls[order] == 1 + system.settings.messaging.handler_retries
    assert letters[0].header("message-id") == command.message_id.encode()
    assert b"ConnectionError: the card network timed out" in (letters[0].header("dlq-error") or b"")
    assert system.client.replies.get(command.message_id) is None
    assert await system.rows("payments", sa.select(inbox)) == []
    assert await system.rows("payments", sa.select(charges)) == []


async def test_a_rejection_undoes_the_handlers_writes_but_keeps_its_answer(
    system: Stack,
) -> None:
    greedy = Participant("payments")

    @greedy.handles("payments.charge", payload=payments_example.ChargeCustomer)
    async def charge(ctx: CommandContext, payload: payments_example.ChargeCustomer) -> Any:
        await payments_example.charge(ctx, payload)  # writes the charge and takes the credit...
        raise Rejection("changed my mind", order=ctx.saga_id)  # ...then says no

    service = await system.roles.start_participant(greedy)
    await service.wait_ready()
    order = str(uuid.uuid4())
    command = system.client.command(
        "payments.charge", {"customer_id": "c-5", "amount_cents": 9}, order
    )

    reply = await system.client.call(command)

    assert reply.outcome == "failure"
    assert reply.payload == {"reason": "changed my mind", "order": order}
    assert await system.rows("payments", sa.select(charges)) == []
    credit = await system.rows(
        "payments", sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == "c-5")
    )
    assert credit[0]["credit_cents"] == 1_000_000
    async with system.engines["payments"].begin() as conn:
        stored = await claim(conn, "payments", command.message_id)
        await conn.rollback()
    assert stored.duplicate and stored.reply is not None
    assert stored.reply.message.payload == reply.payload


async def piled_up_charges(
    system: Stack, payments: Participant
) -> tuple[list[str], list[Message]]:
    """Twenty charges (customers c-1..c-20, 5 cents each) sent while `payments` is stopped after
    joining its group, so the participant started next gets them as one batch."""
    service = await system.roles.start_participant(payments)
    await service.wait_ready()
    await system.roles.stop_participant("payments")
    orders = [str(uuid.uuid4()) for _ in range(20)]
    commands = [
        system.client.command(
            "payments.charge", {"customer_id": f"c-{i + 1}", "amount_cents": 5}, o
        )
        for i, o in enumerate(orders)
    ]
    await system.client.send(*commands)
    return orders, commands


async def test_a_batch_with_one_transient_failure_answers_every_command_once(
    system: Stack,
) -> None:
    calls: Counter[str] = Counter()
    orders, commands = await piled_up_charges(system, flaky_payments(0, calls))
    calls[orders[7]] = -1  # the 8th fails once (its counter starts below the threshold)
    flaky = flaky_payments(0, calls)
    service = await system.roles.start_participant(flaky)
    for command in commands:
        replies = await system.client.reply_to(command)
        assert replies[0].outcome == "success"
    rows = await system.rows("payments", sa.select(charges))
    assert sorted(r["order_id"] for r in rows) == sorted(orders)
    assert service.runner is not None and service.runner.dead_lettered == 0


async def test_a_rejection_in_a_batch_undoes_only_its_own_writes(system: Stack) -> None:
    """A batch runs without savepoints first; a rejection sends it round again with them, and
    every other command's effect is still there once, with one answer each."""
    orders, commands = await piled_up_charges(system, example("payments"))
    picky = Participant("payments")

    @picky.handles("payments.charge", payload=payments_example.ChargeCustomer)
    async def charge(ctx: CommandContext, payload: payments_example.ChargeCustomer) -> Any:
        result = await payments_example.charge(ctx, payload)  # writes, then maybe says no
        if ctx.saga_id == orders[7]:
            raise Rejection("not this one", order=ctx.saga_id)
        return result

    service = await system.roles.start_participant(picky)
    for i, command in enumerate(commands):
        (reply,) = await system.client.reply_to(command)
        assert reply.outcome == ("failure" if i == 7 else "success")
    assert reply.payload["amount_cents"] == 5
    rows = await system.rows("payments", sa.select(charges))
    assert sorted(r["order_id"] for r in rows) == sorted(orders[:7] + orders[8:])
    credits = await system.rows(
        "payments", sa.select(accounts.c.customer_id, accounts.c.credit_cents)
    )
    by_customer = {r["customer_id"]: r["credit_cents"] for r in credits}
    assert by_customer["c-8"] == 1_000_000
    assert all(by_customer[f"c-{i + 1}"] == 1_000_000 - 5 for i in range(20) if i != 7)
    assert service.runner is not None and service.runner.dead_lettered == 0
    assert service.runner.stats.rejected == 1 and service.runner.stats.succeeded == 19


async def test_a_command_twice_in_one_batch_runs_once_and_both_copies_are_answered(
    system: Stack,
) -> None:
    calls: Counter[str] = Counter()
    service = await system.roles.start_participant(flaky_payments(0, calls))
    await service.wait_ready()
    # Both copies wait in the broker, so they come in one batch.
    await system.roles.stop_participant("payments")
    order = str(uuid.uuid4())
    command = system.client.command(
        "payments.charge", {"customer_id": "c-9", "amount_cents": 3}, order
    )
    await system.client.send(command, command)

    await system.roles.start_participant(flaky_payments(0, calls))
    first, second = await system.client.reply_to(command, count=2)

    assert calls[order] == 1
    # The second copy is the same delivery: the same reply, message id included (deduped).
    assert second.message_id == first.message_id and second.payload == first.payload
    async with system.engines["payments"].begin() as conn:
        stored = await claim(conn, "payments", command.message_id)
        await conn.rollback()
    assert stored.reply is not None and stored.reply.message.message_id == first.message_id


async def test_handled_message_ids_are_forgotten_after_the_retention(system: Stack) -> None:
    service = await system.roles.start_participant(example("payments"), inbox_retention_s=3.0)
    await service.wait_ready()
    command = system.client.command(
        "payments.charge", {"customer_id": "c-1", "amount_cents": 1}, str(uuid.uuid4())
    )
    await system.client.call(command)
    assert len(await system.rows("payments", sa.select(inbox))) == 1
    assert await service.prune_inbox_once() == 0

    async def pruned() -> bool:  # the service prunes by itself
        return not await system.rows("payments", sa.select(inbox))

    await eventually(pruned, timeout_s=15, what="the inbox row to be pruned", interval_s=0.1)
