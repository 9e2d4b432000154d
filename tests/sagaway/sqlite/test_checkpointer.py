"""WAL checkpoints run on a background thread per database file (their fsyncs off the event
loop), for as long as an engine or broker file of that database is alive."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.sqlite import checkpointer
from sagaway.storage.database import create_database_engine
from tests.harness.waiting import eventually


def _checkpoints(path: Path) -> int:
    counts = checkpointer.checkpoints_of(path)
    assert counts is not None, "no thread watches this file"
    return counts[0]


def _restarts(path: Path) -> int:
    counts = checkpointer.checkpoints_of(path)
    assert counts is not None, "no thread watches this file"
    return counts[1]


async def test_a_service_database_is_checkpointed_by_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "service.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (v TEXT)"))
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 4000} for _ in range(300)]
            )
        # Far below the automatic threshold (tests/sagaway/storage/test_database.py checks it is
        # AUTOCHECKPOINT_PAGES), so only the thread can copy these frames back: the rows' pages
        # reach the database file itself, not only its WAL (the engine's connections are open,
        # so no close checkpoints it either).
        await eventually(
            lambda: path.stat().st_size > 300 * 4000 and _checkpoints(path) >= 1,
            timeout_s=5,
            what="the rows copied from the WAL into the database file",
        )
    finally:
        await engine.dispose()


async def test_a_wal_past_the_restart_size_is_started_over(tmp_path: Path) -> None:
    """With writers appending while it runs, a passive checkpoint rarely copies every frame, and
    only then can the WAL start over; past RESTART_FRAMES the thread restarts it."""
    path = tmp_path / "big.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (v TEXT)"))
        async with engine.begin() as conn:  # well under RESTART_FRAMES pages
            await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 4000}] * 50)
        await eventually(
            lambda: path.stat().st_size > 50 * 4000, timeout_s=5, what="a passive checkpoint"
        )
        assert _restarts(path) == 0
        rows = checkpointer.RESTART_FRAMES + 500  # a page each
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 4000}] * rows)
        await eventually(lambda: _restarts(path) >= 1, timeout_s=5, what="a restart")
        async with engine.begin() as conn:  # the next write starts the WAL over
            await conn.execute(sa.text("INSERT INTO t VALUES ('small')"))
        wal = path.with_name(path.name + "-wal")
        frames = (wal.stat().st_size - 32) // (4096 + 24)
        assert frames > checkpointer.RESTART_FRAMES  # the file keeps its size...
        conn_check = sqlite3.connect(path)
        try:
            _busy, in_use, _copied = conn_check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn_check.close()
        assert in_use < 10  # ...but only the last small write's frames are in use
    finally:
        await engine.dispose()


async def test_a_file_that_cannot_be_opened_is_tried_again_and_never_created(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later.db"

    class Owner:
        pass

    owner = Owner()
    checkpointer.watch(path, owner)
    await asyncio.sleep(checkpointer.INTERVAL_S * 3)
    assert not path.exists()  # the thread did not create it
    assert _checkpoints(path) == 0
    setup = sqlite3.connect(path)
    try:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (v TEXT)")
        setup.commit()
        await eventually(  # the same thread, still alive
            lambda: _checkpoints(path) >= 1, timeout_s=5, what="a checkpoint"
        )
    finally:
        setup.close()
    del owner


async def test_the_thread_stops_once_no_engine_of_the_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v TEXT)"))
    assert checkpointer.checkpoints_of(path) is not None
    await engine.dispose()
    del engine, conn
    gc.collect()
    await eventually(
        lambda: checkpointer.checkpoints_of(path) is None,
        timeout_s=5,
        what="the file to be watched no more",
    )


async def test_the_embedded_broker_file_is_checkpointed_too(tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "broker.db")
    await transport.start()
    try:
        assert checkpointer.checkpoints_of(tmp_path / "broker.db") is not None
        wal_pages = transport.file.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert wal_pages == checkpointer.AUTOCHECKPOINT_PAGES
    finally:
        await transport.close()


def test_a_database_nobody_writes_is_not_checkpointed_again(tmp_path: Path) -> None:
    """At rest the thread only looks at the WAL file: a checkpoint runs after a write, not on
    every turn (an idle `sagaway dev` ran one per database file twice a second)."""
    path = tmp_path / "idle.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v TEXT)")
        watcher = checkpointer._Checkpointer(path)
        assert watcher._wal_changed()
        assert not watcher._wal_changed()
        conn.execute("INSERT INTO t VALUES ('x')")
        assert watcher._wal_changed()
        assert not watcher._wal_changed()
    finally:
        conn.close()
