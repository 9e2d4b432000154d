"""Writing numbered test messages to an outbox, the way a service does: in its own transactions."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.envelope import Message
from sagaway.outbox.writer import add_to_outbox


def numbered(key: str, seq: int) -> Message:
    """An event keyed `key` whose payload says its place in that key's sequence."""
    return Message(
        message_type="event",
        saga_id=key,
        payload={"key": key, "seq": seq},
        message_id=str(uuid.uuid4()),
    )


async def write_sequence(
    engine: AsyncEngine, topic: str, key: str, count: int, per_tx: int = 1
) -> list[str]:
    """Commit `count` messages for `key` in order, `per_tx` per transaction; returns their ids."""
    ids: list[str] = []
    for start in range(0, count, per_tx):
        messages = [numbered(key, seq) for seq in range(start, min(start + per_tx, count))]
        async with engine.begin() as conn:
            await add_to_outbox(conn, [(topic, message) for message in messages])
        ids.extend(message.message_id for message in messages)
    return ids
