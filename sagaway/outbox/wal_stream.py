"""One replication session of the WAL relay: read the slot in the event loop, queue whole
transactions in commit order, publish them, delete the published rows and confirm the slot.

psycopg2's replication connection is read with `loop.add_reader` on its socket and
`read_message` drained without blocking. A publisher takes up to `relay_batch_size` rows, has the
relay produce them (retrying while the broker is down, position kept), then the rows are deleted
and the slot confirmed up to the end of the last fully-published transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from sagaway.outbox import pgoutput
from sagaway.outbox.rows import OutboxRow
from sagaway.outbox.wal_slot import RelayError

if TYPE_CHECKING:
    from sagaway.outbox.wal_relay import WalRelay

# Rows the relay may hold in memory before it stops reading the slot until the broker catches up.
BUFFER_BATCHES = 20


def parse_timestamp(text: bytes | None) -> datetime | None:
    """PostgreSQL's text form of a timestamptz ("2026-11-26 15:20:00.123+00")."""
    if text is None:
        return None
    value = text.decode()
    if len(value) >= 3 and value[-3] in "+-" and value[-2:].isdigit():
        value += ":00"
    return datetime.fromisoformat(value)


class _Commit:
    """A marker in the queue: every row before it belongs to transactions that ended here."""

    __slots__ = ("end_lsn",)

    def __init__(self, end_lsn: int) -> None:
        self.end_lsn = end_lsn


