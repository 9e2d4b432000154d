"""The `place-order` saga: reserve the stock, charge the customer, schedule the shipment.

`shipping.schedule` is the pivot (the last step, no compensation): if it refuses, the charge is
refunded and the stock released, newest first; once it succeeded, the order is complete.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

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


Data = dict[str, Any]


def _reserve_payload(data: Data) -> Data:
    return {"items": data["items"]}


def _reserved(data: Data, reply: Data) -> Data:
    return {**data, "reservation_id": reply["reservation_id"]}


def _release_payload(data: Data) -> Data:
    return {"reservation_id": data.get("reservation_id")}


def _charge_payload(data: Data) -> Data:
    return {"customer_id": data["customer_id"], "amount_cents": data["total_cents"]}


def _charged(data: Data, reply: Data) -> Data:
    return {**data, "payment_id": reply["payment_id"]}


def _refund_payload(data: Data) -> Data:
    return {"customer_id": data["customer_id"], "payment_id": data.get("payment_id")}


def _shipment_payload(data: Data) -> Data:
    return {"customer_id": data["customer_id"], "country": data["country"], "items": data["items"]}


def _scheduled(data: Data, reply: Data) -> Data:
    return {**data, "shipment_id": reply["shipment_id"]}


def _result(data: Data) -> Data:
    return {
        "reservation_id": data["reservation_id"],
        "payment_id": data["payment_id"],
        "shipment_id": data["shipment_id"],
        "customer_id": data["customer_id"],
        "total_cents": data["total_cents"],
    }


def define_place_order(
    *, timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES
) -> SagaDefinition:
    """The definition, with every step's reply timeout and re-sends as given (tests shorten
    them; the registered `place_order` uses the defaults)."""
    return saga(
        "place-order",
        version=1,
        input=PlaceOrder,
        description="Reserve stock, charge the customer, schedule the shipment (the pivot).",
        steps=[
            step(
                "reserve-stock",
                invoke="inventory.reserve",
                payload=_reserve_payload,
                on_reply=_reserved,
                compensate=compensation("inventory.release", payload=_release_payload),
                timeout=timeout,
                retries=retries,
            ),
            step(
                "charge-payment",
                invoke="payments.charge",
                payload=_charge_payload,
                on_reply=_charged,
                compensate=compensation("payments.refund", payload=_refund_payload),
                timeout=timeout,
                retries=retries,
            ),
            step(
                "schedule-shipping",
                invoke="shipping.schedule",
                payload=_shipment_payload,
                on_reply=_scheduled,
                timeout=timeout,
                retries=retries,
            ),
        ],
        result=_result,
    )


place_order = define_place_order()
