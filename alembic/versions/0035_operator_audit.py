"""The system-wide audit: an operator action may concern no saga (a dead letter, a bulk action,
a session), so `operator_actions.saga_id` becomes nullable and a target kind and id name what it
concerned; indexes for the audit page's filters; a dead letter links to the letter it replays.

Revision ID: 0035_operator_audit
Revises: 0034_saga_search_keys
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_operator_audit"
down_revision: str | Sequence[str] | None = "0034_saga_search_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEAD_LETTER_ACTIONS = ("replay-dlq", "discard-dlq")
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _file_dead_letter_actions_under_their_letter() -> None:
    """Existing replay/discard rows: their target is the letter; their saga only if it exists."""
    conn = op.get_bind()
    actions = sa.table(
        "operator_actions",
        sa.column("id", sa.BigInteger),
        sa.column("saga_id", sa.String),
        sa.column("action", sa.String),
        sa.column("params", sa.JSON),
        sa.column("target_kind", sa.String),
        sa.column("target_id", sa.String),
    )
    sagas = sa.table("saga_instances", sa.column("id", sa.String))
    rows = conn.execute(
        sa.select(actions.c.id, actions.c.saga_id, actions.c.params).where(
            actions.c.action.in_(DEAD_LETTER_ACTIONS)
        )
    ).all()
    for row_id, saga_id, params in rows:
        letter = params.get("dead_letter_id") if isinstance(params, dict) else None
        exists = saga_id and conn.scalar(sa.select(sagas.c.id).where(sagas.c.id == saga_id))
        conn.execute(
            actions.update()
            .where(actions.c.id == row_id)
            .values(
                target_kind="dead-letter",
                target_id=None if letter is None else str(letter),
                saga_id=saga_id if exists else None,
            )
        )


def upgrade() -> None:
    with op.batch_alter_table("operator_actions") as batch:
        batch.alter_column("saga_id", existing_type=sa.String(length=36), nullable=True)
        batch.add_column(sa.Column("target_kind", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("target_id", sa.String(length=200), nullable=True))
    op.create_index("ix_operator_actions_actor_id", "operator_actions", ["actor", "id"])
    op.create_index("ix_operator_actions_action_id", "operator_actions", ["action", "id"])
    op.create_index(
        "ix_operator_actions_target", "operator_actions", ["target_kind", "target_id"]
    )
    _file_dead_letter_actions_under_their_letter()
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("replay_of", BigIdType, nullable=True))
    op.create_index("ix_dead_letters_replay_of", "dead_letters", ["replay_of"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_replay_of", table_name="dead_letters")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("replay_of")
    op.drop_index("ix_operator_actions_target", table_name="operator_actions")
    op.drop_index("ix_operator_actions_action_id", table_name="operator_actions")
    op.drop_index("ix_operator_actions_actor_id", table_name="operator_actions")
    op.execute("UPDATE operator_actions SET saga_id = '' WHERE saga_id IS NULL")
    with op.batch_alter_table("operator_actions") as batch:
        batch.drop_column("target_id")
        batch.drop_column("target_kind")
        batch.alter_column("saga_id", existing_type=sa.String(length=36), nullable=False)
