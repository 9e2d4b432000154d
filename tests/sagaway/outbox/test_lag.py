"""Lag figures: unpublished rows, oldest age, slot lag bytes, and the heartbeat's commit → broker
time, for both relays; and `sagaway relay lag` / `drop-slot` from the command line."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.cli.main import main
from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.topics import TopicNames
from sagaway.outbox.lag import OutboxLag, heartbeat_topic, measure_lag
from sagaway.outbox.poll_relay import POLL_RELAY_NAME, PollRelay
from sagaway.outbox.wal_relay import WalRelay
from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually
from tests.sagaway.outbox.broker_reader import BrokerReader
from tests.sagaway.outbox.writing import write_sequence


async def test_unpublished_rows_and_oldest_age_are_counted(sqlite_engine: AsyncEngine) -> None:
    empty = await measure_lag(sqlite_engine, POLL_RELAY_NAME)
    assert (empty.unpublished_rows, empty.oldest_age_s, empty.slot_lag_bytes) == (0, None, None)
    await write_sequence(sqlite_engine, "t", "k", 5)
    await asyncio.sleep(0.2)
    lag = await measure_lag(sqlite_engine, POLL_RELAY_NAME)
    assert lag.unpublished_rows == 5
    assert lag.oldest_age_s is not None and 0.2 <= lag.oldest_age_s < 5


async def test_poll_relay_heartbeat_measures_commit_to_broker_seconds(
    relay_embedded_settings: Settings, sqlite_engine: AsyncEngine
) -> None:
    broker = EmbeddedTransport(relay_embedded_settings.messaging)
    await broker.start()
    relay = PollRelay(relay_embedded_settings.relay, "orders", sqlite_engine, broker)
    topic = heartbeat_topic(TopicNames(relay_embedded_settings.messaging.topic_prefix))
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.2)
        async with BrokerReader(broker, [topic]) as reader:
            records = await reader.read_until(2, timeout_s=10)
        assert orjson.loads(records[0].value) == {"service": "orders", "relay": POLL_RELAY_NAME}
        lag = await measure_lag(sqlite_engine, POLL_RELAY_NAME)
        assert lag.heartbeat_lag_s is not None and 0 <= lag.heartbeat_lag_s < 1.0
        assert lag.heartbeat_at is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()


async def test_wal_relay_heartbeat_and_slot_lag(
    relay_kafka_settings: Settings, pg_engine: AsyncEngine
) -> None:
    kafka = KafkaTransport(relay_kafka_settings.messaging)
    await kafka.start()
    relay = WalRelay(relay_kafka_settings.relay, "orders", pg_engine, kafka)
    task = asyncio.create_task(relay.run())
    try:
        async def measured() -> OutboxLag | None:
            lag = await measure_lag(pg_engine, relay.slot, relay.slot)
            return lag if lag.heartbeat_lag_s is not None else None

        lag = await eventually(measured, timeout_s=15, what="a heartbeat measured", interval_s=0.1)
        assert 0 <= lag.heartbeat_lag_s < 1.0
        assert lag.slot_lag_bytes is not None and lag.slot_lag_bytes >= 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kafka.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_relay_lag_command_prints_one_json_line(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = request.getfixturevalue("migrated_sqlite_url" if kind == "sqlite" else "migrated_pg_url")
    monkeypatch.setenv("SAGAWAY_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["relay", "lag", "--service", "orders"])
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.output)
    assert figures["unpublished_rows"] == 0
    assert figures["relay"] == ("poll" if kind == "sqlite" else "sagaway_orders")


def test_drop_slot_command_on_a_database_without_a_slot(
    migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAWAY_DATABASE_URL", migrated_pg_url)
    result = CliRunner().invoke(main, ["relay", "drop-slot", "--service", "orders"])
    assert result.exit_code == 0, result.output
    assert "nothing to drop" in result.output


def test_drop_slot_command_on_sqlite_is_a_clear_error(
    migrated_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAWAY_DATABASE_URL", migrated_sqlite_url)
    result = CliRunner().invoke(main, ["relay", "drop-slot"])
    assert result.exit_code == 1
    assert "only on PostgreSQL" in result.output
