"""`add_to_outbox`: messages become outbox rows inside the caller's own database transaction.

Nothing here commits: the rows exist, and are published, only if the caller's transaction commits
(see docs/outbox.md). Both relays read the rows this writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.messaging.envelope import Message
from sagaway.outbox.doorbell import note_outbox_written
from sagaway.outbox.models import outbox
from sagaway.sqlite.direct import holding_inline_transaction, run_many_direct
from sagaway.storage.database import json_text
from sagaway.storage.models import sqlite_timestamp_text

MAX_TOPIC_LENGTH = 300
MAX_KEY_LENGTH = 300


class OutboxError(ValueError):
    """A message cannot be written to the outbox (bad topic or key); nothing was written."""


def outbox_values(topic: str, message: Message, now: datetime) -> dict[str, Any]:
    """The column values of one outbox row; raises OutboxError on a topic or key that the table
    (or Kafka) would refuse."""
    if not isinstance(message, Message):
        raise OutboxError(f"expected a Message, got {type(message).__name__}")
    if not isinstance(topic, str) or not topic.strip():
        raise OutboxError("topic must be a non-empty string")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise OutboxError(f"topic is longer than {MAX_TOPIC_LENGTH} characters: {topic[:40]!r}...")
    key = message.key
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise OutboxError(f"key (saga id) is longer than {MAX_KEY_LENGTH} characters")
    return {
        "topic": topic,
        "key": key,
        "headers": message.headers(),
        "payload": message.payload,
        "created_at": now,
        "published_at": None,
    }


_INSERT_OUTBOX = outbox.insert()
# The same insert on an inline SQLite transaction's own sqlite3 connection (one per saga hop:
# ~65 µs through SQLAlchemy, ~15 µs here; sagaway/sqlite/direct.py says why).
_DIRECT_INSERT = (
    "INSERT INTO outbox (topic, key, headers, payload, created_at, published_at)"
    " VALUES (?, ?, ?, ?, ?, NULL)"
)


async def add_to_outbox(conn: AsyncConnection, messages: Sequence[tuple[str, Message]]) -> None:
    """Insert one outbox row per (topic, message) on `conn`, in the transaction the caller holds.

    The caller commits (or rolls back) as part of its business change. Every message is checked
    before anything is inserted, so a bad one leaves no partial batch behind.
    """
    if not messages:
        return
    now = datetime.now(UTC)
    rows = [outbox_values(topic, message, now) for topic, message in messages]
    sqlite = holding_inline_transaction(conn)
    if sqlite is None:
        await conn.execute(_INSERT_OUTBOX, rows)
    else:
        stamp = sqlite_timestamp_text(now)
        run_many_direct(
            sqlite,
            _DIRECT_INSERT,
            [
                (
                    row["topic"],
                    row["key"],
                    json_text(row["headers"]),
                    json_text(row["payload"]),
                    stamp,
                )
                for row in rows
            ],
        )
    note_outbox_written(conn)
