"""Statements on an inline engine's sqlite3 connection, outside SQLAlchemy: each its own
transaction, waiting for another writer's lock without blocking the loop, on kept connections,
with SQLAlchemy's errors."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sagaway.sqlite.direct import holding_inline_transaction, read_direct, write_direct
from sagaway.sqlite.inline import InlineAsyncEngine
from sagaway.storage.database import create_database_engine, read_only
from tests.harness.waiting import seen_each_turn
from tests.sagaway.sqlite.test_kept_connections import count_checkouts, make_table


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[InlineAsyncEngine]:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    assert isinstance(engine, InlineAsyncEngine)
    await make_table(engine)
    yield engine
    await engine.dispose()


async def test_each_write_is_its_own_transaction_on_a_kept_connection(
    engine: InlineAsyncEngine, tmp_path: Path
) -> None:
    checkouts = count_checkouts(engine)
    for i in range(5):
        assert await write_direct(engine, "INSERT INTO t VALUES (?, 'x')", (i,)) == 1
    assert await write_direct(engine, "UPDATE t SET v = 'y' WHERE id < ?", (3,)) == 3
    assert await read_direct(engine, "SELECT id, v FROM t WHERE id >= ? ORDER BY id", (3,)) == [
        (3, "x"),
        (4, "x"),
    ]
    assert len(checkouts) <= 1  # the reader's first checkout; the writer was kept already
    with contextlib.closing(sqlite3.connect(tmp_path / "d.db")) as other:  # committed
        assert other.execute("SELECT count(*) FROM t WHERE v = 'y'").fetchone() == (3,)


async def test_a_write_waits_for_another_writers_lock_without_blocking_the_loop(
    engine: InlineAsyncEngine, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with seen_each_turn(lambda: None) as turns:
            write = asyncio.create_task(write_direct(engine, "INSERT INTO t VALUES (1, 'x')"))
            await asyncio.sleep(0.3)
            assert not write.done() and len(turns) >= 10  # waiting, and the loop ran meanwhile
        holder.execute("COMMIT")
        assert await asyncio.wait_for(write, 5) == 1
    finally:
        holder.close()


async def test_errors_are_sqlalchemys_and_the_connection_is_not_kept_broken(
    engine: InlineAsyncEngine,
) -> None:
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        await read_direct(engine, "SELECT * FROM missing")
    await write_direct(engine, "INSERT INTO t VALUES (1, 'x')")
    with pytest.raises(sa.exc.IntegrityError):
        await write_direct(engine, "INSERT INTO t VALUES (1, 'again')")
    assert await read_direct(engine, "SELECT v FROM t") == [("x",)]


async def test_only_a_begun_inline_transaction_is_handed_out(
    engine: InlineAsyncEngine, tmp_path: Path
) -> None:
    async with engine.connect() as conn:
        assert holding_inline_transaction(conn) is None  # no transaction yet
    async with engine.begin() as conn:
        sqlite = holding_inline_transaction(conn)
        assert sqlite is not None and sqlite.in_transaction
    async with read_only(engine) as reader:
        await reader.execute(sa.text("SELECT 1"))
        assert holding_inline_transaction(reader) is not None  # its snapshot
    plain = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", sqlite_inline=False)
    try:
        async with plain.begin() as conn:
            assert holding_inline_transaction(conn) is None  # aiosqlite's thread: not ours
    finally:
        await plain.dispose()
