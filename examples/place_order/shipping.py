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
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from examples.place_order.countries import is_country_code
from examples.place_order.models import shipments
from examples.place_order.order_lines import MAX_ITEMS, Identifier, OrderLine, units_by_sku
from examples.place_order.settings import ShippingSettings
from participants.sdk import CommandContext, Participant, Rejection

participant = Participant(
    "shipping", "Shipments: schedule an order's delivery.", settings=ShippingSettings
)

# Built once, run with parameters: building a statement per call (and its cache key) cost SQLAlchemy
# more than the SQL it sends.
_SHIPMENT = sa.select(shipments).where(shipments.c.order_id == sa.bindparam("order_id"))


def _country(code: str) -> str:
    if not is_country_code(code):
        raise ValueError(f"{code!r} is not an ISO 3166 alpha-2 country code (e.g. 'FR', 'US')")
    return code


CountryCode = Annotated[StrictStr, AfterValidator(_country)]


class ScheduleShipment(BaseModel):
    """`shipping.schedule`: what to send, to whom, in which country."""

    model_config = ConfigDict(extra="ignore")

    customer_id: Identifier | None = None
    country: CountryCode
    items: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_ITEMS)]


@participant.handles("shipping.schedule", payload=ScheduleShipment)
async def schedule(ctx: CommandContext, payload: ScheduleShipment) -> dict[str, Any]:
    order_id = ctx.require_saga_id()
    conn = ctx.conn
    existing = (await conn.execute(_SHIPMENT, {"order_id": order_id})).first()
    if existing is not None:
        return {"shipment_id": existing.shipment_id, "country": existing.country}
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
    return {"shipment_id": shipment_id, "country": payload.country}
