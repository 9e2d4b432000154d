"""Handlers registered for a command contract: the payload arrives as its model, the reply and a
refusal's details are checked against theirs, and a reply that does not match is a failure reply
naming the field — its writes undone, answered once, never retried or dead-lettered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from examples.place_order import payments as payments_example
from examples.place_order.contracts import CHARGE, REFUND, ChargeCustomer, Charged, Refunded
from examples.place_order.models import accounts, charges
from orchestrator.dsl import Command
from participants.sdk import (
    CommandContext,
    ContractMismatch,
    Participant,
    ParticipantDefinitionError,
    Rejection,
)
from sagaway.inbox import inbox
from tests.harness.stack import Stack

pytestmark = pytest.mark.timeout(60)


class Credit(BaseModel):
    customer_id: str
    credit_cents: int


class Short(BaseModel):
    requested_cents: int
    available_cents: int


CHECK = Command("payments.check", payload=ChargeCustomer, reply=Credit, refusal=Short)


@dataclass(frozen=True)
class PlainContract:
    """A contract as a participant package could declare it without the orchestrator."""

    name: str
    payload: type[BaseModel]
    reply: type[BaseModel]
    refusal: type[BaseModel] | None = None


# -- declarations ------------------------------------------------------------------------------


def test_a_handler_registered_for_a_contract_takes_its_name_and_models() -> None:
    shop = Participant("payments")

    @shop.handles(CHARGE)
    async def charge(ctx: CommandContext, payload: ChargeCustomer) -> Charged:
        return Charged(payment_id="p", amount_cents=payload.amount_cents)

    spec = shop.handler_for("payments.charge")
    assert spec is not None
    assert (spec.payload_model, spec.reply_model, spec.refusal_model) == (
        ChargeCustomer, Charged, None,
    )
    plain = PlainContract("payments.check", ChargeCustomer, Credit, Short)
    shop.handles(plain)(charge)  # type: ignore[arg-type]
    checked = shop.handler_for("payments.check")
    assert checked is not None and checked.refusal_model is Short


def test_a_contract_is_checked_like_a_name() -> None:
    shop = Participant("shop")

    async def handler(ctx: CommandContext, payload: Any) -> Any:
        return {}

    with pytest.raises(ParticipantDefinitionError, match="shop.<verb>"):
        shop.handles(CHARGE)(handler)
    with pytest.raises(ParticipantDefinitionError, match="leave payload= out"):
        Participant("payments").handles(CHARGE, payload=ChargeCustomer)  # type: ignore[call-overload]
    with pytest.raises(ParticipantDefinitionError, match="neither a command name nor a contract"):
        shop.handles(PlainContract("shop.buy", ChargeCustomer, dict))  # type: ignore[arg-type]


def test_a_reply_that_does_not_match_names_the_field() -> None:
    spec = Participant("payments")
    spec.handles(CHARGE)(payments_example.charge)
    handler = spec.handler_for("payments.charge")
    assert handler is not None
    assert handler.reply_body(Charged(payment_id="p-1")) == {
        "payment_id": "p-1", "amount_cents": None,
    }
    with pytest.raises(ContractMismatch) as missing:
        handler.reply_body({"paymentid": "p-1"})
    assert missing.value.reason == (
        "payments.charge reply does not match Charged: payment_id: Field required"
    )
    with pytest.raises(ContractMismatch, match="returned a Refunded"):
        handler.reply_body(Refunded(payment_id=None, refunded_cents=0))


# -- running -----------------------------------------------------------------------------------


def payments_with(handler: Any, contract: Any = CHARGE) -> Participant:
    service = Participant("payments")
    service.handles(contract)(handler)
    service.handles(REFUND)(payments_example.refund)
    return service


async def test_a_contract_handler_gets_the_typed_payload_and_answers_its_reply(
    system: Stack,
) -> None:
    seen: list[object] = []

    async def charge(ctx: CommandContext, payload: ChargeCustomer) -> Charged:
        seen.append(payload)
        return await payments_example.charge(ctx, payload)

    await (await system.roles.start_participant(payments_with(charge))).wait_ready()
    payload = {"customer_id": "c-2", "amount_cents": 40, "note": "extra"}
    reply = await system.client.call(
        system.client.command("payments.charge", payload, str(uuid.uuid4()))
    )

    assert reply.outcome == "success"
    assert set(reply.payload) == {"payment_id", "amount_cents"}
    assert reply.payload["amount_cents"] == 40
    assert seen == [ChargeCustomer(customer_id="c-2", amount_cents=40)]


async def test_a_reply_missing_a_field_is_a_failure_naming_it_with_its_writes_undone(
    system: Stack,
) -> None:
    calls: list[str] = []

    async def charge(ctx: CommandContext, payload: ChargeCustomer) -> Any:
        calls.append(ctx.require_saga_id())
        done = await payments_example.charge(ctx, payload)  # writes the charge, then...
        return {"paymentid": done.payment_id}  # ...answers with a misspelt field

    service = await system.roles.start_participant(payments_with(charge))
    await service.wait_ready()
    order = str(uuid.uuid4())
    command = system.client.command(
        "payments.charge", {"customer_id": "c-3", "amount_cents": 25}, order
    )

    reply = await system.client.call(command)
    runs = len(calls)  # a batch with a rejection runs again with savepoints: 2
    await system.client.send(command)  # a redelivery: answered from the inbox
    first, again = await system.client.reply_to(command, count=2)

    assert reply.outcome == "failure"
    assert reply.payload["reason"] == (
        "payments.charge reply does not match Charged: payment_id: Field required"
    )
    assert reply.payload["errors"] == [{"loc": ["payment_id"], "msg": "Field required"}]
    assert again.payload == first.payload
    assert len(calls) == runs and set(calls) == {order}
    assert service.runner is not None and service.runner.dead_lettered == 0
    assert await system.rows("payments", sa.select(charges)) == []
    credit = await system.rows(
        "payments", sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == "c-3")
    )
    assert credit[0]["credit_cents"] == 1_000_000
    assert len(await system.rows("payments", sa.select(inbox))) == 1


async def test_an_invalid_payload_for_a_contract_is_a_failure_naming_the_field(
    system: Stack,
) -> None:
    async def charge(ctx: CommandContext, payload: ChargeCustomer) -> Charged:
        raise AssertionError("never called with an invalid payload")

    await (await system.roles.start_participant(payments_with(charge))).wait_ready()
    reply = await system.client.call(system.client.command(
        "payments.charge", {"customer_id": "c-1", "amount_cents": "lots"}, str(uuid.uuid4())
    ))

    assert reply.outcome == "failure"
    assert reply.payload["reason"].startswith("invalid payments.charge payload: amount_cents:")


async def test_a_typed_refusal_carries_its_details_and_a_wrong_one_says_so(
    system: Stack,
) -> None:
    async def check(ctx: CommandContext, payload: ChargeCustomer) -> Credit:
        if payload.amount_cents > 100:
            raise Rejection.of("too much", Short(requested_cents=payload.amount_cents,
                                                 available_cents=100))
        raise Rejection("no idea", available="plenty")

    await (await system.roles.start_participant(payments_with(check, CHECK))).wait_ready()
    refused = await system.client.call(system.client.command(
        "payments.check", {"customer_id": "c-1", "amount_cents": 500}, str(uuid.uuid4())
    ))
    wrong = await system.client.call(system.client.command(
        "payments.check", {"customer_id": "c-1", "amount_cents": 5}, str(uuid.uuid4())
    ))

    assert refused.outcome == "failure"
    assert refused.payload == {
        "reason": "too much", "requested_cents": 500, "available_cents": 100,
    }
    assert wrong.outcome == "failure"
    assert wrong.payload["reason"].startswith(
        "no idea (payments.check refusal does not match Short: requested_cents: Field required"
    )
