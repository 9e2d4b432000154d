"""A scripted participant for the orchestrator's tests, built on the real pieces: a consumer group
on the real transport, its own database with the real inbox and outbox, a real relay.

It serves the `alpha`, `beta` and `gamma` services of `tests/orchestrator/sagas.py`. Every run of
a handler is a row in `double_handled`, written in the same transaction as the inbox row, so
"no command handled twice" is `count(*) == count(distinct message_id)`.

The outcome is scripted by the saga data (the default command payload):
- `"reject": "<command>"`           → a failure reply (business rejection);
- `"lose_first_reply": "<command>"` → attempt 1 runs the handler and stores the reply in the
  inbox but never sends it (the orchestrator times out; the re-send gets the stored reply);
- `"drop_first": "<command>"`       → attempt 1 is consumed and ignored (a lost command).
Compensations always succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.transient import is_transient
from sagaway.inbox import StoredReply, claim, store_reply
from sagaway.messaging.envelope import Message, new_message_id, now_rfc3339, reply_to
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.outbox.poll_relay import PollRelay
from sagaway.outbox.wal_relay import WalRelay
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings import RelaySettings

SERVICES = ("alpha", "beta", "gamma")

double_metadata = sa.MetaData()
handled = sa.Table(
    "double_handled",
    double_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(36), nullable=False),
    sa.Column("command", sa.String(200), nullable=False),
    sa.Column("saga_id", sa.String(36), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
)


class ParticipantDouble:
    """Start with `await start()`, stop with `await stop()`; counts come from its database."""

    def __init__(
        self, engine: AsyncEngine, transport: Transport, relay_settings: RelaySettings
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.topics = TopicNames(transport.settings.topic_prefix)
        self.relay_settings = relay_settings
        self.processor = RecordProcessor(
            transport,
            transport.settings,
            self.topics.named("participant-double"),
            [self.topics.requests(s) for s in SERVICES],
            self.handle_batch,
        )
        self.dropped: list[str] = []
        self._relay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(double_metadata.create_all)
        await self.transport.create_topics(
            {self.topics.requests(s): self.transport.settings.partitions for s in SERVICES}
        )
        relay: WalRelay | PollRelay
        if self.engine.dialect.name == "postgresql":
            relay = WalRelay(
                self.relay_settings, "double", self.engine, self.transport, heartbeat=False
            )
        else:
            relay = PollRelay(
                self.relay_settings, "double", self.engine, self.transport, heartbeat=False
            )
        self._relay_task = asyncio.create_task(relay.run())
        await self.processor.start()

    async def stop(self) -> None:
        await self.processor.stop()
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relay_task

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        while True:  # like a real participant: wait out a database outage, never dead-letter
            try:
                async with self.engine.begin() as conn:
                    for _record, message in batch:
                        await self._handle(conn, message)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(0.2)

    async def _handle(self, conn: AsyncConnection, command: Message) -> None:
        assert command.command is not None and command.reply_to is not None
        service = command.command.split(".", 1)[0]
        data = command.payload
        first = (command.attempt or 1) == 1
        if data.get("drop_first") == command.command and first:
            self.dropped.append(command.message_id)
            return
        claimed = await claim(conn, service, command.message_id)
        if not claimed.new:
            if claimed.reply is not None:  # answer the re-send with the stored reply
                again = claimed.reply.message.evolve(
                    message_id=new_message_id(), attempt=command.attempt, sent_at=now_rfc3339()
                )
                await add_to_outbox(conn, [(claimed.reply.topic, again)])
            return
        await conn.execute(
            handled.insert().values(
                message_id=command.message_id,
                command=command.command,
                saga_id=command.saga_id,
                attempt=command.attempt or 1,
                handled_at=datetime.now(UTC),
            )
        )
        answer: Message
        if data.get("reject") == command.command:
            answer = reply_to(command, "failure", {"reason": f"{command.command} said no"})
        else:
            answer = reply_to(command, "success", {"handled": command.command})
        await store_reply(conn, service, command.message_id, StoredReply(command.reply_to, answer))
        if data.get("lose_first_reply") == command.command and first:
            return
        await add_to_outbox(conn, [(command.reply_to, answer)])


async def handler_runs(engine: AsyncEngine) -> tuple[int, int]:
    """(handler runs, distinct commands handled) from the double's database."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(handled.c.message_id)))
            )
        ).one()
    return int(row[0]), int(row[1])


async def commands_handled(engine: AsyncEngine, saga_id: str) -> list[str]:
    """The commands handled for one saga, in the order they ran."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(handled.c.command).where(handled.c.saga_id == saga_id).order_by(handled.c.id)
        )
        return [r[0] for r in rows]
