"""A broker that is down at start-up: the process says which one and retries; it does not die."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sagaway.messaging.factory import connect_transport, make_transport
from sagaway.messaging.kafka import KafkaTransport
from sagaway.messaging.transport import TransportError
from tests.fixtures.broker import tuned_settings
from tests.harness.waiting import eventually
from tests.servers.tansu import TansuServer, free_port

pytestmark = pytest.mark.timeout(60)


async def test_connect_waits_for_a_kafka_broker_that_comes_up_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = tuned_settings(tmp_path, f"127.0.0.1:{port}", startup_retry_max_s=0.5)
    caplog.set_level(logging.WARNING, logger="sagaway.startup")
    connecting = asyncio.create_task(connect_transport(settings.messaging))


    def warned() -> bool:
        assert not connecting.done(), connecting.result()
        return any("unavailable" in r.getMessage() for r in caplog.records)

    await eventually(warned, timeout_s=20, what="a warning about the unavailable broker")
    warning = next(r.getMessage() for r in caplog.records if "unavailable" in r.getMessage())
    assert f"Kafka broker at 127.0.0.1:{port} is unavailable" in warning
    assert not connecting.done()

    with TansuServer(port):
        transport = await asyncio.wait_for(connecting, 30)
        try:
            assert isinstance(transport, KafkaTransport)
            await transport.ping()
            await transport.create_topics({settings.messaging.topic_prefix + "up.requests": 1})
        finally:
            await transport.close()


async def test_starting_against_a_missing_broker_raises_a_transport_error(tmp_path: Path) -> None:
    settings = tuned_settings(tmp_path, f"127.0.0.1:{free_port()}")
    transport = make_transport(settings.messaging)
    with pytest.raises(TransportError, match="unavailable"):
        await transport.start()
    await transport.close()


async def test_without_kafka_the_embedded_broker_is_chosen(tmp_path: Path) -> None:
    settings = tuned_settings(tmp_path / "data")
    transport = await connect_transport(settings.messaging)
    try:
        await transport.ping()
        assert (tmp_path / "data" / "broker.db").exists()
    finally:
        await transport.close()
