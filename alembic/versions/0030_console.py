"""The console: its dead_letters table, and indexes for the saga listing and the saga page.

Revision ID: 0030_console
Revises: 0011_gateway
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0030_console"
down_revision: str | Sequence[str] | None = "0011_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", BigIdType, autoincrement=True, nullable=False),
        sa.Column("dlq_topic", sa.String(length=300), nullable=False),
        sa.Column("dlq_partition", sa.Integer(), nullable=False),
        sa.Column("dlq_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_topic", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.Column("headers", JSONType, nullable=False),
        sa.Column("value_text", sa.Text(), nullable=False),
        sa.Column("value_b64", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint(
            "dlq_topic",
            "dlq_partition",
            "dlq_offset",
            name=op.f("uq_dead_letters_dlq_topic_dlq_partition_dlq_offset"),
        ),
    )
    op.create_index("ix_dead_letters_status_id", "dead_letters", ["status", "id"])
    op.create_index(
        "ix_saga_instances_status_created_at_id",
        "saga_instances",
        ["status", "created_at", "id"],
    )
    op.create_index(
        "ix_saga_instances_saga_type_created_at_id",
        "saga_instances",
        ["saga_type", "created_at", "id"],
    )
    op.create_index("ix_outbox_key", "outbox", ["key"])


def downgrade() -> None:
    op.drop_index("ix_outbox_key", table_name="outbox")
    op.drop_index("ix_saga_instances_saga_type_created_at_id", table_name="saga_instances")
    op.drop_index("ix_saga_instances_status_created_at_id", table_name="saga_instances")
    op.drop_index("ix_dead_letters_status_id", table_name="dead_letters")
    op.drop_table("dead_letters")
