"""The one small interface every broker sits behind: produce a batch, consume in a group, commit.

Two implementations: `kafka.KafkaTransport` (aiokafka) and `embedded.EmbeddedTransport` (a durable
SQLite-backed broker in process). `tests/sagaway/messaging/test_transport_contract.py` holds them
to the same behaviour.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from sagaway.messaging.records import Record
from sagaway.settings import MessagingSettings


class TransportError(RuntimeError):
    """The broker could not be reached or refused an operation."""


class CommitFailed(TransportError):
    """Offsets could not be committed (for example the partition moved to another member)."""


class Subscription(ABC):
    """A member of a consumer group reading some topics; commits are explicit."""

    @abstractmethod
    async def start(self) -> None:
        """Join the group; returns once the member can fetch."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group. Uncommitted records will be delivered again to some member."""

    @abstractmethod
    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next records of the assigned partitions (in offset order per partition), or []
        after `timeout_ms` without any."""

    @abstractmethod
    async def commit(self, records: Sequence[Record]) -> None:
        """Mark these records (and all before them in their partitions) as processed."""

    @abstractmethod
    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this member currently owns."""


class Transport(ABC):
    """A broker connection shared by a process's producers and consumers.

    `settings` are the messaging settings it was built with: whoever holds a transport finds
    there the topic prefix, the partition count and the consumers' limits."""

    settings: MessagingSettings

    @abstractmethod
    async def start(self) -> None:
        """Connect; raises TransportError when the broker cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and disconnect."""

    @abstractmethod
    async def create_topics(self, partitions: Mapping[str, int]) -> None:
        """Create the missing topics with these partition counts (existing ones are left alone)."""

    @abstractmethod
    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """The broker's current partition count of each of `topics` that exists, read afresh
        (a topic may have grown since this process last looked)."""

    @abstractmethod
    async def produce(self, records: Sequence[Record]) -> None:
        """Publish the batch; returns once the broker acknowledged every record.
        Records with the same key go to the same partition, in the order given; a record whose
        `partition` is set (>= 0) goes to that partition."""

    @abstractmethod
    def subscribe(self, group_id: str, topics: Sequence[str]) -> Subscription:
        """A new (not yet started) consumer-group member for `topics`."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise TransportError unless the broker answers now (used by readiness checks)."""
