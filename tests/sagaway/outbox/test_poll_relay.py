"""The polling relay: SQLite with the embedded broker, and PostgreSQL (SKIP LOCKED) with tansu."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.records import Record
from sagaway.messaging.transport import Transport
from sagaway.outbox import poll_relay
from sagaway.outbox.models import outbox
from sagaway.outbox.poll_relay import PollRelay
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.harness.processes import RoleProcess
from tests.harness.waiting import eventually, seen_each_turn
from tests.sagaway.outbox.broker_reader import BrokerReader
from tests.sagaway.outbox.relay_process import start_relay
from tests.sagaway.outbox.test_wal_relay import seqs_by_key
from tests.sagaway.outbox.test_wal_relay_failures import handle_once
from tests.sagaway.outbox.writing import numbered, write_sequence


class Setup:
    def __init__(self, settings: Settings, url: str, engine: AsyncEngine, transport: Transport):
        self.settings = settings
        self.url = url
        self.engine = engine
        self.transport = transport
        self.topic = settings.messaging.topic_prefix + "events"


@pytest.fixture(params=["sqlite+embedded", "postgresql+kafka"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    if request.param == "sqlite+embedded":
        settings: Settings = request.getfixturevalue("relay_embedded_settings")
        url: str = request.getfixturevalue("migrated_sqlite_url")
        transport: Transport = EmbeddedTransport(settings.messaging)
    else:
        settings = request.getfixturevalue("relay_kafka_settings")
        url = request.getfixturevalue("migrated_pg_url")
        transport = KafkaTransport(settings.messaging)
    engine = create_database_engine(url)
    await transport.start()
    try:
        yield Setup(settings, url, engine, transport)
    finally:
        await transport.close()
        await engine.dispose()


@contextlib.asynccontextmanager
async def running(relay: PollRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
        return int(await conn.scalar(query) or 0)


def ids(records: list[Record]) -> list[str]:
    return [(record.header("message-id") or b"").decode() for record in records]


async def test_rows_from_four_writers_all_arrive_in_commit_order_per_key(setup: Setup) -> None:
    await setup.transport.create_topics({setup.topic: 4})
    relay = PollRelay(
        setup.settings.relay, "orders", setup.engine, setup.transport, heartbeat=False
    )
    async with BrokerReader(setup.transport, [setup.topic]) as reader, running(relay):
        written = await asyncio.gather(
            *(
                write_sequence(setup.engine, setup.topic, f"key-{w}", 1000, per_tx=5)
                for w in range(4)
            )
        )
        records = await reader.read_until(4000, timeout_s=60)
        await reader.read_for(0.5)
    assert sorted(ids(records)) == sorted(i for batch in written for i in batch)
    for seqs in seqs_by_key(records).values():
        assert seqs == list(range(1000))
    assert await unpublished(setup.engine) == 0


async def test_rolled_back_transaction_publishes_nothing(setup: Setup) -> None:
    await setup.transport.create_topics({setup.topic: 1})
    with contextlib.suppress(RuntimeError):
        async with setup.engine.begin() as conn:
            await add_to_outbox(conn, [(setup.topic, numbered("rolled-back", 0))])
            raise RuntimeError("business failure")
    async with setup.engine.begin() as conn:
        await add_to_outbox(conn, [(setup.topic, numbered("committed", 0))])
    relay = PollRelay(
        setup.settings.relay, "orders", setup.engine, setup.transport, heartbeat=False
    )
    async with BrokerReader(setup.transport, [setup.topic]) as reader:
        assert await relay.publish_batch() == 1
        assert await relay.publish_batch() == 0
        records = await reader.read_until(1)
        await reader.read_for(0.5)
    assert list(seqs_by_key(records)) == ["committed"]


async def test_published_rows_are_pruned_after_the_retention(setup: Setup) -> None:
    await setup.transport.create_topics({setup.topic: 1})
    await write_sequence(setup.engine, setup.topic, "k", 10)
    keep = PollRelay(setup.settings.relay, "orders", setup.engine, setup.transport, heartbeat=False)
    assert await keep.publish_batch() == 10
    await keep.mark_held()  # SQLite holds the marks; PostgreSQL marked in the batch: 0
    assert await keep.prune() == 0  # an hour's retention by default in these settings
    short = setup.settings.replace(relay_retention_s=0.0)
    relay = PollRelay(short.relay, "orders", setup.engine, setup.transport, heartbeat=False)
    assert await relay.prune() == 10
    async with setup.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 0


async def test_a_row_committed_late_with_a_lower_id_is_not_skipped(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine
) -> None:
    topic = relay_kafka_settings.messaging.topic_prefix + "events"
    kafka = KafkaTransport(relay_kafka_settings.messaging)
    await kafka.start()
    try:
        await kafka.create_topics({topic: 1})
        relay = PollRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka, heartbeat=False)
        async with BrokerReader(kafka, [topic]) as reader:
            async with pg_engine.connect() as slow:
                await slow.begin()
                await add_to_outbox(slow, [(topic, numbered("slow", 0))])  # takes the lower id
                async with pg_engine.begin() as fast:
                    await add_to_outbox(fast, [(topic, numbered("fast", 0))])
                assert await relay.publish_batch() == 1  # only the committed one is visible
                await slow.commit()
            assert await relay.publish_batch() == 1
            records = await reader.read_until(2)
        assert [seq for seq in seqs_by_key(records)] == ["fast", "slow"]
        async with pg_engine.connect() as conn:
            ids_in_order = (
                await conn.execute(sa.select(outbox.c.key).order_by(outbox.c.id))
            ).scalars()
            assert list(ids_in_order) == ["slow", "fast"]  # "slow" really had the lower id
    finally:
        await kafka.close()


async def test_concurrent_pollers_skip_locked_rows_and_publish_each_row_once(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine
) -> None:
    topic = relay_kafka_settings.messaging.topic_prefix + "events"
    settings = relay_kafka_settings.replace(relay_batch_size=50)
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    try:
        await kafka.create_topics({topic: 2})
        written = await write_sequence(pg_engine, topic, "k", 2000, per_tx=100)
        pollers = [
            PollRelay(settings.relay, "orders", pg_engine, kafka, heartbeat=False) for _ in range(3)
        ]

        async def drain(relay: PollRelay) -> None:
            while await relay.publish_batch():
                pass

        async with BrokerReader(kafka, [topic]) as reader:
            await asyncio.gather(*(drain(p) for p in pollers))
            records = await reader.read_until(2000)
            await reader.read_for(0.5)
        assert sorted(ids(records)) == sorted(written)  # each exactly once
        assert all(p.published > 0 for p in pollers)  # they really shared the work
    finally:
        await kafka.close()


async def test_sqlite_kill_9_mid_stream_then_restart_loses_nothing_and_inbox_drops_duplicates(
    relay_embedded_settings: Settings,
    migrated_sqlite_url: str,
    tmp_path: Path,
) -> None:
    settings = relay_embedded_settings.replace(relay_batch_size=100)
    topic = settings.messaging.topic_prefix + "events"
    engine = create_database_engine(migrated_sqlite_url)
    broker = EmbeddedTransport(settings.messaging)
    await broker.start()
    processes: list[RoleProcess] = []
    try:
        await broker.create_topics({topic: 4})
        processes.append(start_relay(settings, migrated_sqlite_url, "orders", tmp_path / "r1.log"))
        async with BrokerReader(broker, [topic]) as reader:
            writers = asyncio.gather(
                *(write_sequence(engine, topic, f"key-{w}", 1000, per_tx=5) for w in range(4))
            )
            await reader.read_until(500, timeout_s=60)
            processes[0].kill9()
            written = await writers
            processes.append(
                start_relay(settings, migrated_sqlite_url, "orders", tmp_path / "r2.log")
            )
            records = await reader.read_until(4000, timeout_s=90)
            await reader.read_for(1.0)
        events = [r for r in records if r.topic == topic]
        assert set(ids(events)) == {i for batch in written for i in batch}
        for seqs in seqs_by_key(events).values():
            assert sorted(set(seqs)) == list(range(1000))
        assert await handle_once(engine, events, "receiver") == 4000
    finally:
        for process in processes:
            process.stop()
        await broker.close()
        await engine.dispose()


async def test_a_backlog_is_published_batch_by_batch_letting_the_loop_run_between(
    relay_embedded_settings: Settings, migrated_sqlite_url: str
) -> None:
    """Inline SQLite and the embedded broker never suspend within a batch; the relay still gives
    the loop a turn between full batches, so its process's consumers are not held up by it."""
    settings = relay_embedded_settings.replace(relay_batch_size=2)
    engine = create_database_engine(migrated_sqlite_url)
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        topic = settings.messaging.topic_prefix + "events"
        await transport.create_topics({topic: 1})
        await write_sequence(engine, topic, "k", 10)
        relay = PollRelay(settings.relay, "orders", engine, transport, heartbeat=False)
        async with seen_each_turn(lambda: relay.published) as seen_between, running(relay):
            await eventually(lambda: relay.published == 10, timeout_s=30, what="the backlog")
        assert {2, 4, 6, 8} <= set(seen_between)
    finally:
        await transport.close()
        await engine.dispose()


