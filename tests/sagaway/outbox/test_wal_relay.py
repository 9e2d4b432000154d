"""The WAL relay on a real PostgreSQL and a real Kafka-protocol broker (tansu)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.records import Record
from sagaway.outbox.models import outbox
from sagaway.outbox.wal_relay import WalRelay
from sagaway.outbox.wal_slot import drop_slot, slot_name
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually
from tests.sagaway.outbox.broker_reader import BrokerReader
from tests.sagaway.outbox.writing import numbered, write_sequence


@pytest.fixture
async def kafka(relay_kafka_settings: Settings) -> AsyncIterator[KafkaTransport]:
    transport = KafkaTransport(relay_kafka_settings.messaging)
    await transport.start()
    yield transport
    await transport.close()


@contextlib.asynccontextmanager
async def running(relay: WalRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def seqs_by_key(records: list[Record]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for record in records:
        payload = orjson.loads(record.value)
        out[payload["key"]].append(payload["seq"])
    return out


async def outbox_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) or 0)


async def test_twenty_thousand_rows_from_four_writers_arrive_in_commit_order_per_key(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine, kafka: KafkaTransport
) -> None:
    topic = relay_kafka_settings.messaging.topic_prefix + "events"
    await kafka.create_topics({topic: 4})
    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka)
    async with BrokerReader(kafka, [topic]) as reader, running(relay):
        await asyncio.wait_for(relay.active.wait(), 20)
        await asyncio.gather(
            *(write_sequence(pg_engine, topic, f"key-{w}", 5000, per_tx=10) for w in range(4))
        )
        records = await reader.read_until(20_000, timeout_s=60)
        await reader.read_for(0.5)
    by_key = seqs_by_key(records)
    assert sorted(by_key) == [f"key-{w}" for w in range(4)]
    for seqs in by_key.values():
        assert seqs == list(range(5000))  # none missing, none twice, in commit order
    assert await outbox_count(pg_engine) <= 1  # published rows are pruned (maybe a heartbeat)


async def test_rolled_back_transaction_publishes_nothing(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine, kafka: KafkaTransport
) -> None:
    topic = relay_kafka_settings.messaging.topic_prefix + "events"
    await kafka.create_topics({topic: 1})
    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka, heartbeat=False)
    async with BrokerReader(kafka, [topic]) as reader, running(relay):
        await asyncio.wait_for(relay.active.wait(), 20)
        with contextlib.suppress(RuntimeError):
            async with pg_engine.begin() as conn:
                await add_to_outbox(conn, [(topic, numbered("rolled-back", 0))])
                raise RuntimeError("business failure")
        async with pg_engine.begin() as conn:
            await add_to_outbox(conn, [(topic, numbered("committed", 0))])
        records = await reader.read_until(1)
        await reader.read_for(1.0)
    assert list(seqs_by_key(records)) == ["committed"]


async def test_rows_committed_before_the_slot_existed_are_published_once(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine, kafka: KafkaTransport
) -> None:
    topic = relay_kafka_settings.messaging.topic_prefix + "events"
    await kafka.create_topics({topic: 1})
    await write_sequence(pg_engine, topic, "early", 300, per_tx=100)
    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka, heartbeat=False)
    async with BrokerReader(kafka, [topic]) as reader, running(relay):
        await asyncio.wait_for(relay.active.wait(), 20)
        await write_sequence(pg_engine, topic, "early", 0)
        await write_sequence(pg_engine, topic, "late", 50, per_tx=5)
        records = await reader.read_until(350)
        await reader.read_for(0.5)
    by_key = seqs_by_key(records)
    assert by_key["early"] == list(range(300))
    assert by_key["late"] == list(range(50))


async def test_idle_relay_confirms_progress_so_the_slot_does_not_pin_wal(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine, kafka: KafkaTransport
) -> None:
    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka, heartbeat=False)
    slot = slot_name(relay_kafka_settings.relay, "orders")

    async def slot_lag() -> int:
        async with pg_engine.connect() as conn:
            return int(
                await conn.scalar(
                    sa.text(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
                        " FROM pg_replication_slots WHERE slot_name = :s"
                    ),
                    {"s": slot},
                )
            )

    async with running(relay):
        await asyncio.wait_for(relay.active.wait(), 20)
        # WAL from other tables (nothing for the outbox) must not stay pinned.
        async with pg_engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE busy (n int)"))
            await conn.execute(sa.text("INSERT INTO busy SELECT generate_series(1, 50000)"))
        assert await slot_lag() > 1_000_000

        async def caught_up() -> bool:
            return await slot_lag() < 100_000

        await eventually(caught_up, timeout_s=10, what="the slot to catch up")


async def test_drop_slot_removes_slot_and_publication_and_refuses_while_active(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine, kafka: KafkaTransport
) -> None:
    from sagaway.outbox.wal_slot import SlotInUse

    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka, heartbeat=False)
    async with running(relay):
        await asyncio.wait_for(relay.active.wait(), 20)
        await asyncio.sleep(0.5)
        with pytest.raises(SlotInUse):
            await drop_slot(pg_engine, relay_kafka_settings.relay, "orders")
    dropped = await drop_slot(pg_engine, relay_kafka_settings.relay, "orders")
    assert dropped == ["replication slot sagaway_orders", "publication sagaway_orders"]
    assert await drop_slot(pg_engine, relay_kafka_settings.relay, "orders") == []
