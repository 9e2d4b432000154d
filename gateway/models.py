"""The gateway's own table (migration 0011_gateway): callback deliveries waiting to be POSTed.

The `requests` table itself is in `orchestrator.storage.models`; this one is registered on the
same declarative Base so one migration history covers every database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.storage.models import Base, BigIdType, JSONType, Timestamp


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
