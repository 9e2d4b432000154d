"""An inline SQLite engine's `begin()` keeps the connection of a clean transaction for the next
one, instead of a pool checkout and return per transaction (half of a small transaction's cost),
and gives back whatever might carry state: a failed transaction, changed options, a full
keep."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.sqlite.options import READ_ONLY
from sagaway.storage.database import create_database_engine, read_only


def count_checkouts(engine: AsyncEngine) -> list[int]:
    checkouts: list[int] = []

    @event.listens_for(engine.sync_engine, "checkout")
    def _count(*_args: Any) -> None:
        checkouts.append(1)

    return checkouts


async def make_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))


async def test_transactions_in_a_row_share_one_checkout(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await make_table(engine)
        checkouts = count_checkouts(engine)
        for i in range(5):
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (:i, 'x')"), {"i": i})
        assert len(checkouts) == 0  # the table's transaction left its connection kept
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as other:  # every transaction committed
        assert other.execute("SELECT count(*) FROM t").fetchone() == (5,)


async def test_a_failed_transaction_gives_its_connection_back(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    try:
        await make_table(engine)
        checkouts = count_checkouts(engine)
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1, 'rolled back')"))
                raise RuntimeError("the caller's own failure")
        async with engine.begin() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
        assert len(checkouts) == 1  # the second transaction took a connection from the pool
    finally:
        await engine.dispose()


async def test_a_connection_with_changed_options_is_given_back(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        await make_table(engine)
        checkouts = count_checkouts(engine)
        async with engine.begin() as conn:
            await conn.execution_options(logging_token="changed")
        async with engine.begin() as conn:
            assert "logging_token" not in conn.sync_connection.get_execution_options()  # type: ignore[union-attr]
        assert len(checkouts) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("pool_size", "kept"), [(1, 0), (2, 1), (10, 2)])
async def test_a_small_pool_keeps_fewer_and_connect_still_gets_one(
    tmp_path: Path, pool_size: int, kept: int
) -> None:
    engine = create_database_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", pool_size=pool_size
    )
    try:
        await make_table(engine)

        async def one(i: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (:i, 'x')"), {"i": i})
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one(i) for i in range(pool_size)))
        assert engine.sync_engine.pool.checkedout() == kept  # type: ignore[attr-defined]
        async with engine.connect() as conn:  # never starved by the kept ones
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == pool_size
    finally:
        await engine.dispose()
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_kept_reader_starts_each_block_on_a_fresh_snapshot(tmp_path: Path) -> None:
    """The read transaction ends with its block, so the next block (on the same kept
    connection) sees what was committed meanwhile, and no snapshot outlives its block."""
    path = tmp_path / "e.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await make_table(engine)
        async with read_only(engine) as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
        checkouts = count_checkouts(engine)
        with sqlite3.connect(path) as other:
            other.execute("INSERT INTO t VALUES (1, 'meanwhile')")
        async with read_only(engine) as conn:
            assert conn.sync_connection is not None
            assert not conn.sync_connection.in_transaction()
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 1
            assert conn.sync_connection.get_execution_options()[READ_ONLY] is True
        assert len(checkouts) == 0
    finally:
        await engine.dispose()
