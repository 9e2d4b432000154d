"""The WAL relay: PostgreSQL's outbox, read from a logical replication slot and published in
commit order; the slot is confirmed only once the broker acknowledged (see docs/outbox.md).

Decision: `pgoutput` with a publication on `outbox` limited to inserts, not
`pg_logical_emit_message`. The writer stays one portable INSERT (the same on SQLite, so the
polling relay, the lag figures and the console all see one table), the relay needs no SQL
function in every business transaction, and deleting published rows puts nothing on the stream
(the publication carries inserts only). pgoutput ships with the server; its binary format is
decoded in `pgoutput.py`. Both drain a backlog far faster than the Python producer can publish,
so the choice rests on the portable write path.

How it runs, per service database:
- Leadership (here): a session advisory lock keyed on the slot name; the instance holding it
  streams, any other one stands by and retries every `relay_standby_retry_s` (PostgreSQL also
  lets only one connection read a slot). When the leader dies its connection drops, the lock is
  freed and a standby takes over within a retry interval, from the last confirmed position.
- First start (`wal_slot.py`): the publication and slot are created; rows committed before the
  slot existed are read from the slot's exported snapshot and published first (and
  `outbox_relays.snapshot_done` records it, so a crash in between starts the snapshot over
  instead of losing those rows).
- Streaming (`wal_stream.py`): whole transactions queue up in commit order and are published,
  deleted and confirmed. A crash re-sends only unconfirmed transactions (at-least-once;
  receivers deduplicate with the inbox).
- Idle: every `relay_feedback_interval_s` the relay confirms the server's current position when
  nothing is in flight, so an idle outbox never pins WAL; a heartbeat row every
  `relay_heartbeat_interval_s` measures commit → broker lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extras
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability.backoff import RetryDelay
from sagaway.outbox.lag import (
    export_lag,
    heartbeat_topic,
    measure_lag,
    record_heartbeat,
    save_relay_state,
    write_heartbeat,
)
from sagaway.outbox.models import outbox
from sagaway.outbox.rows import OutboxRow
from sagaway.outbox.wal_slot import (
    RelayError,
    ensure_publication,
    ensure_slot,
    lock_key,
    lsn_text,
    replication_dsn,
    slot_name,
)
from sagaway.outbox.wal_stream import ReplicationSession
from sagaway.settings import RelaySettings

log = logging.getLogger("sagaway.relay.wal")

Published = Callable[[Sequence[OutboxRow], datetime], None]


class WalRelay:
    """Publishes one service's PostgreSQL outbox from its replication slot; `run()` until
    cancelled, surviving broker and database outages and standing by while another instance
    holds the slot."""

    def __init__(
        self,
        settings: RelaySettings,
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
        self.heartbeat_topic = heartbeat_topic(TopicNames(transport.settings.topic_prefix))
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
            await ensure_publication(lock_conn, self.publication)
            repl = await asyncio.to_thread(
                psycopg2.connect,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                **self.dsn,
            )
            try:
                start_lsn = await ensure_slot(
                    lock_conn, repl, self.slot, self.owner, self._publish_snapshot
                )
                stream = ReplicationSession(self, repl)
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
        key = lock_key(self.slot)
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

    async def _beat(self, stream: ReplicationSession) -> None:
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
                    confirmed_lsn=lsn_text(stream.confirmed),
                )
            export_lag(self.service, await measure_lag(self.engine, self.slot, self.slot))

    # -- the initial snapshot --------------------------------------------------------------------

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
