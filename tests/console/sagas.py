"""A saga of the console tests' own, so that they do not depend on the examples' step names:
`book-trip` holds a seat, charges the card (both compensatable), then issues the ticket (pivot)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.dsl import compensation, saga, step

HOLD, CHARGE, ISSUE = "hold-seat", "charge-card", "issue-ticket"


class Trip(BaseModel):
    model_config = ConfigDict(extra="forbid")

    traveller: str
    seat: str
    price_cents: int


def _merge(data: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    return {**data, **reply}


def _data(data: dict[str, Any]) -> dict[str, Any]:
    return dict(data)


book_trip = saga(
    "book-trip",
    version=1,
    input=Trip,
    steps=[
        step(
            HOLD,
            invoke="seats.hold",
            payload=_data,
            on_reply=_merge,
            compensate=compensation("seats.release", payload=_data),
        ),
        step(
            CHARGE,
            invoke="cards.charge",
            payload=_data,
            on_reply=_merge,
            compensate=compensation("cards.refund", payload=_data),
        ),
        step(ISSUE, invoke="tickets.issue", payload=_data, on_reply=_merge, pivot=True),
    ],
)
