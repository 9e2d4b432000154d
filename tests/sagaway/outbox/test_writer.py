"""The outbox writer: rows only inside the caller's transaction, and bad input refused whole."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.envelope import Message, command
from sagaway.outbox.models import outbox
from sagaway.outbox.writer import OutboxError, add_to_outbox
from sagaway.storage.database import create_database_engine


@pytest.fixture
async def engine(migrated_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_db_url)
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine) -> list[sa.Row]:  # type: ignore[type-arg]
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all())


async def test_rows_carry_topic_key_headers_and_payload(engine: AsyncEngine) -> None:
    message = command("payments.charge", {"amount": 3}, saga_id="s-1", attempt=2)
    async with engine.begin() as conn:
        await add_to_outbox(conn, [("payments.requests", message)])
    (row,) = await rows(engine)
    assert (row.topic, row.key, row.payload) == ("payments.requests", "s-1", {"amount": 3})
    assert row.headers == message.headers()
    assert row.published_at is None and row.created_at is not None


async def test_nothing_is_written_unless_the_callers_transaction_commits(
    engine: AsyncEngine,
) -> None:
    with contextlib.suppress(RuntimeError):
        async with engine.begin() as conn:
            await add_to_outbox(conn, [("t", Message(message_type="event", payload={}))])
            raise RuntimeError("rolled back")
    assert await rows(engine) == []


@pytest.mark.parametrize("topic", ["", "   ", "x" * 301])
async def test_a_bad_topic_writes_nothing_of_the_batch(engine: AsyncEngine, topic: str) -> None:
    good = Message(message_type="event", payload={})
    async with engine.begin() as conn:
        with pytest.raises(OutboxError):
            await add_to_outbox(conn, [("fine", good), (topic, good)])
    assert await rows(engine) == []


async def test_a_non_message_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(OutboxError):
            await add_to_outbox(conn, [("t", {"not": "a message"})])  # type: ignore[list-item]
