"""The gateway's tables: one row per accepted HTTP request (its id is the saga's correlation
id), and the callback deliveries waiting to be POSTed (migration 0011_gateway)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sagaway.storage.models import Base, BigIdType, JSONType, Timestamp


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


class Callback(Base):
    """One final result to POST to a client's callback URL; written in the transaction that
    stores the result, so a crash between storing and sending loses nothing."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(sa.String(36), nullable=False)
    url: Mapped[str] = mapped_column(sa.String(2000), nullable=False)
    # The exact JSON document POSTed (and signed), fixed when the result was stored.
    body: Mapped[Any] = mapped_column(JSONType, nullable=False)
    # pending | delivered | failed (gave up after callback_max_attempts)
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # When the next try is due; a sender claims a row by moving this past its own try.
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The W3C traceparent of the final reply's span (0032): each POST is a child span of it.
    traceparent: Mapped[str | None] = mapped_column(sa.String(55), nullable=True)

    __table_args__ = (
        sa.Index("ix_callbacks_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_callbacks_request_id", "request_id"),
    )


callbacks: sa.Table = Callback.__table__  # type: ignore[assignment]
requests: sa.Table = Request.__table__  # type: ignore[assignment]
