"""The operator audit trail: one row per retry/skip/abort/resume an operator asked for.

Revision ID: 0031_operator_actions
Revises: 0030_console
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0031_operator_actions"
down_revision: str | Sequence[str] | None = "0030_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "operator_actions",
        sa.Column("id", BigIdType, autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("params", JSONType, nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    op.create_index("ix_operator_actions_saga_id_id", "operator_actions", ["saga_id", "id"])
    op.create_index("ix_operator_actions_created_at", "operator_actions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_operator_actions_created_at", table_name="operator_actions")
    op.drop_index("ix_operator_actions_saga_id_id", table_name="operator_actions")
    op.drop_table("operator_actions")
