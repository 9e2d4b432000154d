"""A polling relay wakes when a transaction of its own process that wrote outbox rows commits,
not at its next poll; a rolled-back transaction does not wake it."""

from __future__ import annotations

import asyncio

from sagaway.messaging.envelope import Message, command
from sagaway.outbox.doorbell import Doorbell, doorbell_for
from sagaway.outbox.writer import add_to_outbox
from sagaway.storage.database import create_database_engine


def message() -> Message:
    return command("inventory.reserve", {"items": []}, saga_id="s-1", attempt=1)


async def test_a_ring_before_the_wait_is_not_lost() -> None:
    bell = Doorbell()
    bell.ring()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bell.wait(5) is True
    assert loop.time() - started < 0.5
    started = loop.time()
    assert await bell.wait(0.05) is False  # that ring was used up: this one times out
    assert loop.time() - started >= 0.05


async def test_a_commit_that_wrote_outbox_rows_rings_and_a_rollback_does_not(
    migrated_sqlite_url: str,
) -> None:
    engine = create_database_engine(migrated_sqlite_url)
    bell = doorbell_for(engine)
    assert doorbell_for(engine) is bell
    loop = asyncio.get_running_loop()
    try:
        try:
            async with engine.begin() as conn:
                await add_to_outbox(conn, [("inventory.requests", message())])
                raise RuntimeError("business rule failed")
        except RuntimeError:
            pass
        started = loop.time()
        await bell.wait(0.2)
        assert loop.time() - started >= 0.2  # the rollback rang nothing

        async def commit_later() -> None:
            await asyncio.sleep(0.05)
            async with engine.begin() as conn:
                await add_to_outbox(conn, [("inventory.requests", message())])

        writer = asyncio.create_task(commit_later())
        started = loop.time()
        await bell.wait(5)
        assert loop.time() - started < 1
        await writer
    finally:
        await engine.dispose()
