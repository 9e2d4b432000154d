"""Engines: SQLite is tuned for concurrent writers, JSON and ids round-trip on both databases,
and start-up waits for a database that is down instead of crashing."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.models import saga_instances, saga_steps, timers
from sagaway.outbox.models import outbox
from sagaway.settings import StorageSettings
from sagaway.sqlite.checkpointer import AUTOCHECKPOINT_PAGES
from sagaway.storage.database import (
    DatabaseMisconfigured,
    DatabaseUnavailable,
    UnsupportedDatabase,
    async_url,
    connect_database,
    create_database_engine,
    describe_database,
    read_only,
    sync_url,
    wait_for_database,
)
from tests.servers.postgres import PostgresServer, free_port


async def test_sqlite_connections_use_wal_busy_timeout_foreign_keys_and_normal_sync(
    tmp_path: Path,
) -> None:
    database = tmp_path / "nested" / "dir" / "service.db"
    pragmas = {}
    for inline in (True, False):
        engine = create_database_engine(f"sqlite+aiosqlite:///{database}", sqlite_inline=inline)
        try:
            async with engine.connect() as connection:
                pragmas[inline] = {
                    name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in (
                        "journal_mode", "busy_timeout", "foreign_keys", "synchronous",
                        "wal_autocheckpoint",
                    )  # fmt: skip
                }
        finally:
            await engine.dispose()

    assert database.exists()
    # Inline connections wait for a lock asynchronously (sqlite_inline.py), not in SQLite.
    # Checkpoints run on a thread of their own (checkpointer.py); the automatic one is a bound.
    assert pragmas[True] == {
        "journal_mode": "wal", "busy_timeout": 0, "foreign_keys": 1, "synchronous": 1,
        "wal_autocheckpoint": AUTOCHECKPOINT_PAGES,
    }  # fmt: skip
    assert pragmas[False] == {**pragmas[True], "busy_timeout": 5000}


async def test_sqlite_enforces_foreign_keys(migrated_sqlite_url: str) -> None:
    engine = create_database_engine(migrated_sqlite_url)
    try:
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    saga_steps.insert().values(
                        saga_id="no-such-saga", step_name="s", kind="forward", status="sent",
                        attempt=1,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()


async def test_concurrent_sqlite_read_modify_write_transactions_do_not_fail(
    migrated_sqlite_url: str,
) -> None:
    """Two engines (as two processes would) increment one row 50 times each. BEGIN IMMEDIATE
    plus busy_timeout serialise them; the sqlite3 driver's default (no BEGIN before the SELECT)
    loses updates, and a deferred BEGIN fails with "database is locked"."""
    now = datetime.now(UTC)
    engines = [create_database_engine(migrated_sqlite_url) for _ in range(2)]
    try:
        async with engines[0].begin() as connection:
            await connection.execute(
                saga_instances.insert().values(
                    id="s1", saga_type="t", definition_version=1, status="running", data={},
                    state={}, correlation_id="c1", created_at=now, updated_at=now, version=0,
                )
            )  # fmt: skip

        async def bump(engine: AsyncEngine) -> None:
            for _ in range(50):
                async with engine.begin() as connection:
                    version = (
                        await connection.execute(
                            sa.select(saga_instances.c.version).where(saga_instances.c.id == "s1")
                        )
                    ).scalar_one()
                    await connection.execute(
                        saga_instances.update()
                        .where(saga_instances.c.id == "s1")
                        .values(version=version + 1)
                    )

        await asyncio.gather(*(bump(engine) for engine in engines))
        async with engines[0].connect() as connection:
            final = (await connection.execute(sa.select(saga_instances.c.version))).scalar_one()
    finally:
        for engine in engines:
            await engine.dispose()
    assert final == 100


async def test_json_timestamps_and_ids_round_trip(migrated_db_url: str) -> None:
    engine = create_database_engine(migrated_db_url)
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            ids = [
                (
                    await connection.execute(
                        outbox.insert().returning(outbox.c.id),
                        {"topic": "t", "key": "k", "headers": {"message-id": str(n)},
                         "payload": {"n": [n, 2.5, None], "é": "ü", "nested": {"a": True}},
                         "created_at": created},
                    )
                ).scalar_one()
                for n in range(3)
            ]  # fmt: skip
        async with engine.connect() as connection:
            row = (await connection.execute(sa.select(outbox).where(outbox.c.id == ids[0]))).one()
    finally:
        await engine.dispose()

    assert ids == sorted(ids) and len(set(ids)) == 3
    assert row.payload == {"n": [0, 2.5, None], "é": "ü", "nested": {"a": True}}
    assert row.headers == {"message-id": "0"}
    assert row.published_at is None
    assert row.created_at == created
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)


async def test_timestamps_are_stored_in_utc_and_compare_in_time_order(
    migrated_db_url: str,
) -> None:
    """A time given in another zone (or naive, taken as UTC) is stored as UTC, so that
    `due_at <= now` picks exactly the due timers on SQLite too, where it is text."""
    paris = timezone(timedelta(hours=2))
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    due_times = {
        "due-in-other-zone": datetime(2026, 6, 1, 13, 30, tzinfo=paris),  # 11:30 UTC
        "due-naive": datetime(2026, 6, 1, 11, 59),  # naive → UTC
        "later-in-other-zone": datetime(2026, 6, 1, 14, 30, tzinfo=paris),  # 12:30 UTC
    }
    engine = create_database_engine(migrated_db_url)
    try:
        async with engine.begin() as connection:
            for step, due_at in due_times.items():
                await connection.execute(
                    timers.insert().values(
                        saga_id="s", kind="timeout", step=step, attempt=1, due_at=due_at,
                        created_at=now,
                    )
                )  # fmt: skip
        async with engine.connect() as connection:
            due = (
                await connection.execute(
                    sa.select(timers.c.step, timers.c.due_at)
                    .where(timers.c.due_at <= now.astimezone(paris))
                    .order_by(timers.c.due_at)
                )
            ).all()
    finally:
        await engine.dispose()

    assert [step for step, _ in due] == ["due-in-other-zone", "due-naive"]
    assert due[0].due_at == datetime(2026, 6, 1, 11, 30, tzinfo=UTC)
    assert due[0].due_at.utcoffset() == timedelta(0)


def test_urls_are_translated_between_async_and_sync_drivers() -> None:
    assert sync_url("postgresql+asyncpg://u:p@h:5433/db") == "postgresql+psycopg2://u:p@h:5433/db"
    assert sync_url("sqlite+aiosqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert str(async_url("postgresql://u@h/db")) == "postgresql+asyncpg://u@h/db"
    assert str(async_url("sqlite:///x.db")) == "sqlite+aiosqlite:///x.db"
    with pytest.raises(UnsupportedDatabase, match="mysql"):
        async_url("mysql://h/db")


def test_descriptions_name_the_database_and_never_the_password() -> None:
    assert describe_database("postgresql+asyncpg://u:hunter2@db.local:6543/orders") == (
        "PostgreSQL at db.local:6543/orders"
    )
    assert describe_database("postgresql+asyncpg://u:hunter2@db/orders") == (
        "PostgreSQL at db:5432/orders"
    )
    assert describe_database("sqlite+aiosqlite:////var/lib/x.db") == "SQLite file /var/lib/x.db"


async def test_connect_database_waits_for_postgresql_to_come_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    server = PostgresServer(port=port)
    settings = StorageSettings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",
        startup_retry_max_s=0.3,
    )
    caplog.set_level(logging.WARNING, logger="sagaway.startup")

    async def start_later() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)

    started = time.monotonic()
    starter = asyncio.create_task(start_later())
    try:
        engine = await asyncio.wait_for(connect_database(settings, "orchestrator"), timeout=60)
        try:
            async with engine.connect() as connection:
                assert (await connection.execute(sa.text("SELECT 1"))).scalar_one() == 1
        finally:
            await engine.dispose()
        await starter
    finally:
        starter.cancel()
        await asyncio.to_thread(server.stop)

    assert time.monotonic() - started >= 1.0
    warnings = [r.getMessage() for r in caplog.records if r.name == "sagaway.startup"]
    assert warnings and all(f"PostgreSQL at 127.0.0.1:{port}/postgres is unavailable" in w
                            for w in warnings)  # fmt: skip


async def test_waiting_gives_up_with_an_error_naming_the_database() -> None:
    port = free_port()
    engine = create_database_engine(f"postgresql+asyncpg://postgres:pw@127.0.0.1:{port}/orders")
    try:
        with pytest.raises(DatabaseUnavailable, match=rf"PostgreSQL at 127.0.0.1:{port}/orders"):
            await wait_for_database(engine, max_backoff_s=0.1, give_up_after_s=0.5)
    finally:
        await engine.dispose()


async def test_a_missing_database_is_reported_at_once_not_waited_for(pg_url: str) -> None:
    engine = create_database_engine(pg_url.rsplit("/", 1)[0] + "/no_such_db")
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseMisconfigured, match="no_such_db.*does not exist"):
            await wait_for_database(engine, give_up_after_s=30)
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 5


async def test_postgresql_pool_survives_a_server_restart() -> None:
    """Pooled connections die with the server; they are replaced at checkout, so the first query
    after a restart succeeds instead of raising "connection is closed"."""
    server = await asyncio.to_thread(PostgresServer().start)
    try:
        engine = create_database_engine(server.async_url(), pool_size=2)
        try:
            async with engine.connect() as connection:
                await connection.execute(sa.text("CREATE TABLE kept (n int)"))
                await connection.execute(sa.text("INSERT INTO kept VALUES (7)"))
                await connection.commit()

            await asyncio.to_thread(server.restart)

            async with engine.connect() as connection:
                kept = (await connection.execute(sa.text("SELECT n FROM kept"))).scalar_one()
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(server.stop)
    assert kept == 7


async def test_a_pooled_connection_the_server_terminated_is_replaced_without_a_ping(
    pg_url: str,
) -> None:
    """A backend killed while its connection sat in the pool (an administrator, a failover) is
    noticed at checkout, from the socket's state: the next transaction gets a new connection."""
    engine = create_database_engine(pg_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            first_pid = (await connection.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
        killer = create_database_engine(pg_url, pool_size=1)
        try:
            async with killer.connect() as connection:
                await connection.execute(
                    sa.text("SELECT pg_terminate_backend(:p)"), {"p": first_pid}
                )
        finally:
            await killer.dispose()
        await asyncio.sleep(0.3)  # the loop reads the server's goodbye on the idle socket

        async with engine.connect() as connection:
            second_pid = (await connection.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
    finally:
        await engine.dispose()
    assert second_pid != first_pid


async def test_sqlite_autocommit_reader_does_not_hold_the_write_lock(
    migrated_sqlite_url: str,
) -> None:
    """Transactions start with BEGIN IMMEDIATE (the write lock); a connection that only reads
    and stays open uses AUTOCOMMIT, so writers are not kept waiting behind it."""
    engine = create_database_engine(migrated_sqlite_url)
    now = datetime.now(UTC)
    try:
        async with engine.connect() as reader:
            reader = await reader.execution_options(isolation_level="AUTOCOMMIT")
            await reader.execute(sa.select(sa.func.count()).select_from(timers))
            started = time.monotonic()
            async with engine.begin() as writer:
                await writer.execute(
                    timers.insert().values(
                        saga_id="s", kind="timeout", step="a", attempt=1, due_at=now,
                        created_at=now,
                    )
                )  # fmt: skip
            assert time.monotonic() - started < 1.0
            count = (
                await reader.execute(sa.select(sa.func.count()).select_from(timers))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert count == 1


async def test_a_read_only_connection_neither_waits_for_nor_blocks_a_writer(
    migrated_db_url: str,
) -> None:
    """On SQLite every transaction takes the write lock up front (BEGIN IMMEDIATE) — except a
    `read_only` one, which reads a snapshot while a writer holds the lock, and does not keep
    the next writer waiting while it stays open. On PostgreSQL it is a plain connection."""
    engine = create_database_engine(migrated_db_url)
    now = datetime.now(UTC)
    row = {"saga_id": "s", "kind": "timeout", "step": "a", "attempt": 1, "due_at": now,
           "created_at": now}  # fmt: skip
    count = sa.select(sa.func.count()).select_from(timers)
    try:
        async with engine.begin() as writer:
            await writer.execute(timers.insert(), row)
            async with read_only(engine) as reader:  # the writer holds the lock, uncommitted
                seen = await asyncio.wait_for(reader.scalar(count), 2.0)
                assert seen == 0
        async with read_only(engine) as reader:
            assert await reader.scalar(count) == 1
            started = time.monotonic()
            async with engine.begin() as writer:  # while the reader's snapshot is open
                await writer.execute(timers.insert(), {**row, "step": "b"})
            assert time.monotonic() - started < 1.0
    finally:
        await engine.dispose()
