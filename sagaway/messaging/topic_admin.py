"""Reading the broker's topics (partitions, replication, consumer groups) for `sagaway topics`,
on Kafka and on the embedded broker. What a broker cannot answer comes back as None."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.protocol.group import MemberAssignment

from sagaway.messaging.transport import Transport


@dataclass
class TopicInfo:
    """One topic as the broker has it."""

    partitions: int
    replication: int | None = None
    groups: list[str] | None = field(default=None)


async def describe_topics(transport: Transport) -> dict[str, TopicInfo]:
    """Every topic on the broker with what it can tell of it."""
    admin = getattr(transport, "admin", None)
    if admin is None:
        return await _embedded(transport)
    return await _kafka(admin)


async def _embedded(transport: Any) -> dict[str, TopicInfo]:
    counts: dict[str, int] = await transport.list_topics()
    groups: dict[str, set[str]] = {}

    def read_groups() -> list[tuple[str, str]]:
        conn = transport.file.conn
        rows = conn.execute("SELECT DISTINCT group_id, topic FROM committed_offsets").fetchall()
        for group, topics in conn.execute("SELECT group_id, topics FROM group_members"):
            rows.extend((group, topic) for topic in orjson.loads(topics))
        return list(rows)

    for group, topic in await transport.run(read_groups):
        groups.setdefault(topic, set()).add(group)
    return {
        name: TopicInfo(count, 1, sorted(groups.get(name, set())))
        for name, count in sorted(counts.items())
    }


async def _kafka(admin: Any) -> dict[str, TopicInfo]:
    names = [n for n in await admin.list_topics() if not n.startswith("__")]
    described = await admin.describe_topics(names) if names else []
    topics: dict[str, TopicInfo] = {}
    for entry in described:
        parts = entry.get("partitions") or []
        replicas = [len(p.get("replica_nodes") or p.get("replicas") or []) for p in parts]
        topics[entry["topic"]] = TopicInfo(len(parts), min(replicas) if replicas else None)
    groups = await _kafka_groups(admin)
    if groups:  # an empty list is no answer: tansu lists no groups (docs/scaling.md)
        for info in topics.values():
            info.groups = []
        for group, group_topics in groups.items():
            for topic in group_topics:
                if topic in topics:
                    topics[topic].groups.append(group)  # type: ignore[union-attr]
    return dict(sorted(topics.items()))


async def _kafka_groups(admin: Any) -> dict[str, set[str]] | None:
    """Group → topics it is assigned, from DescribeGroups; None when the broker cannot say
    (tansu answers some of these APIs in ways aiokafka cannot decode)."""
    try:
        listed = await admin.list_consumer_groups()
        ids = [g[0] for g in listed]
        if not ids:
            return {}
        described = await admin.describe_consumer_groups(ids)
        out: dict[str, set[str]] = {}
        for response in described:
            for group in response.groups:
                group_id, members = group[1], group[5]
                topics = out.setdefault(group_id, set())
                for member in members:
                    assignment = MemberAssignment.decode(member[-1])
                    topics.update(topic for topic, _ in assignment.assignment)
    except Exception:  # noqa: BLE001 - a broker that cannot say is reported as "unknown"
        return None
    return out