def is_all_marked(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await unpublished(engine) == 0

    return check


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "aiosqlite"])
@pytest.mark.parametrize("interval_s", [60.0, 0.0])
async def test_sqlite_holds_the_marks_and_writes_them_in_one_transaction(
    relay_embedded_settings: Settings, migrated_sqlite_url: str, interval_s: float, inline: bool
) -> None:
    """Held marks: three one-row batches are marked by one statement (one acknowledgement time
    for all three), and the reads after the first skip the held ids (nothing is published twice).
    0 marks each batch at once. An inline engine reads and marks on sqlite3 itself, another
    SQLite engine through SQLAlchemy: both the same way."""
    settings = relay_embedded_settings.replace(relay_mark_interval_s=interval_s)
    topic = settings.messaging.topic_prefix + "events"
    sqlite_engine = create_database_engine(migrated_sqlite_url, sqlite_inline=inline)
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 1})
        relay = PollRelay(settings.relay, "orders", sqlite_engine, transport, heartbeat=False)
        async with BrokerReader(transport, [topic]) as reader:
            for seq in range(3):
                await write_sequence(sqlite_engine, topic, f"k{seq}", 1)
                assert await relay.publish_batch() == 1
                await asyncio.sleep(0.01)  # acknowledgements apart in time
            assert await relay.publish_batch() == 0
            held = 3 if interval_s else 0
            assert await unpublished(sqlite_engine) == held
            assert await relay.mark_held() == held
            assert await unpublished(sqlite_engine) == 0
            records = await reader.read_until(3)
            await reader.read_for(0.3)
        assert sorted(seqs_by_key(records)) == ["k0", "k1", "k2"]
        assert len(records) == 3
        async with sqlite_engine.connect() as conn:
            stamps = (await conn.execute(sa.select(outbox.c.published_at))).scalars().all()
        assert len(set(stamps)) == (1 if held else 3)
        assert all(stamp.tzinfo is not None for stamp in stamps)  # read back as a Timestamp
    finally:
        await transport.close()
        await sqlite_engine.dispose()


