"""The overview's consumer-lag panel on both brokers the suite has: the embedded one (real lag per
group) and tansu, a Kafka-protocol broker that cannot report committed offsets (aiokafka cannot
decode its OffsetFetch answer) — one clear line, one WARNING, remembered, no ERROR traceback —
and a Kafka broker that is down. There is no real Kafka here: lag read from a Kafka that answers
OffsetFetch stays covered by the Kafka transport's own tests, not by these."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from starlette.testclient import TestClient

from console.consumer_lag import BrokerMemory, ConsumerLagUnavailable, GroupLag, consumer_lag
from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.records import Record
from sagaway.settings import MessagingSettings
from sagaway.settings.composed import load_settings
from tests.console.conftest import console_app, console_settings, log_in
from tests.fixtures.broker import tuned_settings
from tests.servers.tansu import TansuServer, free_port

CANNOT = "this broker cannot report consumer offsets ("


@pytest.fixture
def tansu() -> Iterator[TansuServer]:
    """A tansu of this test's own (it is stopped mid-test), with one group that committed."""
    with TansuServer() as server:
        yield server


async def commit_a_group(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("orders", 2, 1)])
    finally:
        await admin.close()
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="billing")
    await member.start()
    try:
        orders = TopicPartition("orders", 0)
        member.assign([orders])
        await member.commit({orders: 0})
    finally:
        await member.stop()


def problems(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "console.consumer_lag"]


async def test_tansu_cannot_report_offsets_told_in_one_line_warned_once_and_remembered(
    tansu: TansuServer, caplog: pytest.LogCaptureFixture
) -> None:
    await commit_a_group(tansu.bootstrap)
    messaging = MessagingSettings(kafka_bootstrap=tansu.bootstrap)
    memory = BrokerMemory()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        with pytest.raises(ConsumerLagUnavailable) as told:
            await consumer_lag(messaging, memory)
        reason = str(told.value)
        assert reason.startswith(CANNOT) and "\n" not in reason, reason
        assert "unpack requires a buffer of 4 bytes" in reason
        # Remembered: the next refresh does not ask the broker (it is gone and still the same).
        tansu.stop()
        with pytest.raises(ConsumerLagUnavailable, match="cannot report consumer offsets"):
            await consumer_lag(messaging, memory)
    assert problems(caplog) == [], [r.getMessage() for r in problems(caplog)]
    assert len(warnings(caplog)) == 1 and CANNOT in warnings(caplog)[0]


async def test_a_kafka_broker_that_is_down_is_one_line_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    memory = BrokerMemory()
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            with pytest.raises(ConsumerLagUnavailable) as told:
                await consumer_lag(MessagingSettings(kafka_bootstrap=bootstrap), memory)
            reason = str(told.value)
            assert reason.startswith(f"Kafka at {bootstrap} is unreachable (")
            assert "\n" not in reason
    assert not [r for r in caplog.records if r.exc_info]
    assert warnings(caplog) == [f"consumer lag: {reason}"]


def test_the_overview_on_tansu_shows_the_line_instead_of_a_connection_error(
    tansu: TansuServer, tmp_path: Path, sqlite_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(commit_a_group(tansu.bootstrap))
    for service in ("orchestrator", "gateway"):
        shutil.copyfile(sqlite_template, tmp_path / f"{service}.db")
    console = console_settings(tmp_path).console
    settings = load_settings(data_dir=tmp_path, kafka_bootstrap=tansu.bootstrap, console=console)
    assert settings.messaging.kafka_bootstrap == tansu.bootstrap
    with TestClient(console_app(settings), base_url="https://testserver") as client:
        log_in(client, "vera")
        html = client.get("/").text
    assert "Consumer lag per topic and group" in html
    assert CANNOT in html
    assert "KafkaConnectionError" not in html
    assert problems(caplog) == [], [r.getMessage() for r in problems(caplog)]


async def test_embedded_broker_lag_per_group_and_topic(tmp_path: Path) -> None:
    settings = tuned_settings(tmp_path / "data", partitions=2)
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({"orders": 2})
        await transport.produce([Record("orders", b"o", key=str(i).encode()) for i in range(5)])
        member = transport.subscribe("billing", ["orders"])
        await member.start()
        try:
            got: list[Record] = []
            while len(got) < 2:
                got += await member.fetch(2 - len(got), 200)
            await member.commit(got[:2])
        finally:
            await member.close()
        lag = await consumer_lag(settings.messaging)
    finally:
        await transport.close()
    committed = {(r.partition, r.offset) for r in got[:2]}
    assert lag == [GroupLag("billing", "orders", 5 - len(committed), 2)]


async def test_an_unreadable_embedded_broker_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "broker.db").write_bytes(b"not a database, " * 64)
    with pytest.raises(ConsumerLagUnavailable) as told:
        await consumer_lag(MessagingSettings(data_dir=tmp_path))
    assert str(told.value).startswith("the embedded broker's file ")
    assert "cannot be read (file is not a database)" in str(told.value)
