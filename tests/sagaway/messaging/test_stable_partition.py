"""A keyed outbox row carrying `partition-count` goes to murmur2(key) % that count, whatever the
topic has now: the stable mapping that keeps a saga's records on one partition across a grow
(docs/scaling.md)."""

from __future__ import annotations

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.topic_grow import raise_partitions
from sagaway.outbox.rows import PARTITION_COUNT_HEADER, OutboxRow
from sagaway.settings.composed import Settings


def row(key: str, headers: dict[str, str]) -> OutboxRow:
    return OutboxRow(id=1, topic="t", key=key, headers=headers, payload=b"{}")


def keys_that_move(old: int, new: int) -> list[str]:
    """Saga ids whose partition differs between the two counts."""
    moved = [f"saga-{i}" for i in range(200)]
    return [
        k for k in moved if default_partition(k.encode(), old) != default_partition(k.encode(), new)
    ]


async def test_a_saga_started_before_a_grow_keeps_its_partition(
    embedded_settings: Settings,
) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        topic = embedded_settings.messaging.topic_prefix + "payments.requests"
        await transport.create_topics({topic: 4})
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
    finally:
        await transport.close()


def test_without_the_header_or_a_key_the_transport_chooses() -> None:
    assert row("saga-1", {}).to_record().partition == -1
    assert OutboxRow(1, "t", None, {PARTITION_COUNT_HEADER: "4"}, b"{}").to_record().partition == -1
    assert row("saga-1", {PARTITION_COUNT_HEADER: "junk"}).to_record().partition == -1
