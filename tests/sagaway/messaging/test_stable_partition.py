"""A keyed outbox row carrying `partition-count` goes to murmur2(key) % that count, whatever the
topic has now: the stable mapping that keeps a saga's records on one partition across a grow
(docs/scaling.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.envelope import (
    PARTITION_COUNT_HEADER,
    REPLY_PARTITION_COUNT_HEADER,
    command,
    reply_to,
)
from sagaway.messaging.partition_counts import PartitionCounts
from sagaway.messaging.records import Record
from sagaway.messaging.topic_grow import raise_partitions
from sagaway.outbox.rows import OutboxRow
from sagaway.settings.composed import Settings


def row(key: str, headers: dict[str, str]) -> OutboxRow:
    return OutboxRow(id=1, topic="t", key=key, headers=headers, payload=b"{}")


def keys_that_move(old: int, new: int) -> list[str]:
    """Saga ids whose partition differs between the two counts."""
    moved = [f"saga-{i}" for i in range(200)]
    return [
        k for k in moved if default_partition(k.encode(), old) != default_partition(k.encode(), new)
    ]


@contextlib.asynccontextmanager
async def payments_topic(
    settings: Settings, partitions: int
) -> AsyncIterator[tuple[EmbeddedTransport, str]]:
    """An embedded transport and its payments.requests topic of `partitions` partitions."""
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        topic = settings.messaging.topic_prefix + "payments.requests"
        await transport.create_topics({topic: partitions})
        yield transport, topic
    finally:
        await transport.close()


async def test_a_saga_started_before_a_grow_keeps_its_partition(
    embedded_settings: Settings,
) -> None:
    async with payments_topic(embedded_settings, 4) as (transport, topic):
        await raise_partitions(transport, {topic: 8})
        sagas = keys_that_move(4, 8)[:20]
        assert sagas
        records = [
            OutboxRow(1, topic, saga, {PARTITION_COUNT_HEADER: "4"}, b"{}").to_record()
            for saga in sagas
        ] + [OutboxRow(2, topic, saga, {}, b"{}").to_record() for saga in sagas]
        stored = await transport.append(records)
        old, new = stored[: len(sagas)], stored[len(sagas) :]
        assert [r.partition for r in old] == [default_partition(s.encode(), 4) for s in sagas]
        assert [r.partition for r in new] == [default_partition(s.encode(), 8) for s in sagas]


def test_without_the_header_or_a_key_the_transport_chooses() -> None:
    assert row("saga-1", {}).to_record().partition == -1
    assert OutboxRow(1, "t", None, {PARTITION_COUNT_HEADER: "4"}, b"{}").to_record().partition == -1
    assert row("saga-1", {PARTITION_COUNT_HEADER: "junk"}).to_record().partition == -1


def test_a_reply_carries_the_count_its_command_stamped_for_the_reply_topic() -> None:
    cmd = command(
        "payments.charge",
        {},
        saga_id="saga-1",
        extra_headers=((PARTITION_COUNT_HEADER, "8"), (REPLY_PARTITION_COUNT_HEADER, "4")),
    )
    reply = reply_to(cmd, "success", {})
    assert reply.headers()[PARTITION_COUNT_HEADER] == "4"
    own = reply_to(cmd, "success", {}, extra_headers=(("callback-url", "https://x.test/"),))
    assert own.headers()[PARTITION_COUNT_HEADER] == "4"
    assert own.headers()["callback-url"] == "https://x.test/"
    assert REPLY_PARTITION_COUNT_HEADER not in reply.headers()
    assert (
        PARTITION_COUNT_HEADER
        not in reply_to(command("payments.charge", {}), "success", {}).headers()
    )


async def test_a_risen_count_is_adopted_on_the_read_after_the_one_that_saw_it(
    embedded_settings: Settings,
) -> None:
    """One read for consumers to catch up: they read their metadata as often as this does."""
    async with payments_topic(embedded_settings, 2) as (transport, topic):
        counts = PartitionCounts(transport, [topic, "not-there"], max_age_s=60)
        await counts.refresh()
        assert (counts.get(topic), counts.get("not-there")) == (2, None)
        await raise_partitions(transport, {topic: 6})
        await counts.refresh()
        assert counts.get(topic) == 2
        await counts.refresh()
        assert counts.get(topic) == 6


async def test_a_consumer_takes_up_a_grown_topics_new_partitions(
    embedded_settings: Settings,
) -> None:
    """Grown from another process (another transport here): the member reads the count again
    within metadata_max_age_ms and consumes a record on a new partition."""
    settings = embedded_settings.messaging.model_copy(
        update={"metadata_max_age_ms": 200, "heartbeat_interval_ms": 50}
    )
    consumer, admin = EmbeddedTransport(settings), EmbeddedTransport(settings)
    await consumer.start()
    await admin.start()
    try:
        topic = settings.topic_prefix + "inventory.requests"
        await consumer.create_topics({topic: 2})
        subscription = consumer.subscribe("grow-test", [topic])
        await subscription.start()
        assert {p for _, p in subscription.assignment()} == {0, 1}
        await raise_partitions(admin, {topic: 5})
        await admin.produce([Record(topic=topic, value=b"{}", key=b"k", partition=4)])
        got: list[Record] = []
        for _ in range(60):
            got = await subscription.fetch(10, 100)
            if got:
                break
        assert [(r.partition, r.key) for r in got] == [(4, b"k")]
        assert {p for _, p in subscription.assignment()} == {0, 1, 2, 3, 4}
        await subscription.close()
    finally:
        await consumer.close()
        await admin.close()
