"""`sagaway seed`: the example services' starting data — customers with credit, skus with stock.

Defaults: customers `c-1` … `c-1000` with 1,000,000 cents of credit each (payments database),
skus `sku-1` … `sku-100` with 1,000,000 units each (inventory database). Idempotent: rows that
exist are left as they are (a second seed never refills credit or stock that orders used).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from examples.place_order.models import accounts, stock
from sagaway.storage.database import describe_database

DEFAULT_CUSTOMERS = 1000
DEFAULT_CREDIT_CENTS = 1_000_000
DEFAULT_SKUS = 100
DEFAULT_UNITS = 1_000_000
CHUNK = 500


def customer_id(number: int) -> str:
    return f"c-{number}"


def sku(number: int) -> str:
    return f"sku-{number}"


@dataclass(frozen=True)
class SeedResult:
    """How many rows one seeding added, and how many were there already."""

    what: str
    database: str
    added: int
    existing: int

    def summary(self) -> str:
        return f"{self.what}: added {self.added}, {self.existing} already there ({self.database})"


def _insert_missing(conn: AsyncConnection, table: sa.Table) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"seeding does not support the {dialect} dialect")


async def _insert(engine: AsyncEngine, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    added = 0
    async with engine.begin() as conn:
        statement = _insert_missing(conn, table)
        for start in range(0, len(rows), CHUNK):
            # One multi-row INSERT per chunk: its rowcount is the rows actually added.
            chunk = rows[start : start + CHUNK]
            result = await conn.execute(statement.values(chunk))
            added += max(int(result.rowcount or 0), 0)
    return added


async def seed_payments(
    engine: AsyncEngine,
    customers: int = DEFAULT_CUSTOMERS,
    credit_cents: int = DEFAULT_CREDIT_CENTS,
) -> SeedResult:
    """Accounts `c-1` … `c-<customers>` with `credit_cents` each, unless they exist."""
    now = datetime.now(UTC)
    rows = [
        {
            "customer_id": customer_id(n),
            "initial_credit_cents": credit_cents,
            "credit_cents": credit_cents,
            "updated_at": now,
        }
        for n in range(1, customers + 1)
    ]
    added = await _insert(engine, accounts, rows)
    return SeedResult("customers", _describe(engine), added, customers - added)


async def seed_inventory(
    engine: AsyncEngine, skus: int = DEFAULT_SKUS, units: int = DEFAULT_UNITS
) -> SeedResult:
    """Stock `sku-1` … `sku-<skus>` with `units` available each, unless they exist."""
    now = datetime.now(UTC)
    rows = [
        {"sku": sku(n), "initial": units, "available": units, "reserved": 0, "updated_at": now}
        for n in range(1, skus + 1)
    ]
    added = await _insert(engine, stock, rows)
    return SeedResult("skus", _describe(engine), added, skus - added)


def _describe(engine: AsyncEngine) -> str:
    return describe_database(engine.url)


__all__ = [
    "DEFAULT_CREDIT_CENTS",
    "DEFAULT_CUSTOMERS",
    "DEFAULT_SKUS",
    "DEFAULT_UNITS",
    "SeedResult",
    "customer_id",
    "seed_inventory",
    "seed_payments",
    "sku",
]
