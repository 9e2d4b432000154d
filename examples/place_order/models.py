"""The example services' business tables (migration 0010_examples), on the shared declarative Base.

Every row of a forward command is keyed by the order (= saga id), which is what makes each command
idempotent and lets a compensation that arrives first leave a tombstone the late forward command
sees: `inventory_reservations.status = 'released'` or `payments_charges.status = 'refunded'` with
nothing behind it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sagaway.storage.models import Base, JSONType, Timestamp

ID_LENGTH = 200
ORDER_ID_LENGTH = 36


class Stock(Base):
    """One sku: `available + reserved = initial` at every commit."""

    __tablename__ = "inventory_stock"

    sku: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    initial: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    available: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    reserved: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (
        sa.CheckConstraint("available >= 0", name="ck_inventory_stock_available"),
        sa.CheckConstraint("reserved >= 0", name="ck_inventory_stock_reserved"),
    )


class Reservation(Base):
    """The stock one order holds. `released` with no `reservation_id` is a tombstone: the
    release came first, and the order's late reserve is refused."""

    __tablename__ = "inventory_reservations"

    order_id: Mapped[str] = mapped_column(sa.String(ORDER_ID_LENGTH), primary_key=True)
    reservation_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    # reserved | released
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    # [{"sku": ..., "quantity": ...}], one entry per sku
    items: Mapped[Any] = mapped_column(JSONType, nullable=False)
    units: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


class Account(Base):
    """A customer's credit: `credit_cents + charged (unrefunded) = initial_credit_cents`."""

    __tablename__ = "payments_accounts"

    customer_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    initial_credit_cents: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    credit_cents: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (
        sa.CheckConstraint("credit_cents >= 0", name="ck_payments_accounts_credit_cents"),
    )


class Charge(Base):
    """The charge of one order. `refunded` with no `payment_id` is a tombstone: the refund came
    first, and the order's late charge is refused."""

    __tablename__ = "payments_charges"

    order_id: Mapped[str] = mapped_column(sa.String(ORDER_ID_LENGTH), primary_key=True)
    payment_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    customer_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), nullable=True)
    amount_cents: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    # charged | refunded
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (sa.Index("ix_payments_charges_customer_id", "customer_id"),)


class Shipment(Base):
    """The shipment of one (completed) order."""

    __tablename__ = "shipping_shipments"

    order_id: Mapped[str] = mapped_column(sa.String(ORDER_ID_LENGTH), primary_key=True)
    shipment_id: Mapped[str] = mapped_column(sa.String(36), nullable=False)
    customer_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), nullable=True)
    country: Mapped[str] = mapped_column(sa.String(2), nullable=False)
    items: Mapped[Any] = mapped_column(JSONType, nullable=False)
    units: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


stock: sa.Table = Stock.__table__  # type: ignore[assignment]
reservations: sa.Table = Reservation.__table__  # type: ignore[assignment]
accounts: sa.Table = Account.__table__  # type: ignore[assignment]
charges: sa.Table = Charge.__table__  # type: ignore[assignment]
shipments: sa.Table = Shipment.__table__  # type: ignore[assignment]
