"""The inbox: a consumer acts on a message once, and answers a redelivery with the same reply.

A handler's transaction holds the inbox row, the handler's business writes and (if it answers)
the reply in the outbox. On redelivery `claim` finds the row and hands back the stored reply so
the caller sends it again instead of running the handler twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from sagaway.messaging.envelope import EnvelopeError, Message
from sagaway.sqlite.direct import holding_inline_transaction, run_direct, run_many_direct
from sagaway.storage.database import json_text
from sagaway.storage.models import Base, JSONType, Timestamp, sqlite_timestamp_text


class Inbox(Base):
    """A message already handled by a consumer, with the reply to send again on redelivery."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    reply: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


inbox: sa.Table = Inbox.__table__  # type: ignore[assignment]

MAX_CONSUMER_LENGTH = 200
MAX_MESSAGE_ID_LENGTH = 36


class InboxError(ValueError):
    """The consumer name or message id cannot be recorded (empty or too long)."""


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The reply a consumer sent for a message: where it went and what it was."""

    topic: str
    message: Message

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "headers": self.message.headers(),
            "payload": self.message.payload,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredReply:
        """Raises EnvelopeError if the stored value is not a reply this module wrote."""
        if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
            raise EnvelopeError(f"stored inbox reply is malformed: {data!r:.200}")
        headers = data.get("headers")
        if not isinstance(headers, dict):
            raise EnvelopeError("stored inbox reply has no headers object")
        return cls(topic=data["topic"], message=Message.from_headers(headers, data.get("payload")))


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `claim`: `new` → run the handler; otherwise send `reply` again (if any)."""

    new: bool
    reply: StoredReply | None = None

    @property
    def duplicate(self) -> bool:
        return not self.new


def _check(consumer: str, message_id: str) -> None:
    if not consumer or len(consumer) > MAX_CONSUMER_LENGTH:
        raise InboxError(f"consumer must be 1–{MAX_CONSUMER_LENGTH} characters, got {consumer!r}")
    if not message_id or len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InboxError(
            f"message id must be 1–{MAX_MESSAGE_ID_LENGTH} characters, got {message_id!r}"
        )


# Built once per dialect and run with parameters (a statement built per message, and its cache
# key, cost SQLAlchemy more than the INSERT itself).
_INSERT_IGNORING_DUPLICATES = {
    "postgresql": postgresql.insert(inbox).on_conflict_do_nothing(
        index_elements=[inbox.c.consumer, inbox.c.message_id]
    ),
    "sqlite": sqlite.insert(inbox).on_conflict_do_nothing(
        index_elements=[inbox.c.consumer, inbox.c.message_id]
    ),
}
_STORED_REPLY = sa.select(inbox.c.reply).where(
    inbox.c.consumer == sa.bindparam("b_consumer"),
    inbox.c.message_id == sa.bindparam("b_message_id"),
)


_CLAIM_MANY = {
    dialect: statement.returning(inbox.c.message_id)
    for dialect, statement in _INSERT_IGNORING_DUPLICATES.items()
}


# The two statements of every handled message, on an inline SQLite transaction's own sqlite3
# connection (sagaway/sqlite/direct.py says why).
_DIRECT_CLAIM = (
    "INSERT INTO inbox (consumer, message_id, processed_at, reply) VALUES (?, ?, ?, NULL)"
    " ON CONFLICT (consumer, message_id) DO NOTHING"
)
_DIRECT_STORE_REPLY = "UPDATE inbox SET reply = ? WHERE consumer = ? AND message_id = ?"


def _for_dialect(statements: Mapping[str, Any], conn: AsyncConnection) -> Any:
    dialect = conn.dialect.name
    statement = statements.get(dialect)
    if statement is None:
        raise InboxError(f"the inbox does not support the {dialect} dialect")
    return statement