async def test_sqlite_running_relay_marks_within_the_interval_and_on_a_clean_stop(
    relay_embedded_settings: Settings, sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks due while the relay waits for the doorbell are written without another read of
    the outbox; a clean stop writes those it still holds."""
    reads: list[int] = []
    read = poll_relay.read_direct
    monkeypatch.setattr(poll_relay, "read_direct", lambda *a: reads.append(1) or read(*a))
    topic = relay_embedded_settings.messaging.topic_prefix + "events"
    transport = EmbeddedTransport(relay_embedded_settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 1})
        for interval_s, stop_early in ((0.2, False), (3600.0, True)):
            settings = relay_embedded_settings.replace(relay_mark_interval_s=interval_s)
            relay = PollRelay(settings.relay, "orders", sqlite_engine, transport, heartbeat=False)
            task = asyncio.create_task(relay.run())
            await write_sequence(sqlite_engine, topic, f"interval-{interval_s}", 5)
            await eventually(lambda r=relay: r.published == 5, timeout_s=30, what="published")
            reads_when_published = len(reads)
            if stop_early:
                assert await unpublished(sqlite_engine) > 0  # held: an hour's interval
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await eventually(is_all_marked(sqlite_engine), timeout_s=10, what="marked")
            if not stop_early:
                await asyncio.sleep(0.3)
                assert len(reads) == reads_when_published  # marked without a look
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await transport.close()