class ReplicationSession:
    """One replication session: reads the slot, publishes, prunes and confirms. Its state is
    thrown away on any failure; the slot's confirmed position is where the next one resumes."""

    def __init__(self, relay: WalRelay, conn: Any) -> None:
        self.relay = relay
        self.conn = conn
        self.cursor = conn.cursor()
        self.fd: int = conn.fileno()
        self.loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = self.loop.create_future()
        self.columns: dict[int, dict[str, int] | None] = {}
        self.open_tx: list[OutboxRow] | None = None
        self.queue: deque[OutboxRow | _Commit] = deque()
        self.queued_rows = 0
        self.reading = False
        self.in_flight = False
        self.prune_ids: list[int] = []
        self.prune_lsn = 0
        self.confirmed = 0
        self.wake = asyncio.Event()
        self.prune_wake = asyncio.Event()

    # -- reading the slot -------------------------------------------------------------------

    def start_reading(self) -> None:
        if not self.reading:
            self.loop.add_reader(self.fd, self.on_readable)
            self.reading = True
            # Messages already buffered by libpq would not make the socket readable again.
            self.loop.call_soon(self.on_readable)

    def stop_reading(self) -> None:
        # By the remembered number: once libpq dropped a dead connection, fileno() no longer
        # answers, and the number must leave the selector before a new socket reuses it.
        if self.reading:
            self.reading = False
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)

    def on_readable(self) -> None:
        if self.failed.done() or not self.reading:
            return
        limit = self.relay.settings.relay_batch_size * BUFFER_BATCHES
        try:
            while self.queued_rows < limit:
                message = self.cursor.read_message()
                if message is None:
                    break
                self.handle(pgoutput.decode(message.payload))
            else:
                self.stop_reading()  # back-pressure: the publisher resumes reading
        except Exception as exc:  # noqa: BLE001 - connection lost or undecodable: restart the session
            self.fail(exc)

    def handle(self, event: pgoutput.Event) -> None:
        if isinstance(event, pgoutput.Insert):
            index = self.columns.get(event.relation_id)
            if index is not None and self.open_tx is not None:
                self.open_tx.append(self.row(index, event.values))
        elif isinstance(event, pgoutput.Begin):
            self.open_tx = []
        elif isinstance(event, pgoutput.Commit):
            rows = self.open_tx or []
            self.open_tx = None
            self.queue.extend(rows)
            self.queue.append(_Commit(event.end_lsn))
            self.queued_rows += len(rows)
            self.wake.set()
        elif isinstance(event, pgoutput.Relation):
            if event.name == "outbox":
                self.columns[event.relation_id] = {name: i for i, name in enumerate(event.columns)}
            else:
                self.columns[event.relation_id] = None

    def row(self, index: dict[str, int], values: tuple[bytes | None, ...]) -> OutboxRow:
        raw_id, topic, key = values[index["id"]], values[index["topic"]], values[index["key"]]
        headers, payload = values[index["headers"]], values[index["payload"]]
        if raw_id is None or topic is None or headers is None or payload is None:
            raise pgoutput.PgOutputError("outbox row with NULL id/topic/headers/payload")
        topic_text = topic.decode()
        return OutboxRow(
            id=int(raw_id),
            topic=topic_text,
            key=key.decode() if key is not None else None,
            headers=orjson.loads(headers),
            payload=payload,
            # Only heartbeats need it; parsing every row's timestamp costs throughput.
            created_at=parse_timestamp(values[index["created_at"]])
            if topic_text == self.relay.heartbeat_topic
            else None,
        )

    def fail(self, exc: BaseException) -> None:
        self.stop_reading()
        if not self.failed.done():
            self.failed.set_exception(exc)

    # -- publishing, pruning, confirming ------------------------------------------------------

    def take_batch(self) -> tuple[list[OutboxRow], int]:
        """Up to one batch of rows from the head of the queue, and the end LSN of the last
        transaction wholly inside it (0 if none ended)."""
        rows: list[OutboxRow] = []
        lsn = 0
        limit = self.relay.settings.relay_batch_size
        queue = self.queue
        while queue:
            item = queue[0]
            if isinstance(item, _Commit):
                lsn = item.end_lsn
            elif len(rows) >= limit:
                break
            else:
                rows.append(item)
            queue.popleft()
        self.queued_rows -= len(rows)
        return rows, lsn

    async def publish_loop(self) -> None:
        relay = self.relay
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                self.in_flight = True
                rows, lsn = self.take_batch()
                if rows:
                    acked = await relay.produce_until_acked(rows)
                    relay.after_publish(rows, acked)
                    self.prune_ids.extend(row.id for row in rows)
                if lsn:
                    self.prune_lsn = lsn
                self.in_flight = False
                self.prune_wake.set()
                if not self.reading and not self.failed.done():
                    self.start_reading()

    async def prune_loop(self) -> None:
        """Delete published rows, then confirm the slot: a crash between the two re-sends
        (never loses) those transactions, and a confirmed row is never left behind."""
        interval = self.relay.settings.relay_prune_interval_s
        while True:
            await self.prune_wake.wait()
            await asyncio.sleep(interval)  # gather several batches into one DELETE
            self.prune_wake.clear()
            ids, lsn = self.prune_ids, self.prune_lsn
            self.prune_ids = []
            if ids:
                await self.relay.delete_rows(ids)
            if lsn > self.confirmed:
                self.confirm(lsn)

    def confirm(self, lsn: int) -> None:
        self.confirmed = max(self.confirmed, lsn)
        try:
            self.cursor.send_feedback(
                write_lsn=self.confirmed,
                flush_lsn=self.confirmed,
                apply_lsn=self.confirmed,
                force=True,
            )
        except Exception as exc:
            self.fail(exc)  # synchronously off the selector, before its fd number is reused
            raise

    def idle(self) -> bool:
        return (
            self.open_tx is None
            and not self.queue
            and not self.in_flight
            and not self.prune_ids
            and self.prune_lsn <= self.confirmed
        )

    async def keepalive_loop(self) -> None:
        """Confirm progress even when the outbox is idle, so the slot never pins WAL."""
        while True:
            await asyncio.sleep(self.relay.settings.relay_feedback_interval_s)
            if self.idle():
                # Everything the server sent up to wal_end has been read and published.
                self.confirm(max(self.confirmed, int(self.cursor.wal_end or 0)))
            else:
                self.confirm(self.confirmed)

    async def run(self, start_lsn: int) -> None:
        self.confirmed = start_lsn
        self.start_reading()
        tasks = [
            asyncio.create_task(self.publish_loop(), name="wal-relay-publish"),
            asyncio.create_task(self.prune_loop(), name="wal-relay-prune"),
            asyncio.create_task(self.keepalive_loop(), name="wal-relay-keepalive"),
        ]
        try:
            done, _ = await asyncio.wait([self.failed, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # raises the failure
            raise RelayError("replication session ended")
        finally:
            self.stop_reading()
            for task in tasks:
                task.cancel()