async def claim(
    conn: AsyncConnection, consumer: str, message_id: str, reply: StoredReply | None = None
) -> Claim:
    """Record that `consumer` handles `message_id`, inside the caller's transaction.

    Returns `Claim(new=True)` the first time. If the message was already handled (committed),
    returns `Claim(new=False, reply=<the stored reply>)`. On PostgreSQL a concurrent delivery of
    the same message waits here until the first transaction ends, so only one handler runs.
    `reply` may be given now or later with `store_reply`, in the same transaction.
    """
    _check(consumer, message_id)
    values = {
        "consumer": consumer,
        "message_id": message_id,
        "processed_at": datetime.now(UTC),
        "reply": reply.to_json() if reply is not None else None,
    }
    result = await conn.execute(_for_dialect(_INSERT_IGNORING_DUPLICATES, conn), values)
    if result.rowcount == 1:
        return Claim(new=True)
    return Claim(new=False, reply=await stored_reply(conn, consumer, message_id))


async def stored_reply(conn: AsyncConnection, consumer: str, message_id: str) -> StoredReply | None:
    """The reply kept with an inbox row (None if there is no row, or no reply in it)."""
    stored = await conn.scalar(_STORED_REPLY, {"b_consumer": consumer, "b_message_id": message_id})
    return StoredReply.from_json(stored) if stored is not None else None


async def claim_many(conn: AsyncConnection, consumer: str, message_ids: Sequence[str]) -> set[str]:
    """Record that `consumer` handles each of `message_ids` (no reply kept), in one statement
    inside the caller's transaction; returns the ids recorded now — the others were there
    already. On PostgreSQL an id a concurrent transaction is inserting waits for it, and is left
    out if that one commits."""
    if not message_ids:
        return set()
    now = datetime.now(UTC)
    unique = list(dict.fromkeys(message_ids))
    for message_id in unique:
        _check(consumer, message_id)
    sqlite = holding_inline_transaction(conn)
    if sqlite is not None:
        stamp = sqlite_timestamp_text(now)
        return {
            message_id
            for message_id in unique
            if run_direct(sqlite, _DIRECT_CLAIM, (consumer, message_id, stamp)) == 1
        }
    rows = [
        {"consumer": consumer, "message_id": message_id, "processed_at": now, "reply": None}
        for message_id in unique
    ]
    return set((await conn.execute(_for_dialect(_CLAIM_MANY, conn), rows)).scalars())


async def store_reply(
    conn: AsyncConnection, consumer: str, message_id: str, reply: StoredReply
) -> None:
    """Keep the reply with the inbox row `claim` inserted, in the same transaction."""
    await store_replies(conn, consumer, {message_id: reply})


_STORE_REPLY = (
    sa.update(inbox)
    .where(
        inbox.c.consumer == sa.bindparam("b_consumer"),
        inbox.c.message_id == sa.bindparam("b_message_id"),
    )
    .values(reply=sa.bindparam("b_reply", type_=inbox.c.reply.type))
)


async def store_replies(
    conn: AsyncConnection, consumer: str, replies: Mapping[str, StoredReply]
) -> None:
    """`store_reply` for many messages (message id → reply) in one statement: a batch's replies
    are one round trip to PostgreSQL (asyncpg pipelines an executemany), not one each."""
    if not replies:
        return
    for message_id in replies:
        _check(consumer, message_id)
    sqlite = holding_inline_transaction(conn)
    if sqlite is not None:
        params = [
            (json_text(reply.to_json()), consumer, message_id)
            for message_id, reply in replies.items()
        ]
        stored = run_many_direct(sqlite, _DIRECT_STORE_REPLY, params)
        counted = True
    else:
        result = await conn.execute(
            _STORE_REPLY,
            [
                {"b_consumer": consumer, "b_message_id": message_id, "b_reply": reply.to_json()}
                for message_id, reply in replies.items()
            ],
        )
        stored = result.rowcount
        # A driver that cannot count the rows of an executemany (asyncpg) is not asked to.
        counted = len(replies) == 1 or conn.dialect.supports_sane_multi_rowcount
    if counted and stored != len(replies):
        raise InboxError(
            f"no inbox row for some of {consumer}/{', '.join(replies)}: call claim() first"
        )


async def prune_inbox(conn: AsyncConnection, older_than: datetime) -> int:
    """Delete inbox rows processed before `older_than` (after the broker can no longer redeliver
    them); returns how many went."""
    result = await conn.execute(sa.delete(inbox).where(inbox.c.processed_at < older_than))
    return int(result.rowcount or 0)
