"""A saga declared with `Command` contracts, for the AsyncAPI, diagram, `sagaway sagas` and
console tests (importable through SAGAWAY_SAGAS=tests.orchestrator.contract_sagas): a
compensated step, a parallel group, the pivot, a step after it, and one plain command name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.dsl import Backoff, Command, compensation, parallel, saga, step


class Parcel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parcel_id: str
    weight_g: int = Field(gt=0)


class Hold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parcel_id: str


class Held(BaseModel):
    hold_id: str = Field(description="The warehouse's id of the hold")
    shelf: int


class Unhold(BaseModel):
    hold_id: str


class Done(BaseModel):
    pass


class Notice(BaseModel):
    parcel_id: str


class Pay(BaseModel):
    parcel_id: str
    amount_cents: int


class Paid(BaseModel):
    payment_id: str


class NoFunds(BaseModel):
    missing_cents: int


HOLD = Command("warehouse.hold", payload=Hold, reply=Held, description="Hold the parcel")
UNHOLD = Command("warehouse.unhold", payload=Unhold, reply=Done)
NOTIFY = Command("mail.notify", payload=Notice, reply=Done)
UNNOTIFY = Command("mail.retract", payload=Notice, reply=Done)
PAY = Command("billing.pay", payload=Pay, reply=Paid, refusal=NoFunds)

FAST: dict[str, Any] = {"backoff": Backoff(initial=0.1, multiplier=2.0, max=1.0, jitter=0.0)}


def _held(data: dict[str, Any], reply: Held) -> dict[str, Any]:
    return {**data, "hold_id": reply.hold_id, "shelf": reply.shelf}


def _paid(data: dict[str, Any], reply: Paid) -> dict[str, Any]:
    return {**data, "payment_id": reply.payment_id}


ship_parcel = saga(
    "ship-parcel",
    version=1,
    input=Parcel,
    description="Hold a parcel, tell the customer, bill, print the label.",
    timeout=2.0,
    retries=2,
    steps=[
        step(
            "hold",
            HOLD,
            payload=lambda d: Hold(parcel_id=d["parcel_id"]),
            on_reply=_held,
            compensate=compensation(UNHOLD, payload=lambda d: Unhold(hold_id=d["hold_id"])),
            timeout=5.0,
            **FAST,
        ),
        parallel(
            "tell",
            step("notify", NOTIFY, payload=lambda d: Notice(parcel_id=d["parcel_id"]),
                 compensate=UNNOTIFY),
            step("log", "audit.record", compensate="audit.erase"),
        ),
        step(
            "pay",
            PAY,
            payload=lambda d: Pay(parcel_id=d["parcel_id"], amount_cents=d["weight_g"]),
            on_reply=_paid,
            pivot=True,
        ),
        step("label", "printer.label", retries=7),
    ],
)
