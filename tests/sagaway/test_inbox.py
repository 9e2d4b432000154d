"""The inbox on SQLite and PostgreSQL: a message is handled once; a redelivery gets the first
run's reply again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.reply_inbox import claim_replies
from sagaway.inbox import (
    InboxError,
    StoredReply,
    claim,
    claim_many,
    inbox,
    store_replies,
    store_reply,
)
from sagaway.messaging.envelope import EnvelopeError, Message, command, reply_to
from sagaway.outbox.models import outbox
from sagaway.outbox.writer import add_to_outbox
from sagaway.storage.database import create_database_engine


@pytest.fixture
async def engine(migrated_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_db_url)
    yield engine
    await engine.dispose()


def charge() -> Message:
    return command("payments.charge", {"amount": 10}, saga_id="saga-1", attempt=1)


async def handle(conn: AsyncConnection, cmd: Message, runs: list[str]) -> None:
    """A participant's handler shell: inbox claim, business write, reply in the outbox."""
    claimed = await claim(conn, "payments", cmd.message_id)
    if claimed.duplicate:
        if claimed.reply is not None:
            await add_to_outbox(conn, [(claimed.reply.topic, claimed.reply.message)])
        return
    runs.append(cmd.message_id)
    reply = StoredReply("orchestrator.replies", reply_to(cmd, "success", {"charged": 10}))
    await store_reply(conn, "payments", cmd.message_id, reply)
    await add_to_outbox(conn, [(reply.topic, reply.message)])


async def outbox_replies(engine: AsyncEngine) -> list[dict[str, str]]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(sa.select(outbox.c.headers).order_by(outbox.c.id))).scalars()
        )


async def test_redelivered_message_does_not_run_the_handler_and_resends_the_stored_reply(
    engine: AsyncEngine,
) -> None:
    cmd, runs = charge(), list[str]()
    for _ in range(3):
        async with engine.begin() as conn:
            await handle(conn, cmd, runs)
    assert runs == [cmd.message_id]
    replies = await outbox_replies(engine)
    assert len(replies) == 3
    assert len({r["message-id"] for r in replies}) == 1  # the same reply each time
    assert replies[0]["causation-id"] == cmd.message_id


async def test_claim_in_a_rolled_back_transaction_leaves_the_message_unhandled(
    engine: AsyncEngine,
) -> None:
    cmd, runs = charge(), list[str]()
    with contextlib.suppress(RuntimeError):
        async with engine.begin() as conn:
            await handle(conn, cmd, runs)
            raise RuntimeError("the business write failed")
    async with engine.begin() as conn:
        await handle(conn, cmd, runs)
    assert runs == [cmd.message_id, cmd.message_id]  # the retry really ran it
    assert len(await outbox_replies(engine)) == 1


async def test_a_message_without_a_stored_reply_is_acknowledged_silently(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        assert (await claim(conn, "audit", "m-1")).new
    async with engine.begin() as conn:
        again = await claim(conn, "audit", "m-1")
    assert again.duplicate and again.reply is None


async def test_consumers_deduplicate_independently(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert (await claim(conn, "payments", "m-1")).new
        assert (await claim(conn, "shipping", "m-1")).new


@pytest.mark.parametrize(
    ("consumer", "message_id"), [("", "m-1"), ("c" * 201, "m-1"), ("payments", ""), ("p", "x" * 37)]
)
async def test_bad_consumer_or_message_id_is_a_typed_error_and_writes_nothing(
    engine: AsyncEngine, consumer: str, message_id: str
) -> None:
    async with engine.begin() as conn:
        with pytest.raises(InboxError):
            await claim(conn, consumer, message_id)
        with pytest.raises(InboxError):  # one bad id in a batch: none of it is written
            await claim_many(conn, consumer, ["m-0", message_id])
        assert await conn.scalar(sa.select(sa.func.count()).select_from(inbox)) == 0


async def test_store_reply_without_a_claim_is_refused(engine: AsyncEngine) -> None:
    reply = StoredReply("orchestrator.replies", reply_to(charge(), "success", {}))
    async with engine.begin() as conn:
        with pytest.raises(InboxError):
            await store_reply(conn, "payments", "never-claimed", reply)


async def test_a_batch_of_replies_is_stored_in_one_call(engine: AsyncEngine) -> None:
    commands = [
        command("payments.charge", {"amount": i}, saga_id=f"saga-{i}", attempt=1) for i in range(5)
    ]
    replies = {
        c.message_id: StoredReply("orchestrator.replies", reply_to(c, "success", {"n": i}))
        for i, c in enumerate(commands)
    }
    async with engine.begin() as conn:
        for c in commands:
            assert (await claim(conn, "payments", c.message_id)).new
        await store_replies(conn, "payments", replies)
    async with engine.begin() as conn:
        for i, c in enumerate(commands):
            again = await claim(conn, "payments", c.message_id)
            assert again.reply is not None and again.reply.message.payload == {"n": i}


def test_a_corrupt_stored_reply_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError):
        StoredReply.from_json({"topic": "t", "headers": {"message-type": "reply"}, "payload": {}})
    with pytest.raises(EnvelopeError):
        StoredReply.from_json("not an object")


async def test_concurrent_deliveries_on_postgresql_run_the_handler_once(
    migrated_pg_url: str,
) -> None:
    engine = create_database_engine(migrated_pg_url)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            assert (await claim(first, "payments", "m-1")).new
            waiting = asyncio.create_task(claim(second, "payments", "m-1"))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # blocked on the first transaction's row
            await first.commit()
            assert (await waiting).duplicate
            await second.commit()
    finally:
        await engine.dispose()


async def test_the_orchestrator_claims_a_batch_of_replies_once_each(engine: AsyncEngine) -> None:
    """One INSERT per batch that skips ids already there: a redelivered reply, or a second copy
    in the same batch, is not fresh; the rest are, in their order."""
    first = reply_to(charge(), "success", {"charged": 10})
    second = reply_to(command("inventory.reserve", {}, saga_id="saga-2"), "success", {})
    third = reply_to(command("shipping.schedule", {}, saga_id="saga-3"), "failure", {})
    async with engine.begin() as conn:
        fresh = await claim_replies(conn, [second, first, second])
    assert [m.message_id for m in fresh] == [second.message_id, first.message_id]
    async with engine.begin() as conn:
        fresh = await claim_replies(conn, [first, third])
    assert [m.message_id for m in fresh] == [third.message_id]
    async with engine.connect() as conn:
        stored = (
            await conn.execute(sa.select(sa.func.count()).where(inbox.c.consumer == "orchestrator"))
        ).scalar_one()
    assert stored == 3
