"""The Kafka transport on aiokafka: acks=all producer, explicit topic creation, consumer groups
with manual commits of explicit offsets.

Keyed records use aiokafka's default (murmur2) partitioner, the one Java clients use, so a saga's
records keep their partition whatever client wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    for_code,
)

from sagaway.messaging.kafka_capabilities import use_idempotence
from sagaway.messaging.records import Record
from sagaway.messaging.topic_plan import partitions_for, replication_for
from sagaway.messaging.transport import CommitFailed, Subscription, Transport, TransportError
from sagaway.settings import MessagingSettings

log = logging.getLogger("sagaway.kafka")

TOPIC_ALREADY_EXISTS = 36
# How long a call to a broker that stopped answering may take before we call it a failure.
REQUEST_TIMEOUT_MS = 15_000


class KafkaTransport(Transport):
    """A producer and an admin client shared by a process; consumers are made per subscription."""

    def __init__(self, settings: MessagingSettings) -> None:
        if not settings.kafka_bootstrap:
            raise ValueError("KafkaTransport needs settings.kafka_bootstrap")
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self.idempotent = False  # settled by start(): see kafka_capabilities.py

    def __repr__(self) -> str:
        return f"KafkaTransport({self.bootstrap!r})"

    async def start(self) -> None:
        if self._producer is not None:
            return
        try:
            self.idempotent = await use_idempotence(
                self.settings, self.bootstrap, REQUEST_TIMEOUT_MS
            )
        except (KafkaError, OSError) as exc:
            raise TransportError(f"Kafka broker at {self.bootstrap} unavailable: {exc!r}") from exc
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=self.idempotent,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            linger_ms=0,
            max_batch_size=self.settings.producer_batch_bytes,
            metadata_max_age_ms=self.settings.metadata_max_age_ms,
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        try:
            await producer.start()
            await admin.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise TransportError(f"Kafka broker at {self.bootstrap} unavailable: {exc!r}") from exc
        self._producer = producer
        self._admin = admin

    async def close(self) -> None:
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise TransportError(f"{self!r} is not started")
        return self._producer

    @property
    def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise TransportError(f"{self!r} is not started")
        return self._admin

    async def list_topics(self) -> list[str]:
        try:
            return await self.admin.list_topics()
        except KafkaError as exc:
            raise TransportError(f"listing topics on {self.bootstrap}: {exc!r}") from exc

    async def create_topics(self, partitions: Mapping[str, int]) -> None:
        existing = set(await self.list_topics())
        wanted = [
            NewTopic(
                name,
                partitions_for(self.settings, name, count),
                replication_for(self.settings, name),
            )
            for name, count in partitions.items()
            if name not in existing
        ]
        if not wanted:
            return
        try:
            response = await self.admin.create_topics(wanted)
        except KafkaError as exc:
            raise TransportError(f"creating topics on {self.bootstrap}: {exc!r}") from exc
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code not in (0, TOPIC_ALREADY_EXISTS):
                message = error[2] if len(error) > 2 else ""
                raise TransportError(
                    f"creating topic {name!r}: {for_code(code).__name__} {message}"
                )
        # Let the producer learn the new partition counts before the first send.
        with contextlib.suppress(KafkaError):
            await self.producer.client.force_metadata_update()

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        # Only topics that exist are described: a broker that creates topics on a metadata
        # request (tansu does) would otherwise create the missing ones.
        existing = set(await self.list_topics()) if topics else set()
        wanted = [topic for topic in topics if topic in existing]
        if not wanted:
            return {}
        try:
            described = await self.admin.describe_topics(wanted)
        except KafkaError as exc:
            raise TransportError(f"describing topics on {self.bootstrap}: {exc!r}") from exc
        return {
            entry["topic"]: len(entry["partitions"])
            for entry in described
            if not entry.get("error_code") and entry.get("partitions")
        }

    async def produce(self, records: Sequence[Record]) -> None:
        if not records:
            return
        producer = self.producer
        try:
            await self._learn_partitions(records)
            futures = [
                await producer.send(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition if record.partition >= 0 else None,
                    headers=list(record.headers),
                    timestamp_ms=record.timestamp_ms or None,
                )
                for record in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise TransportError(f"producing to {self.bootstrap}: {exc!r}") from exc

    async def _learn_partitions(self, records: Sequence[Record]) -> None:
        """A record stamped for a partition the producer has not seen yet (the topic grew since
        its last metadata) makes it read the metadata now, instead of failing the send."""
        cluster = self.producer.client.cluster
        for record in records:
            if record.partition < 0:
                continue
            known = cluster.partitions_for_topic(record.topic)
            if known is not None and record.partition not in known:
                await self.producer.client.force_metadata_update()
                known = cluster.partitions_for_topic(record.topic) or set()
                if record.partition not in known:
                    raise TransportError(
                        f"topic {record.topic!r} has no partition {record.partition} "
                        f"({len(known)} known): was it grown on another broker?"
                    )

    def subscribe(self, group_id: str, topics: Sequence[str]) -> KafkaSubscription:
        return KafkaSubscription(self.settings, group_id, topics)

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self.admin.list_topics(), REQUEST_TIMEOUT_MS / 1000)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise TransportError(
                f"Kafka broker at {self.bootstrap} does not answer: {exc!r}"
            ) from exc


class KafkaSubscription(Subscription):
    """One aiokafka consumer in a group; offsets are committed only by `commit`."""

    def __init__(self, settings: MessagingSettings, group_id: str, topics: Sequence[str]) -> None:
        assert settings.kafka_bootstrap
        self.settings = settings
        self.group_id = group_id
        self.topics = tuple(dict.fromkeys(topics))
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            metadata_max_age_ms=settings.metadata_max_age_ms,
            max_poll_records=settings.consumer_max_records,
            request_timeout_ms=max(REQUEST_TIMEOUT_MS, settings.session_timeout_ms * 2),
        )
        self._consumer.subscribe(list(self.topics), listener=_LogAssignment(group_id))
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        try:
            await self._consumer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            raise TransportError(
                f"Kafka broker at {self.settings.kafka_bootstrap} unavailable: {exc!r}"
            ) from exc
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()

    def assignment(self) -> frozenset[tuple[str, int]]:
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        try:
            batches: dict[Any, list[Any]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
        except KafkaError as exc:
            raise TransportError(f"fetching from {self.settings.kafka_bootstrap}: {exc!r}") from exc
        out: list[Record] = []
        for messages in batches.values():
            for m in messages:
                out.append(
                    Record(
                        topic=m.topic,
                        value=m.value if m.value is not None else b"",
                        key=m.key,
                        headers=tuple(m.headers or ()),
                        partition=m.partition,
                        offset=m.offset,
                        timestamp_ms=m.timestamp,
                    )
                )
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        if not records:
            return
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            raise CommitFailed(f"group {self.group_id}: {exc}") from exc
        except KafkaError as exc:
            raise TransportError(f"committing to {self.settings.kafka_bootstrap}: {exc!r}") from exc


class _LogAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs the partitions this member owns after each rebalance (who does what, and when a
    failover happened)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info(
            "member of group %s now owns %d partition(s): %s",
            self.group_id,
            len(assigned),
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "none",
        )
