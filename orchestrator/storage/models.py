"""The tables of every Sagaway database (DESIGN §3), as SQLAlchemy 2 declarative models.

`Base.metadata` is what Alembic compares against; hot paths use the module-level Core
`Table` handles (`saga_instances`, `outbox`, ...) rather than the ORM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact); plain JSON text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id is INTEGER there.
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that stores UTC and always returns aware UTC datetimes.

    PostgreSQL keeps the zone itself; SQLite stores text without one, so values are turned to
    UTC before they are written (text order is then time order, which timers rely on) and read
    back as UTC. A naive datetime is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Timestamps are always stored in UTC.
Timestamp = UtcDateTime()

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; constraint names follow NAMING_CONVENTION so migrations can name them."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


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


class Outbox(Base):
    """A message to publish, written in the same transaction as the change that causes it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(sa.String(300), nullable=False)
    key: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    # Header name → text value.
    headers: Mapped[Any] = mapped_column(JSONType, nullable=False)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (sa.Index("ix_outbox_published_at", "published_at", "id"),)


class Inbox(Base):
    """A message already handled by a consumer, with the reply to send again on redelivery."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    reply: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


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


class Request(Base):
    """One HTTP request the gateway accepted; its id is the correlation id of the saga."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    saga_type: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    route: Mapped[str] = mapped_column(sa.String(300), nullable=False)
    # sync | async | callback
    mode: Mapped[str] = mapped_column(sa.String(10), nullable=False)
    reply_to: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(300), nullable=True, unique=True)
    body_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    principal: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    gateway_id: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    # accepted | completed | compensated | failed
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (sa.Index("ix_requests_status_received_at", "status", "received_at"),)


saga_instances: sa.Table = SagaInstance.__table__  # type: ignore[assignment]
saga_steps: sa.Table = SagaStep.__table__  # type: ignore[assignment]
outbox: sa.Table = Outbox.__table__  # type: ignore[assignment]
inbox: sa.Table = Inbox.__table__  # type: ignore[assignment]
timers: sa.Table = Timer.__table__  # type: ignore[assignment]
requests: sa.Table = Request.__table__  # type: ignore[assignment]

# The same handles under `<name>_table`, for modules whose own names would clash.
saga_instances_table = saga_instances
saga_steps_table = saga_steps
outbox_table = outbox
inbox_table = inbox
timers_table = timers
requests_table = requests
