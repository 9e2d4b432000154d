"""`sagaway topics grow`: shrinking is refused with the reason, --dry-run changes nothing, then
the counts rise (embedded broker), or the broker's inability is said (tansu has no
CreatePartitions). Sagas in flight across a grow:
tests/examples/place_order/test_grow_in_flight.py."""

from __future__ import annotations

import asyncio

import pytest

from sagaway.messaging.records import Record
from sagaway.messaging.topic_admin import describe_topics
from sagaway.messaging.topics import TopicNames
from sagaway.settings.composed import Settings
from tests.fixtures.broker import MakeTransport
from tests.sagaway.cli.test_topics_verbs import invoke

pytestmark = pytest.mark.timeout(90)


async def cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(invoke, settings, "topics", "grow", *args)
    return result.exit_code, result.output


async def test_grow_refuses_a_shrink_previews_on_a_dry_run_then_raises(
    broker_settings: Settings, make_test_transport: MakeTransport, transport_kind: str
) -> None:
    names = TopicNames(broker_settings.messaging.topic_prefix)
    transport = await make_test_transport()
    topics = [names.requests("payments"), names.replies("payments")]
    await transport.create_topics({t: 4 for t in topics})

    code, out = await cli(broker_settings, "payments", "--partitions", "2")
    assert code == 1
    assert "would remove some: Kafka cannot delete partitions" in out

    code, out = await cli(broker_settings, "payments", "--partitions", "6", "--dry-run")
    assert code == 0, out
    assert f"{topics[0]}: would raise to 6" in out
    found = await describe_topics(transport)
    assert {t: found[t].partitions for t in topics} == {t: 4 for t in topics}

    code, out = await cli(broker_settings, "payments", "--partitions", "6")
    if transport_kind == "kafka":
        assert code == 1
        assert "does not answer CreatePartitions" in out
        return
    assert code == 0, out
    assert f"{topics[0]}: raised to 6" in out and "sagas in flight keep their partitions" in out
    found = await describe_topics(transport)
    assert {t: found[t].partitions for t in topics} == {t: 6 for t in topics}
    await transport.produce([Record(topic=topics[0], value=b"{}", partition=5)])

    code, out = await cli(broker_settings, "payments", "--partitions", "6")
    assert code == 0 and "already has 6 partitions" in out
