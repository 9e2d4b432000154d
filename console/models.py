"""The console's own tables (dead letters collected from `<topic>.dlq`; login sessions and lockouts)
and the indexes its saga listing needs, registered on the shared declarative Base (migrations
0030_console, 0033_console_sessions, 0034_saga_search_keys and
0035_operator_audit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.models import saga_instances
from sagaway.storage.models import Base, BigIdType, JSONType, Timestamp

# A listing filtered by status (or type) and ordered newest first, with the id as tie-breaker for
# keyset pagination, must walk one index in order instead of sorting a million rows.
ix_saga_instances_status_created_at_id = sa.Index(
    "ix_saga_instances_status_created_at_id",
    saga_instances.c.status,
    saga_instances.c.created_at,
    saga_instances.c.id,
)
ix_saga_instances_saga_type_created_at_id = sa.Index(
    "ix_saga_instances_saga_type_created_at_id",
    saga_instances.c.saga_type,
    saga_instances.c.created_at,
    saga_instances.c.id,
)
# A saga id prefix (the 8-character short id every table shows) on PostgreSQL: the primary key's
# index follows the database's collation, which a prefix range cannot rely on; pattern_ops
# orders bytewise. SQLite ranges over its primary key (binary order) and keeps this one empty.
ix_saga_instances_id_prefix = sa.Index(
    "ix_saga_instances_id_prefix",
    saga_instances.c.id,
    postgresql_ops={"id": "varchar_pattern_ops"},
    sqlite_where=sa.false(),
)


# The gateway's `requests` table, as far as the overview reads it. The console and the gateway
# are independent faces: they share this table's columns (docs/architecture.md), not code.
gateway_requests = sa.table(
    "requests",
    sa.column("id", sa.String),
    sa.column("saga_type", sa.String),
    sa.column("mode", sa.String),
    sa.column("gateway_id", sa.String),
    sa.column("principal", sa.String),
    sa.column("status", sa.String),
    sa.column("received_at", Timestamp),
)


class DeadLetter(Base):
    """One record read from a `<topic>.dlq` topic, kept until an operator replays or discards it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    # Where the console read it: the DLQ topic, partition and offset (unique: reading twice is a
    # no-op).
    dlq_topic: Mapped[str] = mapped_column(sa.String(300), nullable=False)
    dlq_partition: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    dlq_offset: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    # Where it failed: replay produces it back there.
    source_topic: Mapped[str] = mapped_column(sa.String(300), nullable=False)
    key: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    # The original headers (dlq-* ones included), name → text.
    headers: Mapped[Any] = mapped_column(JSONType, nullable=False)
    # The value as text (UTF-8, invalid bytes replaced) and base64 of the exact bytes, for replay.
    value_text: Mapped[str] = mapped_column(sa.Text, nullable=False)
    value_b64: Mapped[str] = mapped_column(sa.Text, nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    # new | replayed | discarded
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    resolved_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The letter this one is a replay of (the replay carried its id in a `replay-of` header):
    # a replayed letter that failed again links to its new copy, and back.
    replay_of: Mapped[int | None] = mapped_column(BigIdType, nullable=True)

    __table_args__ = (
        sa.UniqueConstraint("dlq_topic", "dlq_partition", "dlq_offset"),
        sa.Index("ix_dead_letters_status_id", "status", "id"),
        sa.Index("ix_dead_letters_replay_of", "replay_of"),
    )


dead_letters: sa.Table = DeadLetter.__table__  # type: ignore[assignment]


class ConsoleSession(Base):
    """One console login: the cookie carries a random id, this row holds only its SHA-256, so a
    leaked table cannot be replayed. A session ends when it expires, is revoked (logout, an
    operator), or its user's password hash changes (`credential` no longer matches)."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    # A digest of the password hash the user logged in under.
    credential: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    address: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)

    __table_args__ = (
        sa.Index("ix_console_sessions_user_name", "user_name"),
        sa.Index("ix_console_sessions_expires_at", "expires_at"),
    )


class LoginLock(Base):
    """Recent failed logins of one user name or one client address, and its lockout: `locked_until`
    refuses logins before any password is hashed; `lockouts` doubles each further lockout."""

    __tablename__ = "console_login_locks"

    # "user" or "address"
    scope: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    lockouts: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    last_failure_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


console_sessions: sa.Table = ConsoleSession.__table__  # type: ignore[assignment]
login_locks: sa.Table = LoginLock.__table__  # type: ignore[assignment]
