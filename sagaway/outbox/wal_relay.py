"""The WAL relay: PostgreSQL's outbox, read from a logical replication slot and published in
commit order; the slot is confirmed only once the broker acknowledged (DESIGN §4).

Decision: `pgoutput` with a publication on `outbox` limited to inserts, not
`pg_logical_emit_message`. The writer stays one portable INSERT (the same on SQLite, so the
polling relay, the lag figures and the console all see one table), the relay needs no SQL
function in every business transaction, and deleting published rows puts nothing on the stream
(the publication carries inserts only). pgoutput ships with the server; its binary format is
decoded in `pgoutput.py`. Measured on this machine both drain a backlog far faster than the
Python producer can publish, so the choice rests on the portable write path.

How it runs, per service database:
- Leadership: a session advisory lock keyed on the slot name; the instance holding it streams,
  any other one stands by and retries every `relay_standby_retry_s` (PostgreSQL also lets only
  one connection read a slot). When the leader dies its connection drops, the lock is freed and
  a standby takes over within a retry interval, from the last confirmed position.
- First start: the publication and slot are created; rows committed before the slot existed are
  read from the slot's exported snapshot and published first (and `outbox_relays.snapshot_done`
  records it, so a crash in between starts the snapshot over instead of losing those rows).
- Streaming: psycopg2's replication connection in the event loop (`loop.add_reader` on its
  socket, `read_message` drained without blocking). Whole transactions queue up in commit order;
  a publisher takes up to `relay_batch_size` rows, `transport.produce`s them (retrying while the
  broker is down, position kept), then the rows are deleted and the slot confirmed up to the end
  of the last fully-published transaction. A crash re-sends only unconfirmed transactions
  (at-least-once; receivers deduplicate with the inbox).
- Idle: every `relay_feedback_interval_s` the relay confirms the server's current position when
  nothing is in flight, so an idle outbox never pins WAL; a heartbeat row every
  `relay_heartbeat_interval_s` measures commit → broker lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg2
import psycopg2.extras
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability.backoff import RetryDelay
from sagaway.outbox import pgoutput
from sagaway.outbox.lag import (
    export_lag,
    heartbeat_topic,
    measure_lag,
    record_heartbeat,
    save_relay_state,
    write_heartbeat,
)
from sagaway.outbox.models import outbox, outbox_relays
from sagaway.outbox.rows import OutboxRow
from sagaway.settings import Settings
from sagaway.storage.database import sync_url

log = logging.getLogger("sagaway.relay.wal")

Published = Callable[[Sequence[OutboxRow], datetime], None]
# Rows the relay may hold in memory before it stops reading the slot until the broker catches up.
BUFFER_BATCHES = 20


class RelayError(RuntimeError):
    """The relay cannot run against this database (not PostgreSQL, no logical WAL, ...)."""


class SlotInUse(RelayError):
    """The replication slot is being read by a running relay (so it cannot be dropped)."""


def slot_name(settings: Settings, service: str) -> str:
    """The slot (and publication) of `service`: `sagaway_<service>`, or the configured name;
    folded to what PostgreSQL allows in slot names (lower case, digits, underscore)."""
    raw = settings.relay_slot_name or f"sagaway_{service}"
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower())[:63]
    if not name:
        raise RelayError(f"cannot derive a replication slot name from {raw!r}")
    return name


def _lock_key(slot: str) -> int:
    digest = hashlib.sha256(f"sagaway-relay:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def replication_dsn(url: str) -> dict[str, Any]:
    """psycopg2 connection keywords for the database of a SQLAlchemy URL."""
    parsed = make_url(sync_url(url))
    if parsed.get_backend_name() != "postgresql":
        raise RelayError("the WAL relay needs PostgreSQL; use --mode poll on SQLite")
    params: dict[str, Any] = {"dbname": parsed.database}
    if parsed.host:
        params["host"] = parsed.host
    if parsed.port:
        params["port"] = parsed.port
    if parsed.username:
        params["user"] = parsed.username
    if parsed.password:
        params["password"] = parsed.password
    for name, value in parsed.query.items():
        params[name] = value if isinstance(value, str) else value[-1]
    params.setdefault("application_name", "sagaway-relay")
    return params


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


class _Stream:
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
            await asyncio.gather(*tasks, return_exceptions=True)


class WalRelay:
    """Publishes one service's PostgreSQL outbox from its replication slot; `run()` until
    cancelled, surviving broker and database outages and standing by while another instance
    holds the slot."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        engine: AsyncEngine,
        transport: Transport,
        *,
        on_published: Published | None = None,
        heartbeat: bool = True,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise RelayError("the WAL relay needs PostgreSQL; use the polling relay on SQLite")
        self.settings = settings
        self.service = service
        self.engine = engine
        self.transport = transport
        self.on_published = on_published
        self.heartbeat = heartbeat
        self.slot = slot_name(settings, service)
        self.publication = self.slot
        self.heartbeat_topic = heartbeat_topic(TopicNames(settings.topic_prefix))
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.dsn = replication_dsn(engine.url.render_as_string(hide_password=False))
        self.published = 0
        self.active = asyncio.Event()  # set while this instance streams from the slot
        self.standing_by = False  # another instance held the slot when this one looked
        self._heartbeats: list[tuple[datetime, datetime]] = []

    # -- the outer loop -----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = RetryDelay(0.2, self.settings.startup_retry_max_s)
        topics_ready = False
        while True:
            try:
                if not topics_ready:
                    await self.transport.create_topics({self.heartbeat_topic: 1})
                    topics_ready = True
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database/broker down: reconnect, lose nothing
                log.warning(
                    "WAL relay %s interrupted (%s: %s); reconnecting in %.1fs",
                    self.slot,
                    type(exc).__name__,
                    exc,
                    backoff.delay_s,
                )
                await backoff.wait()
            else:
                backoff.reset()

    async def _lead(self) -> None:
        """Become the slot's reader (or wait as standby), then stream until something fails."""
        lock_conn = await self.engine.connect()
        try:
            lock_conn = await lock_conn.execution_options(isolation_level="AUTOCOMMIT")
            await self._acquire(lock_conn)
            await self._ensure_publication(lock_conn)
            repl = await asyncio.to_thread(
                psycopg2.connect,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                **self.dsn,
            )
            try:
                start_lsn = await self._ensure_slot(lock_conn, repl)
                stream = _Stream(self, repl)
                await asyncio.to_thread(
                    stream.cursor.start_replication,
                    slot_name=self.slot,
                    decode=False,
                    options={"proto_version": "1", "publication_names": self.publication},
                    status_interval=max(1.0, self.settings.relay_feedback_interval_s),
                )
                self.active.set()
                self.standing_by = False
                log.info("WAL relay %s is active (%s)", self.slot, self.owner)
                extra = [asyncio.create_task(self._watch(lock_conn), name="wal-relay-watch")]
                if self.heartbeat:
                    extra.append(asyncio.create_task(self._beat(stream), name="wal-relay-beat"))
                try:
                    await _first_failure(extra, stream.run(start_lsn))
                finally:
                    for task in extra:
                        task.cancel()
                    await asyncio.gather(*extra, return_exceptions=True)
            finally:
                await asyncio.to_thread(_close_quietly, repl)
        finally:
            self.active.clear()
            # A pooled connection would keep the advisory lock: throw this one away.
            with contextlib.suppress(Exception):
                await lock_conn.invalidate()
            with contextlib.suppress(Exception):
                await lock_conn.close()

    async def _acquire(self, conn: AsyncConnection) -> None:
        key = _lock_key(self.slot)
        said = False
        while not await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
            self.standing_by = True
            if not said:
                log.info("WAL relay %s: another instance is active; standing by", self.slot)
                said = True
            await asyncio.sleep(self.settings.relay_standby_retry_s)

    async def _watch(self, conn: AsyncConnection) -> None:
        """Losing the lock connection means losing leadership: stop streaming at once."""
        while True:
            await asyncio.sleep(self.settings.relay_standby_retry_s)
            await conn.scalar(sa.text("SELECT 1"))

    async def _beat(self, stream: _Stream) -> None:
        while True:
            await asyncio.sleep(self.settings.relay_heartbeat_interval_s)
            await write_heartbeat(self.engine, self.heartbeat_topic, self.service, self.slot)
            for created, acked in self._heartbeats:
                await record_heartbeat(self.engine, self.slot, "wal", created, acked)
            self._heartbeats.clear()
            async with self.engine.begin() as conn:
                await save_relay_state(
                    conn,
                    self.slot,
                    "wal",
                    owner=self.owner,
                    confirmed_lsn=_lsn_text(stream.confirmed),
                )
            export_lag(self.service, await measure_lag(self.engine, self.slot, self.slot))

    # -- publication, slot and the initial snapshot -------------------------------------------

    async def _ensure_publication(self, conn: AsyncConnection) -> None:
        level = await conn.scalar(sa.text("SHOW wal_level"))
        if level != "logical":
            raise RelayError(f"the WAL relay needs wal_level=logical (the server has {level})")
        exists = await conn.scalar(
            sa.text("SELECT 1 FROM pg_publication WHERE pubname = :p"), {"p": self.publication}
        )
        if not exists:
            await conn.execute(
                sa.text(
                    f'CREATE PUBLICATION "{self.publication}" FOR TABLE outbox '
                    "WITH (publish = 'insert')"
                )
            )
            log.info("created publication %s on outbox (inserts)", self.publication)

    async def _ensure_slot(self, conn: AsyncConnection, repl: Any) -> int:
        """Make sure the slot exists and the rows older than it were published; returns the
        slot's confirmed position."""
        slot = (
            await conn.execute(
                sa.text(
                    "SELECT confirmed_flush_lsn::text AS lsn, plugin FROM pg_replication_slots "
                    "WHERE slot_name = :s"
                ),
                {"s": self.slot},
            )
        ).first()
        done = await conn.scalar(
            sa.select(outbox_relays.c.snapshot_done).where(outbox_relays.c.name == self.slot)
        )
        if slot is not None and done:
            return _parse_lsn(slot.lsn)
        if slot is not None:
            # A previous first start died before its snapshot was published: start it over.
            log.info("slot %s has no finished snapshot; creating it again", self.slot)
            await conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": self.slot})
        await save_relay_state(conn, self.slot, "wal", snapshot_done=False, owner=self.owner)
        cursor = repl.cursor()
        await asyncio.to_thread(
            cursor.execute,
            f'CREATE_REPLICATION_SLOT "{self.slot}" LOGICAL pgoutput EXPORT_SNAPSHOT',
        )
        _, consistent_point, snapshot, _ = await asyncio.to_thread(cursor.fetchone)
        log.info("created replication slot %s at %s", self.slot, consistent_point)
        published = await self._publish_snapshot(snapshot)
        await save_relay_state(conn, self.slot, "wal", snapshot_done=True)
        if published:
            log.info("published %d outbox rows committed before the slot existed", published)
        return _parse_lsn(consistent_point)

    async def _publish_snapshot(self, snapshot: str) -> int:
        """Publish the unpublished rows visible in the slot's exported snapshot — exactly those
        committed before the slot's first streamed transaction — then delete them."""
        ids: list[int] = []
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
                last = 0
                while True:
                    result = await conn.execute(
                        sa.select(
                            outbox.c.id,
                            outbox.c.topic,
                            outbox.c.key,
                            outbox.c.headers,
                            outbox.c.payload,
                            outbox.c.created_at,
                        )
                        .where(outbox.c.published_at.is_(None), outbox.c.id > last)
                        .order_by(outbox.c.id)
                        .limit(self.settings.relay_batch_size)
                    )
                    rows = [OutboxRow.from_columns(*row) for row in result.all()]
                    if not rows:
                        break
                    acked = await self.produce_until_acked(rows)
                    self.after_publish(rows, acked)
                    ids.extend(row.id for row in rows)
                    last = rows[-1].id
        for start in range(0, len(ids), 10_000):
            await self.delete_rows(ids[start : start + 10_000])
        return len(ids)

    # -- shared by the snapshot and the stream -------------------------------------------------

    async def produce_until_acked(self, rows: Sequence[OutboxRow]) -> datetime:
        """Publish `rows`, retrying with backoff for as long as the broker refuses; returns when
        it acknowledged them."""
        records = [row.to_record() for row in rows]
        backoff = RetryDelay(0.1, self.settings.startup_retry_max_s)
        while True:
            try:
                await self.transport.produce(records)
                return datetime.now(UTC)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker down: keep the position, retry
                log.warning(
                    "broker refused %d outbox rows (%s: %s); retrying in %.1fs",
                    len(records),
                    type(exc).__name__,
                    exc,
                    backoff.delay_s,
                )
                await backoff.wait()

    def after_publish(self, rows: Sequence[OutboxRow], acked: datetime) -> None:
        self.published += len(rows)
        if self.on_published is not None:
            self.on_published(rows, acked)
        for row in rows:
            if row.topic == self.heartbeat_topic and row.created_at is not None:
                self._heartbeats.append((row.created_at, acked))

    async def delete_rows(self, ids: list[int]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": ids})


def _parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


async def _first_failure(tasks: list[asyncio.Task[None]], main: Any) -> None:
    """Run `main` alongside `tasks`; whichever ends first (they only end by failing) ends all."""
    main_task = asyncio.ensure_future(main)
    try:
        done, _ = await asyncio.wait([main_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            finished.result()
    finally:
        main_task.cancel()
        await asyncio.gather(main_task, return_exceptions=True)


async def drop_slot(engine: AsyncEngine, settings: Settings, service: str) -> list[str]:
    """Drop the service's replication slot, publication and relay state (`sagaway relay
    drop-slot`). Refuses while a relay is reading the slot. Returns what was dropped."""
    name = slot_name(settings, service)
    dropped: list[str] = []
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.dialect.name != "postgresql":
            raise RelayError("replication slots exist only on PostgreSQL")
        slot = (
            await conn.execute(
                sa.text("SELECT active_pid FROM pg_replication_slots WHERE slot_name = :s"),
                {"s": name},
            )
        ).first()
        if slot is not None:
            if slot.active_pid is not None:
                raise SlotInUse(
                    f"replication slot {name} is being read by a relay (backend pid "
                    f"{slot.active_pid}); stop the relay first"
                )
            await conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": name})
            dropped.append(f"replication slot {name}")
        if await conn.scalar(
            sa.text("SELECT 1 FROM pg_publication WHERE pubname = :p"), {"p": name}
        ):
            await conn.execute(sa.text(f'DROP PUBLICATION "{name}"'))
            dropped.append(f"publication {name}")
        await conn.execute(sa.delete(outbox_relays).where(outbox_relays.c.name == name))
    return dropped
