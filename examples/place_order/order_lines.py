"""The typed pieces of an order that several example services and the saga share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

# Bounds that keep every value inside a 64-bit column, so absurd input is a clear rejection and
# never a database error.
MAX_QUANTITY = 1_000_000_000
MAX_CENTS = 10**15
MAX_ITEMS = 50
ID_MAX_LENGTH = 200

Identifier = Annotated[StrictStr, Field(min_length=1, max_length=ID_MAX_LENGTH)]
Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
Cents = Annotated[StrictInt, Field(ge=0, le=MAX_CENTS)]


class OrderLine(BaseModel):
    """One line of an order: `quantity` units of `sku`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Identifier
    quantity: Quantity


def units_by_sku(lines: list[OrderLine]) -> dict[str, int]:
    """Quantities per sku, lines of the same sku added up, in sku order (the order rows are
    locked in, so concurrent reservations never deadlock)."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return dict(sorted(totals.items()))
