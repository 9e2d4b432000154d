"""Raising a service's partition count (`sagaway topics grow`, docs/scaling.md). A key's
partition is its hash modulo the count; sagas in flight keep theirs because their records carry
the count they started with (sagaway/messaging/partition_counts.py). Shrinking is refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagaway.messaging.transport import Transport, TransportError

SHRINK_REFUSED = (
    "{topic} has {found} partitions; {wanted} would remove some: Kafka cannot delete "
    "partitions, and the records and committed offsets on them would be stranded. "
    "Keep {found} or more."
)


class GrowRefused(TransportError):
    """The change asked for would break ordering or lose records."""


def growth(found: Mapping[str, int], wanted: int) -> dict[str, int]:
    """The topics to raise to `wanted`, of `found` (topic → current count). Refuses a shrink;
    topics already at `wanted` are left out."""
    for topic, count in sorted(found.items()):
        if count > wanted:
            raise GrowRefused(SHRINK_REFUSED.format(topic=topic, found=count, wanted=wanted))
    return {topic: wanted for topic, count in found.items() if count < wanted}


async def raise_partitions(transport: Transport, counts: Mapping[str, int]) -> None:
    """Raise each topic to its count, on Kafka (CreatePartitions) or the embedded broker."""
    if not counts:
        return
    admin = getattr(transport, "admin", None)
    if admin is None:
        await _embedded(transport, counts)
    else:
        await _kafka(admin, counts)


async def _kafka(admin: Any, counts: Mapping[str, int]) -> None:
    from aiokafka.admin import NewPartitions
    from aiokafka.errors import IncompatibleBrokerVersion, KafkaError

    try:
        await admin.create_partitions({t: NewPartitions(n) for t, n in counts.items()})
    except IncompatibleBrokerVersion as exc:
        raise GrowRefused(
            "this broker does not answer CreatePartitions (tansu does not): its partition "
            "counts cannot be raised in place"
        ) from exc
    except KafkaError as exc:
        raise TransportError(f"raising partitions: {exc!r}") from exc


async def _embedded(transport: Any, counts: Mapping[str, int]) -> None:
    def update() -> None:
        with transport.file.transaction() as conn:
            for topic, count in counts.items():
                conn.execute(
                    "UPDATE topics SET partitions = ? WHERE name = ? AND partitions < ?",
                    (count, topic, count),
                )
        transport.file.reread_counts(force=True)

    await transport.run(update)
