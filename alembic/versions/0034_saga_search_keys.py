"""Search by what operators see: the saga_search_keys table (business keys a saga declares,
stored when it starts) and an index for saga id prefixes on PostgreSQL. Sagas started before
this revision have no keys.

Revision ID: 0034_saga_search_keys
Revises: 0033_console_sessions
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034_saga_search_keys"
down_revision: str | Sequence[str] | None = "0033_console_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "saga_search_keys",
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "name", name=op.f("pk_saga_search_keys")),
    )
    op.create_index("ix_saga_search_keys_value_name", "saga_search_keys", ["value", "name"])
    # Bytewise order on PostgreSQL whatever the collation; empty on SQLite, whose primary key
    # already serves a prefix range (console/models.py).
    op.create_index(
        "ix_saga_instances_id_prefix",
        "saga_instances",
        ["id"],
        postgresql_ops={"id": "varchar_pattern_ops"},
        sqlite_where=sa.false(),
    )


def downgrade() -> None:
    op.drop_index("ix_saga_instances_id_prefix", table_name="saga_instances")
    op.drop_index("ix_saga_search_keys_value_name", table_name="saga_search_keys")
    op.drop_table("saga_search_keys")
