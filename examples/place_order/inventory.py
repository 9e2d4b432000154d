"""The `inventory` example service: reserve an order's stock (all lines or none), release it.

Rules: `inventory.reserve` takes every line of the order or nothing, and rejects naming the sku
that is unknown or short of stock. `inventory.release` gives the order's stock back; it is
idempotent, and when it arrives before its reserve (the reserve timed out, the saga compensated)
it leaves a tombstone so the late reserve is refused and nothing stays reserved.
The order id is the saga id (the `saga-id` header).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from examples.place_order.contracts import (
    RELEASE,
    RESERVE,
    Released,
    ReleaseReservation,
    Reserved,
    ReserveItems,
)
from examples.place_order.models import reservations, stock
from examples.place_order.order_lines import units_by_sku
from participants.sdk import CommandContext, Participant, Rejection

__all__ = ["ReleaseReservation", "ReserveItems", "participant", "release", "reserve"]

RESERVED = "reserved"
RELEASED = "released"

participant = Participant("inventory", "Stock per sku: reserve an order's lines, release them.")


# Built once, run with parameters: building a statement per call (and its cache key) cost SQLAlchemy
# more than the SQL it sends.
_RESERVATION = (
    sa.select(reservations)
    .where(reservations.c.order_id == sa.bindparam("order_id"))
    .with_for_update()
)
_TAKE_STOCK = (
    sa.update(stock)
    .where(stock.c.sku == sa.bindparam("b_sku"), stock.c.available >= sa.bindparam("b_quantity"))
    .values(
        available=stock.c.available - sa.bindparam("b_quantity"),
        reserved=stock.c.reserved + sa.bindparam("b_quantity"),
        updated_at=sa.bindparam("b_now"),
    )
)


async def _reservation(conn: AsyncConnection, order_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(_RESERVATION, {"order_id": order_id})).first()


@participant.handles(RESERVE)
async def reserve(ctx: CommandContext, payload: ReserveItems) -> Reserved:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    existing = await _reservation(conn, order_id)
    if existing is not None:
        if existing.status == RESERVED:
            return Reserved(reservation_id=existing.reservation_id, units=existing.units)
        raise Rejection(
            f"order {order_id} was already released; its late reserve is refused",
            order_id=order_id,
        )
    wanted = units_by_sku(payload.items)
    now = datetime.now(UTC)
    for sku, quantity in wanted.items():
        taken = await conn.execute(
            _TAKE_STOCK, {"b_sku": sku, "b_quantity": quantity, "b_now": now}
        )
        if taken.rowcount != 1:
            available = await conn.scalar(sa.select(stock.c.available).where(stock.c.sku == sku))
            if available is None:
                raise Rejection(f"unknown sku {sku}", sku=sku)
            raise Rejection(
                f"not enough stock of {sku}: {quantity} requested, {available} available",
                sku=sku,
                requested=quantity,
                available=available,
            )
    reservation_id = str(uuid.uuid4())
    units = sum(wanted.values())
    await conn.execute(
        reservations.insert(),
        {
            "order_id": order_id,
            "reservation_id": reservation_id,
            "status": RESERVED,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in wanted.items()],
            "units": units,
            "created_at": now,
            "updated_at": now,
        },
    )
    return Reserved(reservation_id=reservation_id, units=units)


@participant.handles(RELEASE)
async def release(ctx: CommandContext, payload: ReleaseReservation) -> Released:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    now = datetime.now(UTC)
    existing = await _reservation(conn, order_id)
    if existing is None:
        # The release overtook its reserve: remember it, so the reserve is refused when it comes.
        await conn.execute(
            reservations.insert().values(
                order_id=order_id,
                reservation_id=None,
                status=RELEASED,
                items=[],
                units=0,
                created_at=now,
                updated_at=now,
            )
        )
        return Released(reservation_id=None, released_units=0, tombstone=True)
    if existing.status == RELEASED:
        return Released(reservation_id=existing.reservation_id, released_units=0)
    for line in sorted(existing.items, key=lambda line: line["sku"]):
        given_back = await conn.execute(
            sa.update(stock)
            .where(stock.c.sku == line["sku"])
            .values(
                available=stock.c.available + line["quantity"],
                reserved=stock.c.reserved - line["quantity"],
                updated_at=now,
            )
        )
        if given_back.rowcount != 1:
            raise RuntimeError(f"reserved sku {line['sku']} has no stock row any more")
    await conn.execute(
        sa.update(reservations)
        .where(reservations.c.order_id == order_id)
        .values(status=RELEASED, updated_at=now)
    )
    return Released(reservation_id=existing.reservation_id, released_units=existing.units)
