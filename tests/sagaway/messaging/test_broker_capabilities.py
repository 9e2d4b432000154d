"""The broker's abilities are asked, not assumed: against a broker that cannot give producer ids
(the suite's `tansu` answers InitProducerId with UnknownError) `auto` falls back to the plain
producer with one warning, `true` stops at once naming the setting — never a retry forever."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from sagaway.messaging import kafka_capabilities
from sagaway.messaging.envelope import Message
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.kafka_capabilities import BrokerCannotDoThat
from sagaway.outbox.models import outbox
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.harness.processes import RoleProcess, settings_environment
from tests.harness.waiting import eventually_sync
from tests.sagaway.outbox.broker_reader import BrokerReader

pytestmark = pytest.mark.timeout(90)

FALLBACK = "cannot give producer ids (InitProducerId answered UnknownError)"


@pytest.fixture(autouse=True)
def ask_the_broker_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test asks the broker itself, as a new process does."""
    monkeypatch.setattr(kafka_capabilities, "_refusals", {})


def settings_with(tmp_path: Path, bootstrap: str, idempotence: object) -> Settings:
    return tuned_settings(tmp_path / "data", bootstrap, producer_idempotence=idempotence)


def test_auto_is_the_default() -> None:
    assert Settings().messaging.producer_idempotence == "auto"


async def test_auto_falls_back_to_the_plain_producer_with_one_warning(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(tmp_path, kafka_bootstrap, "auto")
    caplog.set_level(logging.WARNING)

    first = await connect_transport(settings.messaging, give_up_after_s=30)
    second = await connect_transport(settings.messaging, give_up_after_s=30)
    try:
        assert isinstance(first, KafkaTransport) and isinstance(second, KafkaTransport)
        assert (first.idempotent, second.idempotent) == (False, False)
        topic = settings.messaging.topic_prefix + "capabilities"
        await first.create_topics({topic: 1})
        async with BrokerReader(second, [topic]) as reader:
            await first.produce([Message(message_type="event", payload={"n": 1}).to_record(topic)])
            [record] = await reader.read_until(1, timeout_s=30)
        assert Message.from_record(record).payload == {"n": 1}
    finally:
        await first.close()
        await second.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if FALLBACK in w]) == 1, warnings
    [warning] = [w for w in warnings if FALLBACK in w]
    assert "may then write a record twice; every consumer's inbox drops the copy" in warning
    assert "SAGAWAY_PRODUCER_IDEMPOTENCE=false skips this check" in warning
    assert not any("InitProducerIdRequest" in w for w in warnings), warnings


async def test_true_stops_at_once_naming_the_setting(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, kafka_bootstrap, "true")

    with pytest.raises(BrokerCannotDoThat) as refused:
        await connect_transport(settings.messaging)

    assert str(refused.value) == (
        f"the Kafka broker at {kafka_bootstrap} {FALLBACK}, which "
        "SAGAWAY_PRODUCER_IDEMPOTENCE=true requires: set it to auto (use the plain producer on "
        "such a broker) or false"
    )


async def test_false_does_not_ask(kafka_bootstrap: str, tmp_path: Path) -> None:
    transport = await connect_transport(settings_with(tmp_path, kafka_bootstrap, False).messaging)
    try:
        assert isinstance(transport, KafkaTransport) and not transport.idempotent
    finally:
        await transport.close()
    assert kafka_capabilities._refusals == {}


async def test_a_relay_with_the_default_setting_publishes_through_the_broker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """What the README's deployment does: every role on the default `auto`, against tansu."""
    settings = settings_with(tmp_path, kafka_bootstrap, "auto")
    url = settings.storage.database_url_for("payments")
    upgrade(url)
    topic = settings.messaging.topic_prefix + "capabilities"
    transport = await connect_transport(settings.messaging, give_up_after_s=30)
    engine = create_database_engine(url, pool_size=1)
    try:
        await transport.create_topics({topic: 1})
        async with engine.begin() as conn:
            await add_to_outbox(conn, [(topic, Message(message_type="event", payload={}))])
    finally:
        await engine.dispose()
        await transport.close()
    env = settings_environment(settings)
    assert "SAGAWAY_PRODUCER_IDEMPOTENCE" in env
    del env["SAGAWAY_PRODUCER_IDEMPOTENCE"]
    relay = RoleProcess(
        "relay", ["relay", "--service", "payments"], env, tmp_path / "relay.log", tmp_path
    ).start()
    sync_engine = sa.create_engine(f"sqlite:///{settings.storage.data_dir / 'payments.db'}")

    def published() -> bool:
        if not relay.alive:
            raise AssertionError(f"the relay exited:\n{relay.log_tail()}")
        with sync_engine.connect() as conn:
            return bool(
                conn.scalar(
                    sa.select(sa.func.count()).where(
                        outbox.c.topic == topic, outbox.c.published_at.is_not(None)
                    )
                )
            )

    try:
        eventually_sync(published, timeout_s=40, what=lambda: f"published:\n{relay.log_tail()}")
    finally:
        relay.stop()
        sync_engine.dispose()
    log = relay.output()
    assert log.count(FALLBACK) == 1, log
    assert "InitProducerIdRequest" not in log and "unavailable" not in log, log
