"""The initial tables: sagas, their steps, outbox, inbox, timers and gateway requests.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26

Never edit this file once committed: add a revision chained after it instead.
Types are spelled out here (not imported from the models) so the history stays fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _big_id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "saga_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("saga_type", sa.String(length=200), nullable=False),
        sa.Column("definition_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("current_step", sa.String(length=200), nullable=True),
        sa.Column("data", _json(), nullable=False),
        sa.Column("state", _json(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("failure", _json(), nullable=True),
        sa.Column("correlation_id", sa.String(length=100), nullable=False),
        sa.Column("reply_to", sa.String(length=2000), nullable=True),
        sa.Column("reply_mode", sa.String(length=10), nullable=True),
        sa.Column("principal", sa.String(length=200), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_instances")),
        sa.UniqueConstraint("correlation_id", name=op.f("uq_saga_instances_correlation_id")),
    )
    op.create_index(
        "ix_saga_instances_status_updated_at", "saga_instances", ["status", "updated_at"]
    )
    op.create_index(
        "ix_saga_instances_saga_type_status_created_at",
        "saga_instances",
        ["saga_type", "status", "created_at"],
    )
    op.create_index("ix_saga_instances_created_at_id", "saga_instances", ["created_at", "id"])
    op.create_index("ix_saga_instances_principal", "saga_instances", ["principal"])

    op.create_table(
        "saga_steps",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("step_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("command_message_id", sa.String(length=36), nullable=True),
        sa.Column("command", _json(), nullable=True),
        sa.Column("sent_at", _timestamp(), nullable=True),
        sa.Column("replied_at", _timestamp(), nullable=True),
        sa.Column("reply_payload", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_instances.id"],
            name=op.f("fk_saga_steps_saga_id_saga_instances"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_steps")),
    )
    op.create_index("ix_saga_steps_saga_id_id", "saga_steps", ["saga_id", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.Column("headers", _json(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("published_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at", "id"])

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("processed_at", _timestamp(), nullable=False),
        sa.Column("reply", _json(), nullable=True),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_inbox")),
    )

    op.create_table(
        "timers",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("due_at", _timestamp(), nullable=False),
        sa.Column("payload", _json(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timers")),
    )
    op.create_index("ix_timers_due_at", "timers", ["due_at"])
    op.create_index("ix_timers_saga_id", "timers", ["saga_id"])

    op.create_table(
        "requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("saga_type", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=300), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("reply_to", sa.String(length=2000), nullable=True),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.Column("body_hash", sa.String(length=64), nullable=True),
        sa.Column("principal", sa.String(length=200), nullable=True),
        sa.Column("gateway_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_requests_idempotency_key")),
    )
    op.create_index("ix_requests_status_received_at", "requests", ["status", "received_at"])


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_table("timers")
    op.drop_table("inbox")
    op.drop_table("outbox")
    op.drop_table("saga_steps")
    op.drop_table("saga_instances")
