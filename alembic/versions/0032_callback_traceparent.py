"""callbacks.traceparent: the trace a callback delivery belongs to (the final reply's span), so
each POST is a span of the request's own trace and carries a `traceparent` header.

Revision ID: 0032_callback_traceparent
Revises: 0031_operator_actions
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_callback_traceparent"
down_revision: str | Sequence[str] | None = "0031_operator_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("callbacks") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callbacks") as batch:
        batch.drop_column("traceparent")
