"""The outbox writer: rows only inside the caller's transaction, and bad input refused whole."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.envelope import Message, command
from sagaway.outbox.models import outbox
from sagaway.outbox.writer import OutboxError, add_to_outbox
from sagaway.storage.database import create_database_engine, sqlite_path


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


async def stored_text(url: str) -> list[tuple[object, ...]]:
    """The outbox as SQLite stores it (JSON and timestamps as text)."""
    path = sqlite_path(url)
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT topic, key, headers, payload, created_at, published_at FROM outbox ORDER BY id"
        ).fetchall()


async def test_inline_sqlite_stores_what_sqlalchemy_stores(migrated_sqlite_url: str) -> None:
    """An inline SQLite transaction inserts on its sqlite3 connection; the text stored must be
    what SQLAlchemy's insert stores, or the relays and queries would read something else."""
    message = command("payments.charge", {"amount": 3, "note": "é"}, saga_id="s-1", attempt=2)
    for inline in (True, False):
        engine = create_database_engine(migrated_sqlite_url, sqlite_inline=inline)
        try:
            async with engine.begin() as conn:
                await add_to_outbox(conn, [("payments.requests", message)] * 2)
        finally:
            await engine.dispose()
    direct, through_sqlalchemy = (await stored_text(migrated_sqlite_url))[::2]
    assert direct[:4] == through_sqlalchemy[:4]
    assert direct[5] is None and through_sqlalchemy[5] is None
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
    assert stamp.fullmatch(str(direct[4])) and stamp.fullmatch(str(through_sqlalchemy[4]))
    engine = create_database_engine(migrated_sqlite_url)
    try:
        (first, *_) = await rows(engine)
        assert first.payload == {"amount": 3, "note": "é"} and first.headers == message.headers()
        assert first.created_at.tzinfo is not None
    finally:
        await engine.dispose()


@pytest.mark.parametrize("inline", [True, False])
async def test_a_database_error_is_sqlalchemys_on_either_path(
    sqlite_url: str, inline: bool
) -> None:
    engine = create_database_engine(sqlite_url, sqlite_inline=inline)  # never migrated
    try:
        async with engine.begin() as conn:
            with pytest.raises(sa.exc.OperationalError, match="no such table: outbox"):
                await add_to_outbox(conn, [("t", Message(message_type="event", payload={}))])
    finally:
        await engine.dispose()
