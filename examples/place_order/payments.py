"""The `payments` example service: charge an order against the customer's credit, refund it.

Rules: `payments.charge` takes the order total from the customer's remaining credit, and rejects
an unknown customer or insufficient credit. `payments.refund` gives it back; it is idempotent,
and when it arrives before its charge it leaves a tombstone so the late charge is refused.
The order id is the saga id (the `saga-id` header).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from examples.place_order.contracts import (
    CHARGE,
    REFUND,
    ChargeCustomer,
    Charged,
    RefundCharge,
    Refunded,
)
from examples.place_order.models import accounts, charges
from participants.sdk import CommandContext, Participant, Rejection

__all__ = ["ChargeCustomer", "RefundCharge", "charge", "participant", "refund"]

CHARGED = "charged"
REFUNDED = "refunded"

participant = Participant("payments", "Customer credit: charge an order, refund it.")


# Built once, run with parameters: building a statement per call (and its cache key) cost SQLAlchemy
# more than the SQL it sends.
_CHARGE = sa.select(charges).where(charges.c.order_id == sa.bindparam("order_id")).with_for_update()
_TAKE_CREDIT = (
    sa.update(accounts)
    .where(
        accounts.c.customer_id == sa.bindparam("b_customer"),
        accounts.c.credit_cents >= sa.bindparam("b_amount"),
    )
    .values(
        credit_cents=accounts.c.credit_cents - sa.bindparam("b_amount"),
        updated_at=sa.bindparam("b_now"),
    )
)


async def _charge(conn: AsyncConnection, order_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(_CHARGE, {"order_id": order_id})).first()


@participant.handles(CHARGE)
async def charge(ctx: CommandContext, payload: ChargeCustomer) -> Charged:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    existing = await _charge(conn, order_id)
    if existing is not None:
        if existing.status == CHARGED:
            return Charged(payment_id=existing.payment_id, amount_cents=existing.amount_cents)
        raise Rejection(
            f"order {order_id} was already refunded; its late charge is refused",
            order_id=order_id,
        )
    customer, amount = payload.customer_id, payload.amount_cents
    now = datetime.now(UTC)
    taken = await conn.execute(
        _TAKE_CREDIT, {"b_customer": customer, "b_amount": amount, "b_now": now}
    )
    if taken.rowcount != 1:
        credit = await conn.scalar(
            sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == customer)
        )
        if credit is None:
            raise Rejection(f"unknown customer {customer}", customer_id=customer)
        raise Rejection(
            f"insufficient credit for {customer}: {amount} cents requested, {credit} available",
            customer_id=customer,
            requested_cents=amount,
            available_cents=credit,
        )
    payment_id = str(uuid.uuid4())
    await conn.execute(
        charges.insert(),
        {
            "order_id": order_id,
            "payment_id": payment_id,
            "customer_id": customer,
            "amount_cents": amount,
            "status": CHARGED,
            "created_at": now,
            "updated_at": now,
        },
    )
    return Charged(payment_id=payment_id, amount_cents=amount)


@participant.handles(REFUND)
async def refund(ctx: CommandContext, payload: RefundCharge) -> Refunded:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    now = datetime.now(UTC)
    existing = await _charge(conn, order_id)
    if existing is None:
        # The refund overtook its charge: remember it, so the charge is refused when it comes.
        await conn.execute(
            charges.insert().values(
                order_id=order_id,
                payment_id=None,
                customer_id=payload.customer_id,
                amount_cents=0,
                status=REFUNDED,
                created_at=now,
                updated_at=now,
            )
        )
        return Refunded(payment_id=None, refunded_cents=0, tombstone=True)
    if existing.status == REFUNDED:
        return Refunded(payment_id=existing.payment_id, refunded_cents=0)
    given_back = await conn.execute(
        sa.update(accounts)
        .where(accounts.c.customer_id == existing.customer_id)
        .values(credit_cents=accounts.c.credit_cents + existing.amount_cents, updated_at=now)
    )
    if given_back.rowcount != 1:
        raise RuntimeError(f"charged customer {existing.customer_id} has no account any more")
    await conn.execute(
        sa.update(charges)
        .where(charges.c.order_id == order_id)
        .values(status=REFUNDED, updated_at=now)
    )
    return Refunded(payment_id=existing.payment_id, refunded_cents=existing.amount_cents)
