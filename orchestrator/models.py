"""The orchestrator's tables: sagas, their step attempts, their timers, their search keys, and
the operator audit trail (every retry, skip, abort or resume an operator asked for, applied or
refused, and who asked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sagaway.storage.models import Base, BigIdType, JSONType, Timestamp


class SagaInstance(Base):
    """One saga: where it stands, its data, and how to answer its originator."""

    __tablename__ = "saga_instances"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    saga_type: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    definition_version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # running | compensating | completed | compensated | failed
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    current_step: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    data: Mapped[Any] = mapped_column(JSONType, nullable=False)
    # The engine's own bookkeeping (attempts, parallel branches, ...), apart from business data.
    state: Mapped[Any] = mapped_column(JSONType, nullable=False)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    # {"step", "reason"} once compensated or failed.
    failure: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    correlation_id: Mapped[str] = mapped_column(sa.String(100), nullable=False, unique=True)
    reply_to: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)
    reply_mode: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    principal: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    # Optimistic lock: every update checks and bumps it.
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)

    __table_args__ = (
        sa.Index("ix_saga_instances_status_updated_at", "status", "updated_at"),
        sa.Index(
            "ix_saga_instances_saga_type_status_created_at", "saga_type", "status", "created_at"
        ),
        sa.Index("ix_saga_instances_created_at_id", "created_at", "id"),
        sa.Index("ix_saga_instances_principal", "principal"),
    )


class SagaStep(Base):
    """One attempt of a forward step or a compensation, with the command sent and the reply got."""

    __tablename__ = "saga_steps"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    saga_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("saga_instances.id"), nullable=False
    )
    step_name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    # forward | compensation
    kind: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    # sent | succeeded | failed | timed_out | ignored | skipped
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    attempt: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    command_message_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    command: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    replied_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    reply_payload: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)

    __table_args__ = (sa.Index("ix_saga_steps_saga_id_id", "saga_id", "id"),)


class Timer(Base):
    """A deadline: a step timeout or the end of a retry backoff."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    saga_id: Mapped[str] = mapped_column(sa.String(36), nullable=False)
    # timeout | backoff
    kind: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    step: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    attempt: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    due_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    payload: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (
        sa.Index("ix_timers_due_at", "due_at"),
        sa.Index("ix_timers_saga_id", "saga_id"),
    )


class SagaSearchKey(Base):
    """One business key a saga's definition declares (`saga(search_keys=...)`), stored from its
    input when it starts, so the console finds the saga by it (docs/console.md)."""

    __tablename__ = "saga_search_keys"

    saga_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(200), nullable=False)

    # The search box looks a value up under any key name: the value leads. On SQLite the rows
    # live in the primary key's b-tree, not in a rowid table beside it (migration 0036).
    __table_args__ = (
        sa.Index("ix_saga_search_keys_value_name", "value", "name"),
        {"sqlite_with_rowid": False},
    )


class OperatorAction(Base):
    """One operator action: on one saga, or on what `target_kind`/`target_id` name (a dead letter,
    a bulk action, a session) — then `saga_id` is set only when such a saga exists."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    saga_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    # retry | skip | abort | resume | replay-dlq | discard-dlq | bulk-<action> | ...
    action: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    # dead-letter | bulk | ...; None for an action on the saga `saga_id`.
    target_kind: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    target_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    step: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # What the operator supplied: the result of a skipped step, the reason of an abort.
    params: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    # applied | rejected
    outcome: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    # Why it was rejected, or the saga status it left.
    detail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (
        sa.Index("ix_operator_actions_saga_id_id", "saga_id", "id"),
        sa.Index("ix_operator_actions_created_at", "created_at"),
        sa.Index("ix_operator_actions_actor_id", "actor", "id"),
        sa.Index("ix_operator_actions_action_id", "action", "id"),
        sa.Index("ix_operator_actions_target", "target_kind", "target_id"),
    )


operator_actions: sa.Table = OperatorAction.__table__  # type: ignore[assignment]
saga_instances: sa.Table = SagaInstance.__table__  # type: ignore[assignment]
saga_search_keys: sa.Table = SagaSearchKey.__table__  # type: ignore[assignment]
saga_steps: sa.Table = SagaStep.__table__  # type: ignore[assignment]
timers: sa.Table = Timer.__table__  # type: ignore[assignment]
