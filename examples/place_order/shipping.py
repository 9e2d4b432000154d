"""The `shipping` example service: schedule an order's shipment, unless the country is refused.

Rules: `shipping.schedule` creates one shipment per order (a repeated command returns the same
one) and rejects the countries in `ShippingSettings.shipping_blocked_countries` (`AQ` by
default, SAGAWAY_SHIPPING_BLOCKED_COUNTRIES). It is the pivot of `place-order`: once scheduled,
the order only goes forward, so it has no undo.
The order id is the saga id (the `saga-id` header).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from examples.place_order.contracts import SCHEDULE, Scheduled, ScheduleShipment
from examples.place_order.models import shipments
from examples.place_order.order_lines import units_by_sku
from examples.place_order.settings import ShippingSettings
from participants.sdk import CommandContext, Participant, Rejection

__all__ = ["ScheduleShipment", "participant", "schedule"]

participant = Participant(
    "shipping", "Shipments: schedule an order's delivery.", settings=ShippingSettings
)

# Built once, run with parameters: building a statement per call (and its cache key) cost SQLAlchemy
# more than the SQL it sends.
_SHIPMENT = sa.select(shipments).where(shipments.c.order_id == sa.bindparam("order_id"))


@participant.handles(SCHEDULE)
async def schedule(ctx: CommandContext, payload: ScheduleShipment) -> Scheduled:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    existing = (await conn.execute(_SHIPMENT, {"order_id": order_id})).first()
    if existing is not None:
        return Scheduled(shipment_id=existing.shipment_id, country=existing.country)
    settings: ShippingSettings = ctx.settings
    blocked = {code.upper() for code in settings.shipping_blocked_countries}
    if payload.country in blocked:
        raise Rejection(f"we do not ship to {payload.country}", country=payload.country)
    lines = units_by_sku(payload.items)
    shipment_id = str(uuid.uuid4())
    await conn.execute(
        shipments.insert(),
        {
            "order_id": order_id,
            "shipment_id": shipment_id,
            "customer_id": payload.customer_id,
            "country": payload.country,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines.items()],
            "units": sum(lines.values()),
            "created_at": datetime.now(UTC),
        },
    )
    return Scheduled(shipment_id=shipment_id, country=payload.country)
