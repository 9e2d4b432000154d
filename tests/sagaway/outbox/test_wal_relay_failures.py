"""The WAL relay as a process (`sagaway relay`) under kill -9, a broker that is down at start,
and a standby taking over — on real PostgreSQL and tansu."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.inbox import claim
from sagaway.messaging.envelope import Message
from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.records import Record
from sagaway.settings.composed import Settings
from tests.harness.processes import RoleProcess
from tests.harness.waiting import eventually
from tests.sagaway.outbox.broker_reader import BrokerReader
from tests.sagaway.outbox.relay_process import start_relay
from tests.sagaway.outbox.test_wal_relay import seqs_by_key
from tests.sagaway.outbox.writing import write_sequence
from tests.servers.tansu import TansuServer, free_port


@pytest.fixture
def processes() -> Iterator[list[RoleProcess]]:
    started: list[RoleProcess] = []
    yield started
    for process in started:
        process.stop()


async def slot_active(engine: AsyncEngine, slot: str = "sagaway_orders") -> bool:
    async with engine.connect() as conn:
        return bool(
            await conn.scalar(
                sa.text("SELECT active FROM pg_replication_slots WHERE slot_name = :s"),
                {"s": slot},
            )
        )


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Seconds until `check()` held."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await eventually(check, timeout_s=timeout_s, what=what)
    return loop.time() - started


async def handle_once(engine: AsyncEngine, records: list[Record], consumer: str) -> int:
    """A receiver: each record in its own transaction with an inbox claim; returns how many
    times the handler ran."""
    runs = 0
    for record in records:
        message = Message.from_record(record)
        async with engine.begin() as conn:
            if (await claim(conn, consumer, message.message_id)).new:
                runs += 1
    return runs


async def test_kill_9_mid_stream_then_restart_loses_nothing_and_inbox_drops_duplicates(
    relay_kafka_settings: Settings,
    migrated_pg_url: str,
    pg_engine: AsyncEngine,
    tmp_path: Path,
    processes: list[RoleProcess],
) -> None:
    settings = relay_kafka_settings.replace(relay_batch_size=200)
    topic = settings.messaging.topic_prefix + "events"
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    try:
        await kafka.create_topics({topic: 4})
        first = start_relay(settings, migrated_pg_url, "orders", tmp_path / "relay1.log")
        processes.append(first)
        await wait_until(lambda: slot_active(pg_engine), 30, "relay start")
        async with BrokerReader(kafka, [topic]) as reader:
            writers = asyncio.gather(
                *(write_sequence(pg_engine, topic, f"key-{w}", 5000, per_tx=5) for w in range(4))
            )
            await reader.read_until(3000, timeout_s=60)
            first.kill9()  # mid-stream: writers are still committing
            written = await writers
            second = start_relay(settings, migrated_pg_url, "orders", tmp_path / "relay2.log")
            processes.append(second)
            records = await reader.read_until(20_000, timeout_s=90)
            await reader.read_for(1.0)
        expected = {message_id for ids in written for message_id in ids}
        received = {
            (record.header("message-id") or b"").decode()
            for record in records
            if record.topic == topic
        }
        assert received == expected, "every committed message arrived"
        for seqs in seqs_by_key([r for r in records if r.topic == topic]).values():
            assert sorted(set(seqs)) == list(range(5000))
        runs = await handle_once(pg_engine, [r for r in records if r.topic == topic], "receiver")
        assert runs == 20_000, f"{len(records)} deliveries, handler must run once per message"
    finally:
        await kafka.close()


async def test_relay_started_while_broker_is_down_publishes_everything_once_it_is_up(
    relay_kafka_settings: Settings,
    migrated_pg_url: str,
    pg_engine: AsyncEngine,
    tmp_path: Path,
    processes: list[RoleProcess],
) -> None:
    port = free_port()
    settings = relay_kafka_settings.replace(kafka_bootstrap=f"127.0.0.1:{port}")
    topic = settings.messaging.topic_prefix + "events"
    written = await write_sequence(pg_engine, topic, "before", 200, per_tx=20)
    relay = start_relay(settings, migrated_pg_url, "orders", tmp_path / "relay.log")
    processes.append(relay)

    async def said_broker_is_down() -> bool:
        assert relay.process.poll() is None, relay.output()
        return "is unavailable" in relay.output()

    await wait_until(said_broker_is_down, 60, "the relay reporting the broker down")
    written += await write_sequence(pg_engine, topic, "while-down", 200, per_tx=20)
    with TansuServer(port):
        kafka = KafkaTransport(settings.messaging)
        await kafka.start()
        try:
            await kafka.create_topics({topic: 1})
            async with BrokerReader(kafka, [topic]) as reader:
                written += await write_sequence(pg_engine, topic, "after", 100, per_tx=10)
                records = await reader.read_until(500, timeout_s=60)
                await reader.read_for(0.5)
        finally:
            await kafka.close()
    assert {(r.header("message-id") or b"").decode() for r in records} == set(written)


async def test_standby_relay_takes_over_within_seconds_after_kill_9(
    relay_kafka_settings: Settings,
    migrated_pg_url: str,
    pg_engine: AsyncEngine,
    tmp_path: Path,
    processes: list[RoleProcess],
) -> None:
    settings = relay_kafka_settings
    topic = settings.messaging.topic_prefix + "events"
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    try:
        await kafka.create_topics({topic: 2})
        active = start_relay(settings, migrated_pg_url, "orders", tmp_path / "active.log")
        processes.append(active)
        await wait_until(lambda: slot_active(pg_engine), 30, "relay start")
        standby = start_relay(settings, migrated_pg_url, "orders", tmp_path / "standby.log")
        processes.append(standby)

        async def standing_by() -> bool:
            return "standing by" in standby.output()

        await wait_until(standing_by, 20, "standby")
        async with BrokerReader(kafka, [topic]) as reader:
            writer = asyncio.create_task(write_sequence(pg_engine, topic, "k", 3000, per_tx=3))
            await reader.read_until(300, timeout_s=30)
            active.kill9()
            took = await wait_until(lambda: slot_active(pg_engine), 10, "take-over")
            written = await writer
            records = await reader.read_until(3000, timeout_s=60)
            await reader.read_for(0.5)
        assert took < 5.0
        assert {(r.header("message-id") or b"").decode() for r in records} == set(written)
        assert "is active" in standby.output()
    finally:
        await kafka.close()


async def test_relay_reconnects_after_a_postgresql_restart_and_loses_nothing(
    postgres_server,
    relay_kafka_settings: Settings,
    pg_engine: AsyncEngine,  # type: ignore[no-untyped-def]
) -> None:
    if not postgres_server.restartable:
        pytest.skip("the external test database cannot be restarted")
    from sagaway.outbox.wal_relay import WalRelay

    settings = relay_kafka_settings
    topic = settings.messaging.topic_prefix + "events"
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    relay = WalRelay(settings.relay, "orders", pg_engine, kafka)
    task = asyncio.create_task(relay.run())
    try:
        await kafka.create_topics({topic: 2})
        await asyncio.wait_for(relay.active.wait(), 20)
        async with BrokerReader(kafka, [topic]) as reader:
            written = await write_sequence(pg_engine, topic, "before", 200, per_tx=10)
            await reader.read_until(200)
            await asyncio.to_thread(postgres_server.restart, down_for_s=1.0)
            written += await write_sequence(pg_engine, topic, "after", 200, per_tx=10)
            records = await reader.read_until(400, timeout_s=60)
            await reader.read_for(0.5)
        assert {(r.header("message-id") or b"").decode() for r in records} == set(written)
        await asyncio.wait_for(relay.active.wait(), 20)  # streaming again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kafka.close()
