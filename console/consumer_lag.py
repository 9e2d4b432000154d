"""Consumer lag per topic and group: how many records each consumer group has yet to commit.

Embedded broker: read its SQLite file (read-only). Kafka: the admin API (committed offsets per
group) and the partitions' end offsets. A Kafka-protocol broker that answers OffsetFetch in a form
aiokafka cannot decode (tansu, the suite's broker) cannot report lag: that is an expected
incapability, told in one line, logged once at WARNING and remembered for a while (not asked
again on every refresh), never an ERROR traceback. A broker that is down is told in one line too.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from sagaway.settings import MessagingSettings

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 10.0
# How long a broker that cannot report offsets is taken at its word before it is asked again.
INCAPABLE_FOR_S = 600.0
_AIOKAFKA_UNEXPECTED = "Unexpected exception in AIOKafkaConnection"


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    lag: int
    partitions: int


class ConsumerLagUnavailable(RuntimeError):
    """The broker could not tell (down, or it lacks the admin API); str() is the one-line reason
    the overview shows."""


@dataclass
class BrokerMemory:
    """What the console learnt about Kafka brokers: which cannot report offsets (until when, and
    why), and which are known unreachable (so an outage is warned about once, not every 5 s)."""

    incapable: dict[str, tuple[float, str]] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)

    def incapability(self, bootstrap: str) -> str | None:
        known = self.incapable.get(bootstrap)
        if known is None:
            return None
        if time.monotonic() >= known[0]:
            del self.incapable[bootstrap]
            return None
        return known[1]


_MEMORY = BrokerMemory()


@dataclass
class _Probe:
    """Decode failures aiokafka met on the connections of one lag probe."""

    decode_errors: list[BaseException] = field(default_factory=list)


_probe: contextvars.ContextVar[_Probe | None] = contextvars.ContextVar("lag_probe", default=None)


class _QuietProbeDecodeErrors(logging.Filter):
    """Drop aiokafka's ERROR traceback for an answer it cannot decode on a lag probe's own
    connection (the read task inherits the probe's context) and hand the error to the probe."""

    def filter(self, record: logging.LogRecord) -> bool:
        probe = _probe.get()
        if probe is None or record.getMessage() != _AIOKAFKA_UNEXPECTED or not record.exc_info:
            return True
        exc = record.exc_info[1]
        if not _is_decode_error(exc):
            return True
        probe.decode_errors.append(exc)  # type: ignore[arg-type]
        return False


def _is_decode_error(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, struct.error):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_FILTER = _QuietProbeDecodeErrors()


def _embedded(path: Path) -> list[GroupLag]:
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise ConsumerLagUnavailable(
            f"the embedded broker's file {path} cannot be read ({exc})"
        ) from None
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
        raise ConsumerLagUnavailable(
            f"the embedded broker's file {path} cannot be read ({exc})"
        ) from None
    finally:
        conn.close()
    return [GroupLag(g, t, int(lag), int(n)) for g, t, lag, n in rows]


async def _kafka_offsets(
    bootstrap: str,
) -> tuple[dict[str, dict[tuple[str, int], int]], dict[tuple[str, int], int]]:
    """Committed offsets per group, and the end offset of every partition they name."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
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
        ends = await consumer.end_offsets([TopicPartition(t, p) for t, p in partitions])
        return committed, {(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        await consumer.stop()
        await admin.close()


async def _kafka(bootstrap: str, memory: BrokerMemory) -> list[GroupLag]:
    known = memory.incapability(bootstrap)
    if known is not None:
        raise ConsumerLagUnavailable(known)
    logging.getLogger("aiokafka.conn").addFilter(_FILTER)  # once: a logger keeps one of each
    probe = _Probe()
    # The probe's task and the admin's connection read tasks are made in this context.
    token = _probe.set(probe)
    try:
        committed, end_by = await asyncio.wait_for(_kafka_offsets(bootstrap), KAFKA_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any admin failure means "cannot tell now"
        if probe.decode_errors:
            cause = _root(probe.decode_errors[0])
            reason = (
                f"this broker cannot report consumer offsets (Kafka at {bootstrap} answered "
                f"OffsetFetch in a form the client cannot decode: {cause})"
            )
            memory.incapable[bootstrap] = (time.monotonic() + INCAPABLE_FOR_S, reason)
            log.warning("consumer lag: %s; not asking again for %.0f s", reason, INCAPABLE_FOR_S)
            raise ConsumerLagUnavailable(reason) from None
        what = "did not answer in time" if isinstance(exc, TimeoutError) else "is unreachable"
        detail = str(exc) or type(exc).__name__
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        reason = f"Kafka at {bootstrap} {what} ({detail})".replace("\n", " ")
        if bootstrap not in memory.unreachable:
            memory.unreachable.add(bootstrap)
            log.warning("consumer lag: %s", reason)
        raise ConsumerLagUnavailable(reason) from None
    finally:
        _probe.reset(token)
    if bootstrap in memory.unreachable:
        memory.unreachable.discard(bootstrap)
        log.info("consumer lag: Kafka at %s answers again", bootstrap)
    out: list[GroupLag] = []
    for group, per in committed.items():
        by_topic: dict[str, list[int]] = {}
        for (topic, partition), offset in per.items():
            by_topic.setdefault(topic, []).append(
                max(end_by.get((topic, partition), 0) - offset, 0)
            )
        out.extend(GroupLag(group, t, sum(v), len(v)) for t, v in by_topic.items())
    return sorted(out, key=lambda g: (g.topic, g.group))


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


async def consumer_lag(
    messaging: MessagingSettings, memory: BrokerMemory | None = None
) -> list[GroupLag]:
    """Every group's lag on the broker `messaging` names (Kafka, or the embedded one).

    Raises ConsumerLagUnavailable with a one-line reason when the broker cannot tell. `memory`
    keeps what was learnt about brokers between calls (a process-wide one by default)."""
    if messaging.kafka_bootstrap:
        return await _kafka(messaging.kafka_bootstrap, memory or _MEMORY)
    return await asyncio.to_thread(_embedded, Path(messaging.data_dir) / "broker.db")
