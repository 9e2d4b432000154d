"""The `place-order` saga: reserve the stock, charge the customer, schedule the shipment.

`shipping.schedule` is the pivot (`pivot=True`, the last step, no compensation): if it refuses,
the charge is refunded and the stock released, newest first; once it succeeded, the order is
complete.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from examples.place_order.contracts import (
    CHARGE,
    REFUND,
    RELEASE,
    RESERVE,
    SCHEDULE,
    ChargeCustomer,
    Charged,
    RefundCharge,
    ReleaseReservation,
    Reserved,
    ReserveItems,
    Scheduled,
    ScheduleShipment,
)
from examples.place_order.countries import is_country_code
from examples.place_order.order_lines import MAX_ITEMS, Cents, Identifier, OrderLine
from orchestrator.dsl import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    SagaDefinition,
    compensation,
    saga,
    step,
)


def _country(code: str) -> str:
    if not is_country_code(code):
        raise ValueError(f"{code!r} is not an ISO 3166 alpha-2 country code (e.g. 'FR', 'US')")
    return code


class PlaceOrder(BaseModel):
    """The input of `place-order`."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    items: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_ITEMS)]
    total_cents: Cents
    # The Field comes before the validator: after it, pydantic leaves the pattern out of the
    # JSON schema that /openapi.json publishes.
    country: Annotated[
        StrictStr,
        Field(
            pattern=r"^[A-Z]{2}$",
            description="ISO 3166-1 alpha-2 code, upper case",
            examples=["FR"],
        ),
        AfterValidator(_country),
    ]


class OrderState(PlaceOrder):
    """The saga's data: the order, then what each step's reply added. Stored as JSON with the
    keys set so far (the same as the untyped saga stored), so sagas in flight carry on."""

    model_config = ConfigDict(extra="forbid")

    reservation_id: str | None = None
    payment_id: str | None = None
    shipment_id: str | None = None


class OrderPlaced(BaseModel):
    """The saga's result."""

    reservation_id: str | None
    payment_id: str | None
    shipment_id: str | None
    customer_id: str
    total_cents: int


def _reserve_payload(order: OrderState) -> ReserveItems:
    return ReserveItems(items=order.items)


def _reserved(order: OrderState, reply: Reserved) -> OrderState:
    return order.model_copy(update={"reservation_id": reply.reservation_id})


def _release_payload(order: OrderState) -> ReleaseReservation:
    return ReleaseReservation(reservation_id=order.reservation_id)


def _charge_payload(order: OrderState) -> ChargeCustomer:
    return ChargeCustomer(customer_id=order.customer_id, amount_cents=order.total_cents)


def _charged(order: OrderState, reply: Charged) -> OrderState:
    return order.model_copy(update={"payment_id": reply.payment_id})


def _refund_payload(order: OrderState) -> RefundCharge:
    return RefundCharge(customer_id=order.customer_id, payment_id=order.payment_id)


def _shipment_payload(order: OrderState) -> ScheduleShipment:
    return ScheduleShipment(customer_id=order.customer_id, country=order.country, items=order.items)


def _scheduled(order: OrderState, reply: Scheduled) -> OrderState:
    return order.model_copy(update={"shipment_id": reply.shipment_id})


def _result(order: OrderState) -> OrderPlaced:
    return OrderPlaced(
        reservation_id=order.reservation_id,
        payment_id=order.payment_id,
        shipment_id=order.shipment_id,
        customer_id=order.customer_id,
        total_cents=order.total_cents,
    )


def define_place_order(
    *, timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES
) -> SagaDefinition:
    """The definition, with the saga's reply timeout and re-sends (every step's) as given (tests
    shorten them; the registered `place_order` uses the defaults)."""
    return saga(
        "place-order",
        version=1,
        input=PlaceOrder,
        state=OrderState,
        description="Reserve stock, charge the customer, schedule the shipment (the pivot).",
        search_keys=("customer_id",),
        timeout=timeout,
        retries=retries,
        steps=[
            step(
                "reserve-stock",
                RESERVE,
                payload=_reserve_payload,
                on_reply=_reserved,
                compensate=compensation(RELEASE, payload=_release_payload),
            ),
            step(
                "charge-payment",
                CHARGE,
                payload=_charge_payload,
                on_reply=_charged,
                compensate=compensation(REFUND, payload=_refund_payload),
            ),
            step(
                "schedule-shipping",
                SCHEDULE,
                payload=_shipment_payload,
                on_reply=_scheduled,
                pivot=True,
            ),
        ],
        result=_result,
    )


place_order = define_place_order()
