"""Every command of `place-order`, declared once: the saga builds these payloads and reads these
replies, the inventory, payments and shipping services handle them (docs/sagas.md, "Command
contracts"). The field names are the JSON the services exchange: renaming one changes the wire.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from examples.place_order.countries import is_country_code
from examples.place_order.order_lines import MAX_ITEMS, Cents, Identifier, OrderLine
from orchestrator.dsl import Command


def _country(code: str) -> str:
    if not is_country_code(code):
        raise ValueError(f"{code!r} is not an ISO 3166 alpha-2 country code (e.g. 'FR', 'US')")
    return code


CountryCode = Annotated[StrictStr, AfterValidator(_country)]
OrderLines = Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_ITEMS)]


class Request(BaseModel):
    """A command's payload: fields a service does not know are ignored, so a saga may send
    more than an older service reads."""

    model_config = ConfigDict(extra="ignore")


# -- inventory -------------------------------------------------------------------------------


class ReserveItems(Request):
    """`inventory.reserve`: the order lines to take out of available stock."""

    items: OrderLines


class Reserved(BaseModel):
    """The order's stock is held: `units` in all, under `reservation_id`. (Only what the saga
    reads is required: an operator's Skip gives just that.)"""

    reservation_id: str
    units: int | None = None


class ReleaseReservation(Request):
    """`inventory.release`: the order is the saga; the reservation id is informative only."""

    reservation_id: str | None = None


class Released(BaseModel):
    """The order's stock is back; `tombstone`: the release came before any reserve."""

    reservation_id: str | None
    released_units: int
    tombstone: bool = False


RESERVE = Command(
    "inventory.reserve", payload=ReserveItems, reply=Reserved,
    description="Hold every line of the order, or none (refused naming the sku).",
)
RELEASE = Command(
    "inventory.release", payload=ReleaseReservation, reply=Released,
    description="Give the order's stock back (idempotent; before its reserve, a tombstone).",
)


# -- payments --------------------------------------------------------------------------------


class ChargeCustomer(Request):
    """`payments.charge`: take `amount_cents` from `customer_id`'s credit."""

    customer_id: Identifier
    amount_cents: Cents


class Charged(BaseModel):
    """The order is paid: `amount_cents` under `payment_id`."""

    payment_id: str
    amount_cents: int | None = None


class RefundCharge(Request):
    """`payments.refund`: the order is the saga; the customer is recorded on a tombstone."""

    customer_id: Identifier | None = None
    payment_id: str | None = None


class Refunded(BaseModel):
    """The order's charge is given back; `tombstone`: the refund came before any charge."""

    payment_id: str | None
    refunded_cents: int
    tombstone: bool = False


CHARGE = Command(
    "payments.charge", payload=ChargeCustomer, reply=Charged,
    description="Take the order total from the customer's credit.",
)
REFUND = Command(
    "payments.refund", payload=RefundCharge, reply=Refunded,
    description="Give the order's charge back (idempotent; before its charge, a tombstone).",
)


# -- shipping --------------------------------------------------------------------------------


class ScheduleShipment(Request):
    """`shipping.schedule`: what to send, to whom, in which country."""

    customer_id: Identifier | None = None
    country: CountryCode
    items: OrderLines


class Scheduled(BaseModel):
    """The order's shipment exists (one per order)."""

    shipment_id: str
    country: str | None = None


SCHEDULE = Command(
    "shipping.schedule", payload=ScheduleShipment, reply=Scheduled,
    description="Create the order's shipment, unless its country is refused.",
)

ALL = (RESERVE, RELEASE, CHARGE, REFUND, SCHEDULE)
