"""The outbox table, written inside business transactions, and the relays' own table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from sagaway.storage.models import Base, BigIdType, JSONType, Timestamp


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


class OutboxRelay(Base):
    """One relay of this database: a WAL slot (name = slot) or the poller ("poll")."""

    __tablename__ = "outbox_relays"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    # wal | poll
    mode: Mapped[str] = mapped_column(sa.String(10), nullable=False)
    # WAL: the rows committed before the slot existed have been published.
    snapshot_done: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    # host:pid of the instance that holds the slot (the active one, not the standby).
    owner: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # Commit → broker-ack time of the last heartbeat row.
    heartbeat_lag_s: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    confirmed_lsn: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


outbox: sa.Table = Outbox.__table__  # type: ignore[assignment]
outbox_relays: sa.Table = OutboxRelay.__table__  # type: ignore[assignment]
