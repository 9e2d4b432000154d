"""Consumer groups without a coordinator: member ids that sort in joining order, and the
assignment every live member computes alike from the sorted member list.

Members upsert a heartbeat row; a member whose heartbeat is older than `session_timeout_ms` is
dead. Each live member deals the partitions itself (round-robin per topic) and re-checks the deal
every heartbeat; partitions it loses are dropped, partitions it gains start from the group's
committed offset. A commit re-checks ownership inside its transaction (`store.BrokerFile.commit`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence

TopicPartition = tuple[str, int]

_last_member_ms = 0
_member_ms_lock = threading.Lock()


def assign(
    members: Sequence[tuple[str, Sequence[str]]], partitions: Mapping[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """Deterministic assignment every member computes alike: per topic, partitions dealt
    round-robin over the members subscribed to it, sorted by member id."""
    owned: dict[str, set[TopicPartition]] = {member: set() for member, _ in members}
    for topic, count in sorted(partitions.items()):
        subscribers = sorted(member for member, topics in members if topic in topics)
        if not subscribers:
            continue
        for partition in range(count):
            owned[subscribers[partition % len(subscribers)]].add((topic, partition))
    return {member: frozenset(tps) for member, tps in owned.items()}


def new_member_id() -> str:
    """Join time in ms, then a random tail. Members are assigned partitions in member-id order,
    so within a process a later member always sorts after an earlier one, even when both
    joined in the same millisecond (common: broker calls run on the event loop's thread)."""
    global _last_member_ms
    with _member_ms_lock:
        _last_member_ms = max(int(time.time() * 1000), _last_member_ms + 1)
        joined = _last_member_ms
    return f"{joined:013d}-{uuid.uuid4().hex[:12]}"
