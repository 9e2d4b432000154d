"""The orchestrator's inbox: which consumed replies are new. A reply is the same message only with
the same id AND attempt, so a participant that re-sends its stored reply for a later attempt is
never mistaken for a duplicate."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.inbox import claim_many
from sagaway.messaging.envelope import Message

INBOX_CONSUMER = "orchestrator"
# The namespace of the inbox keys of replies (and of saga ids derived from long correlation ids).
INBOX_NAMESPACE = uuid.UUID("0d2f4c55-7a57-4b0e-8a53-6f7263686573")


def inbox_key(message: Message) -> str:
    """The inbox message id of a reply: its message id and attempt together."""
    return str(uuid.uuid5(INBOX_NAMESPACE, f"{message.message_id}/{message.attempt or 0}"))


async def claim_replies(conn: AsyncConnection, replies: Sequence[Message]) -> list[Message]:
    """Record the replies in the inbox (consumer "orchestrator") and return those never seen
    before, in order: one INSERT for the batch (`inbox.claim_many`)."""
    keys = [inbox_key(m) for m in replies]
    inserted = await claim_many(conn, INBOX_CONSUMER, keys)
    fresh: list[Message] = []
    for key, message in zip(keys, replies, strict=True):
        if key in inserted:
            inserted.discard(key)  # a second copy in the same batch is a duplicate
            fresh.append(message)
    return fresh
