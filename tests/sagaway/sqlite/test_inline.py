"""SQLite statements run on the event loop's thread; a write lock held elsewhere is waited for
with the loop free, so a holder that is a coroutine of the same loop can finish."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import engine as engine_module

from sagaway.sqlite.inline import call_when_unlocked, is_busy
from sagaway.storage.database import create_database_engine, read_only


async def test_statements_run_on_the_event_loops_thread(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    seen: list[int] = []
    try:
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection._conn.create_function(  # type: ignore[union-attr]
                "thread_id", 0, lambda: seen.append(threading.get_ident()) or 1
            )
            await conn.execute(sa.text("SELECT thread_id()"))
    finally:
        await engine.dispose()
    assert seen == [threading.get_ident()]


async def holder_then_waiter(engine: AsyncEngine, hold_s: float) -> tuple[list[str], int]:
    """A holder writes in a transaction and keeps it open `hold_s` (e.g. waiting for a broker
    acknowledgement); a waiter begins one meanwhile. Returns the order things happened in and
    how often a ticker ran meanwhile; asserts both rows are there, the holder's first."""
    order: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v TEXT)"))

    async def holder() -> None:
        async with engine.begin() as conn:  # BEGIN IMMEDIATE: the write lock
            await conn.execute(sa.text("INSERT INTO t VALUES ('first')"))
            order.append("holder in its transaction")
            await asyncio.sleep(hold_s)
        order.append("holder committed")

    async def waiter() -> None:
        await asyncio.sleep(0.05)
        async with engine.begin() as conn:
            order.append("waiter in its transaction")
            await conn.execute(sa.text("INSERT INTO t VALUES ('second')"))

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while len(order) < 3:
            ticks += 1
            await asyncio.sleep(0.01)

    await asyncio.wait_for(asyncio.gather(holder(), waiter(), ticker()), 5)
    async with engine.connect() as conn:
        values = (await conn.execute(sa.text("SELECT v FROM t ORDER BY rowid"))).scalars()
        assert list(values) == ["first", "second"]
    return order, ticks


IN_TURN = ["holder in its transaction", "holder committed", "waiter in its transaction"]


async def test_a_writer_waits_for_a_lock_held_by_a_coroutine_of_the_same_loop(
    tmp_path: Path,
) -> None:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    try:
        order, ticks = await holder_then_waiter(engine, hold_s=0.3)
    finally:
        await engine.dispose()
    assert order == IN_TURN
    assert ticks >= 10  # the loop kept running while the waiter waited


async def test_a_lock_held_past_the_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE t (v)")
    other.execute("BEGIN IMMEDIATE")  # another process's writer that never lets go
    mine = sqlite3.connect(path, isolation_level=None)
    mine.execute("PRAGMA busy_timeout=0")
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as caught:
            await call_when_unlocked(lambda: mine.execute("BEGIN IMMEDIATE"), timeout_s=0.2)
        assert is_busy(caught.value)
        assert asyncio.get_running_loop().time() - started >= 0.2
        other.execute("ROLLBACK")
        await call_when_unlocked(lambda: mine.execute("BEGIN IMMEDIATE"), timeout_s=0.2)
        mine.execute("ROLLBACK")
    finally:
        mine.close()
        other.close()


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise sqlite3.OperationalError("no such table: nope")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await call_when_unlocked(broken, timeout_s=1)
    assert calls == 1


async def test_an_engine_transaction_waits_with_the_loop_free_for_another_connections_lock(
    tmp_path: Path,
) -> None:
    """The engine's statements call sqlite3 directly (no coroutine per call); a lock held by
    another process's connection still makes them wait asynchronously, not fail or block."""
    path = tmp_path / "d.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1, 'other')")
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, other.execute, "COMMIT")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        started = loop.time()
        async with engine.begin() as conn:  # BEGIN IMMEDIATE meets the other writer's lock
            await conn.execute(sa.text("INSERT INTO t VALUES (2, 'mine')"))
            rows = (await conn.execute(sa.text("SELECT id, v FROM t ORDER BY id"))).all()
        waited = loop.time() - started
        ticking.cancel()
        assert [tuple(row) for row in rows] == [(1, "other"), (2, "mine")]
        assert waited >= 0.25
        assert ticks >= 10  # the loop kept running while the transaction waited

        # A constraint violation is SQLAlchemy's IntegrityError, and the transaction rolls back.
        with pytest.raises(sa.exc.IntegrityError, match="UNIQUE constraint failed"):
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (3, 'kept?')"))
                await conn.execute(sa.text("INSERT INTO t VALUES (2, 'again')"))
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 2
    finally:
        other.close()
        await engine.dispose()


async def test_a_transaction_crosses_no_greenlet_once_the_pool_holds_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkout, BEGIN, statements and COMMIT run in place: SQLAlchemy's bridge (a greenlet per
    call) cost more than the statements. Only opening a connection, or waiting for one, uses
    it; a lock held elsewhere is waited for as the test above shows."""
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    spawned: list[str] = []
    real_spawn = engine_module.greenlet_spawn

    async def counting_spawn(fn: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(getattr(fn, "__name__", repr(fn)))
        return await real_spawn(fn, *args, **kwargs)

    try:
        async with engine.begin() as conn:  # opens the pool's first connection
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        monkeypatch.setattr(engine_module, "greenlet_spawn", counting_spawn)
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1, 'a')"))
            await conn.exec_driver_sql("INSERT INTO t VALUES (2, 'b')")
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 2
        assert spawned == []
        async with read_only(engine) as conn:
            await conn.execute(sa.text("SELECT v FROM t WHERE id = 1"))  # its BEGIN (deferred)
            before = len(spawned)
            values = (await conn.execute(sa.text("SELECT v FROM t ORDER BY id"))).scalars()
            assert list(values) == ["a", "b"]
        assert len(spawned) == before
        with pytest.raises(sa.exc.IntegrityError):  # errors come wrapped as on the bridge
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1, 'again')"))
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 2
    finally:
        await engine.dispose()


async def test_a_checkout_from_an_empty_pool_waits_on_the_loop_for_a_connection(
    tmp_path: Path,
) -> None:
    """The in-place checkout cannot wait; when the pool has nothing free it falls back to
    SQLAlchemy's path, which waits for a connection given back by another coroutine."""
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", pool_size=1)
    try:
        order, ticks = await holder_then_waiter(engine, hold_s=0.2)
    finally:
        await engine.dispose()
    assert order == IN_TURN
    assert ticks >= 5  # the loop kept running while the waiter waited for the connection
