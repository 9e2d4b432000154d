"""Consumer lag per topic and group: how many records each consumer group has yet to commit.

Embedded broker: read its SQLite file (read-only). Kafka: the admin API (committed offsets per
group) and the partitions' end offsets.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sagaway.settings import MessagingSettings


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    lag: int
    partitions: int


class ConsumerLagUnavailable(RuntimeError):
    """The broker could not tell (down, or it lacks the admin API)."""


def _embedded(path: Path) -> list[GroupLag]:
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise ConsumerLagUnavailable(f"embedded broker {path}: {exc}") from exc
    try:
        # Every partition of every topic a group reads (a live member's subscription, or one it
        # has committed in), less what the group committed there (nothing yet = from 0).
        rows = conn.execute(
            "WITH pairs(group_id, topic) AS ("
            "  SELECT group_id, topic FROM committed_offsets"
            "  UNION SELECT m.group_id, j.value FROM group_members m, json_each(m.topics) j)"
            " SELECT p.group_id, e.topic,"
            "        SUM(MAX(e.next_offset - COALESCE(c.committed, 0), 0)), COUNT(*)"
            " FROM pairs p JOIN partition_ends e ON e.topic = p.topic"
            " LEFT JOIN committed_offsets c ON c.group_id = p.group_id AND c.topic = e.topic"
            "      AND c.partition = e.partition"
            " GROUP BY p.group_id, e.topic ORDER BY e.topic, p.group_id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise ConsumerLagUnavailable(f"embedded broker {path}: {exc}") from exc
    finally:
        conn.close()
    return [GroupLag(g, t, int(lag), int(n)) for g, t, lag, n in rows]


async def _kafka(bootstrap: str) -> list[GroupLag]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
        groups = [g[0] for g in await admin.list_consumer_groups()]
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {
                (tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            }
        partitions = {tp for per in committed.values() for tp in per}
        from aiokafka import TopicPartition

        ends = await consumer.end_offsets([TopicPartition(t, p) for t, p in partitions])
        end_by = {(tp.topic, tp.partition): off for tp, off in ends.items()}
    except Exception as exc:  # noqa: BLE001 - any admin failure means "cannot tell now"
        raise ConsumerLagUnavailable(f"Kafka at {bootstrap}: {exc!r}") from exc
    finally:
        await consumer.stop()
        await admin.close()
    out: list[GroupLag] = []
    for group, per in committed.items():
        by_topic: dict[str, list[int]] = {}
        for (topic, partition), offset in per.items():
            by_topic.setdefault(topic, []).append(
                max(end_by.get((topic, partition), 0) - offset, 0)
            )
        out.extend(GroupLag(group, t, sum(v), len(v)) for t, v in by_topic.items())
    return sorted(out, key=lambda g: (g.topic, g.group))


async def consumer_lag(messaging: MessagingSettings) -> list[GroupLag]:
    """Every group's lag on the broker `messaging` names (Kafka, or the embedded one)."""
    if messaging.kafka_bootstrap:
        return await asyncio.wait_for(_kafka(messaging.kafka_bootstrap), timeout=10)
    return await asyncio.to_thread(_embedded, Path(messaging.data_dir) / "broker.db")
