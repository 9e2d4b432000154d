"""The example services' business tables: inventory stock and reservations, payment accounts and
charges, shipments (examples/place_order/models.py).

Revision ID: 0010_examples
Revises: 0002_relay
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_examples"
down_revision: str | Sequence[str] | None = "0002_relay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inventory_stock",
        sa.Column("sku", sa.String(length=200), nullable=False),
        sa.Column("initial", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_inventory_stock_available"),
        sa.CheckConstraint("reserved >= 0", name="ck_inventory_stock_reserved"),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_inventory_stock")),
    )
    op.create_table(
        "inventory_reservations",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("reservation_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("items", _json(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_inventory_reservations")),
    )
    op.create_table(
        "payments_accounts",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("initial_credit_cents", sa.BigInteger(), nullable=False),
        sa.Column("credit_cents", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.CheckConstraint("credit_cents >= 0", name="ck_payments_accounts_credit_cents"),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_payments_accounts")),
    )
    op.create_table(
        "payments_charges",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("payment_id", sa.String(length=36), nullable=True),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_payments_charges")),
    )
    op.create_index("ix_payments_charges_customer_id", "payments_charges", ["customer_id"])
    op.create_table(
        "shipping_shipments",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("shipment_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("items", _json(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_shipping_shipments")),
    )


def downgrade() -> None:
    op.drop_table("shipping_shipments")
    op.drop_index("ix_payments_charges_customer_id", table_name="payments_charges")
    op.drop_table("payments_charges")
    op.drop_table("payments_accounts")
    op.drop_table("inventory_reservations")
    op.drop_table("inventory_stock")
