"""The partition counts a producer stamps on a saga's records (docs/scaling.md, "Growing a topic").

A keyed record goes to `murmur2(key) % count`. If a topic grows while a saga runs, its later
records would land on another partition than its earlier ones and could be consumed first. So
the orchestrator stamps each saga with the count each topic had when the saga first sent to it,
and keeps using that count for the saga; new sagas take the count read most recently. The counts
are read from the broker, never from configuration: a stamp larger than the topic would name a
partition that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sagaway.messaging.transport import Transport, TransportError

log = logging.getLogger("sagaway.messaging")


class PartitionCounts:
    """The counts of the topics a process sends to, read every `max_age_s`. A risen count is
    adopted on the read after the one that first saw it: by then every consumer, which reads its
    metadata as often, consumes the new partitions, so no new saga's record waits on a partition
    nobody reads. Counts only ever rise (Kafka cannot remove partitions): a lower answer from a
    lagging broker is ignored."""

    def __init__(self, transport: Transport, topics: Iterable[str], max_age_s: float) -> None:
        self.transport = transport
        self.topics = frozenset(topics)
        self.max_age_s = max_age_s
        self._counts: dict[str, int] = {}
        self._risen: dict[str, int] = {}  # seen once, adopted when seen again

    def get(self, topic: str) -> int | None:
        """The count to stamp on a saga sending to `topic` for the first time; None if unknown
        (the record then goes unstamped, placed by the broker client's own partitioner)."""
        return self._counts.get(topic)

    async def refresh(self) -> None:
        for topic, count in (await self.transport.partition_counts(sorted(self.topics))).items():
            known = self._counts.get(topic)
            if known is None:
                self._counts[topic] = count
            elif count > known and self._risen.get(topic) == count:
                log.info("%s now has %d partitions; new sagas use them all", topic, count)
                self._counts[topic] = count
                del self._risen[topic]
            elif count > known:
                self._risen[topic] = count

    async def run(self) -> None:
        """Refresh until cancelled; a failed read keeps the counts known and tries again."""
        while True:
            await asyncio.sleep(self.max_age_s)
            try:
                await self.refresh()
            except TransportError as exc:
                log.warning("reading partition counts failed (kept the known ones): %s", exc)
