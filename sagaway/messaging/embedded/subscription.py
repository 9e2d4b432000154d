"""`EmbeddedSubscription`: one consumer-group member on the broker file. It heartbeats, follows
the assignment every member deals alike (`membership.py`), fetches from its positions and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sagaway.messaging.embedded.membership import TopicPartition, new_member_id
from sagaway.messaging.records import Record
from sagaway.messaging.transport import CommitFailed, Subscription, TransportError

if TYPE_CHECKING:
    from sagaway.messaging.embedded.transport import EmbeddedTransport

log = logging.getLogger("sagaway.embedded")


class EmbeddedSubscription(Subscription):
    """A consumer-group member on the embedded broker."""

    def __init__(self, transport: EmbeddedTransport, group_id: str, topics: Sequence[str]) -> None:
        self.transport = transport
        self.group_id = group_id
        self.topics = tuple(dict.fromkeys(topics))
        self._topic_set = frozenset(self.topics)
        self.member_id = new_member_id()
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._rotation = 0
        # The bell's generation when a read last took everything there was: until it changes,
        # another read would find nothing (None: read first).
        self._drained_at: int | None = None
        self._read_at = 0.0
        self._rebalance_lock = asyncio.Lock()

    @property
    def _session_timeout_ms(self) -> int:
        return self.transport.settings.session_timeout_ms

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._rebalance()
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"embedded-heartbeat-{self.group_id}"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._started:
            with contextlib.suppress(TransportError):
                await self.transport.run(self.transport.file.leave, self.group_id, self.member_id)
        self._assignment = frozenset()
        self._positions.clear()

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assignment

    async def _heartbeat_loop(self) -> None:
        interval = self.transport.settings.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._rebalance()
            except TransportError as exc:
                log.warning(
                    "heartbeat of %s in group %s failed: %s", self.member_id, self.group_id, exc
                )

    async def _rebalance(self) -> None:
        async with self._rebalance_lock:
            new = await self.transport.run(
                self.transport.file.heartbeat,
                self.group_id,
                self.member_id,
                self.topics,
                self._session_timeout_ms,
            )
            if new == self._assignment:
                return
            gained = new - self._assignment
            committed = await self.transport.run(
                self.transport.file.committed, self.group_id, gained
            )
            for tp in self._assignment - new:
                self._positions.pop(tp, None)
            for tp in gained:
                self._positions[tp] = committed.get(tp, 0)
            log.info(
                "member %s of group %s now owns %d partition(s)",
                self.member_id,
                self.group_id,
                len(new),
            )
            self._assignment = new
            if gained:
                # A fetch waiting on the bell reads the partitions gained now, not at its next
                # safety-net look: their backlog (a dead member's) is there already.
                self.transport.bell.ring({topic for topic, _ in gained})

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        if not self._started or self._closed:
            raise TransportError("fetch on a subscription that is not started or is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        poll_s = self.transport.settings.embedded_poll_interval_ms / 1000
        bell = self.transport.bell
        while True:
            seen = bell.generation(self._topic_set)
            # After a read that reached the end of every partition (less than a batch), the
            # next read waits for a ring: a produce on these topics here, or a datagram from
            # another process; or for the safety net's look, in case a wake-up was lost. Each
            # batch used to cost a second, empty read.
            if seen != self._drained_at or loop.time() - self._read_at >= poll_s:
                self._read_at = loop.time()
                records = await self._read(max_records)
                self._drained_at = seen if len(records) < max_records else None
                if records or self._closed:
                    return records
            now = loop.time()
            if now >= deadline:
                return []
            await bell.wait(self._topic_set, seen, min(deadline, self._read_at + poll_s) - now)

    async def _read(self, max_records: int) -> list[Record]:
        positions = self._positions
        if not positions:
            return []
        snapshot = sorted(positions.items())
        # Rotate the starting partition so one busy partition cannot starve the others.
        self._rotation = (self._rotation + 1) % len(snapshot)
        snapshot = snapshot[self._rotation :] + snapshot[: self._rotation]
        records = await self.transport.run(
            self.transport.file.read, [(t, p, o) for (t, p), o in snapshot], max_records
        )
        # Keep only partitions still owned at the position read from (a rebalance may have run).
        expected = dict(snapshot)
        out: list[Record] = []
        for record in records:
            tp = (record.topic, record.partition)
            at = expected.get(tp)
            if at is None or positions.get(tp) != at:
                continue
            positions[tp] = expected[tp] = record.offset + 1
            out.append(record)
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        if not records:
            return
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        foreign = await self.transport.run(
            self.transport.file.commit,
            self.group_id,
            self.member_id,
            offsets,
            self._session_timeout_ms,
        )
        if foreign:
            raise CommitFailed(
                f"member {self.member_id} of group {self.group_id} does not own "
                + ", ".join(f"{t}[{p}]" for t, p in foreign)
            )
