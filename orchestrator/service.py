"""The orchestrator service: the consumer of start commands (`orchestrator.requests`) and
participant replies (`orchestrator.replies`), with the timer loop and, optionally, the outbox relay
its caller built.

Each consumed batch is ONE database transaction: replies are deduplicated through the inbox,
starts are idempotent on the correlation id, the sagas the batch touches are loaded in one query,
`decide` runs on each event in order in memory, and then the saga rows (optimistically locked),
step rows, timers and outbox rows are written in bulk (`session.SagaSession`). The offsets are
committed only after that transaction, so a crash anywhere redelivers and changes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import saga_rows_sqlite as sqlite_rows
from orchestrator.messages import SERVICE, START_COMMAND, InvalidMessage, StartRequest, parse_reply
from orchestrator.registry import SagaRegistry
from orchestrator.reply_inbox import claim_replies
from orchestrator.saga_rows import STARTS_BY_CORRELATION, STARTS_BY_ID
from orchestrator.session import SagaConflict, SagaSession
from orchestrator.timers import TimerLoop
from orchestrator.transient import is_transient
from sagaway.inbox import prune_inbox
from sagaway.messaging.envelope import Message
from sagaway.messaging.partition_counts import PartitionCounts
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability import logs, tracing
from sagaway.observability.backoff import RetryDelay
from sagaway.outbox.choose import Relay
from sagaway.settings import OrchestratorSettings
from sagaway.sqlite.direct import holding_inline_transaction

log = logging.getLogger("sagaway.orchestrator")

INBOX_PRUNE_INTERVAL_MAX_S = 3600.0
MAX_CONFLICT_RETRIES = 5
# How often the partitions owned are compared with the last ones logged (a log line, nothing more).
WATCH_ASSIGNMENT_S = 2.0


class OrchestratorService:
    """The orchestrator process minus its CLI: the consumer of starts and replies, the timer
    loop, and (optionally) the outbox relay of its own database.

        service = OrchestratorService(settings, registry, engine, transport)
        await service.start()     # returns once the consumer joined its group
        ...
        await service.stop()

    The topic prefix and partition count are the transport's (`transport.settings`). A `relay`
    (of this service's outbox in `engine`) runs as one of the service's tasks and stops with it.
    Several instances share the work through the consumer group `<prefix>orchestrator`.
    """

    def __init__(
        self,
        settings: OrchestratorSettings,
        registry: SagaRegistry,
        engine: AsyncEngine,
        transport: Transport,
        *,
        relay: Relay | None = None,
        with_timers: bool = True,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.transport = transport
        self.relay = relay
        self.topics = TopicNames(transport.settings.topic_prefix)
        self.requests_topic = self.topics.requests(SERVICE)
        self.replies_topic = self.topics.replies(SERVICE)
        self.group_id = group_id or self.topics.named(SERVICE)
        self.with_timers = with_timers
        self.processor = RecordProcessor(
            transport,
            transport.settings,
            self.group_id,
            [self.requests_topic, self.replies_topic],
            self.handle_batch,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.timer_loop: TimerLoop | None = None
        self.partition_counts = PartitionCounts(
            transport,
            self.topics_to_create(),
            transport.settings.metadata_max_age_ms / 1000,
        )

    def topics_to_create(self) -> dict[str, int]:
        """Every topic the orchestrator reads or writes: its own, and each participant's
        requests topic named by a loaded saga."""
        names = {self.requests_topic, self.replies_topic}
        for definition in self.registry:
            for spec in definition.steps.values():
                for command in (spec.command, spec.compensation_command):
                    if command:
                        names.add(self.topics.requests(command.split(".", 1)[0]))
        partitions = self.transport.settings.partitions
        return {name: partitions for name in sorted(names)}

    async def start(self) -> None:
        """Create the topics, join the consumer group, start the timer loop (and relay)."""
        await self.transport.create_topics(self.topics_to_create())
        await self.partition_counts.refresh()
        self._tasks.append(
            asyncio.create_task(self.partition_counts.run(), name="orchestrator-partition-counts")
        )
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run(), name="orchestrator-relay"))
        if self.with_timers:
            timer_loop = TimerLoop(
                self.settings, self.registry, self.engine, self.topics, self.partition_counts
            )
            self.timer_loop = timer_loop
            self._tasks.append(asyncio.create_task(timer_loop.run(), name="orchestrator-timers"))
        await self.processor.start()
        self._tasks.append(asyncio.create_task(self._watch_assignment(), name="orchestrator-watch"))
        self._tasks.append(asyncio.create_task(self._prune_inbox(), name="orchestrator-inbox"))

    async def prune_inbox_once(self) -> int:
        """Forget reply ids handled longer than `inbox_retention_s` ago; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.inbox_retention_s)
        async with self.engine.begin() as conn:
            return await prune_inbox(conn, cutoff)

    async def _prune_inbox(self) -> None:
        interval = min(INBOX_PRUNE_INTERVAL_MAX_S, self.settings.inbox_retention_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                pruned = await self.prune_inbox_once()
                if pruned:
                    log.debug("pruned %d orchestrator inbox rows", pruned)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("orchestrator inbox pruning failed: %s", exc)

    async def _watch_assignment(self) -> None:
        """Log the partitions this instance owns whenever they change (who does what)."""
        seen: frozenset[tuple[str, int]] | None = None
        while True:
            subscription = self.processor.subscription
            current = subscription.assignment() if subscription is not None else frozenset()
            if current != seen:
                seen = current
                log.info(
                    "orchestrator %s owns partitions: %s",
                    self.group_id,
                    ", ".join(f"{t}[{p}]" for t, p in sorted(current)) or "none",
                )
            await asyncio.sleep(WATCH_ASSIGNMENT_S)

    async def stop(self) -> None:
        """Finish the batch in hand, leave the group, stop the timer loop and relay."""
        await self.processor.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        await self.processor.wait_assigned(timeout_s)

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        """One transaction for the whole batch (see the module docstring)."""
        items: list[StartRequest | Message] = []
        for record, message in batch:
            if record.topic == self.requests_topic:
                if message.message_type != "command" or message.command != START_COMMAND:
                    raise InvalidMessage(
                        f"{record.topic} takes only {START_COMMAND} commands, got "
                        f"{message.message_type} {message.command!r}"
                    )
                items.append(StartRequest.parse(message))
            elif record.topic == self.replies_topic:
                if message.message_type != "reply":
                    raise InvalidMessage(
                        f"{record.topic} takes only replies, got a {message.message_type}"
                    )
                parse_reply(message)  # reject a malformed reply before anything is written
                items.append(message)
            else:
                raise InvalidMessage(f"the orchestrator does not read topic {record.topic}")
        spans = self._open_spans(items) if tracing.enabled() else None
        with tracing.ending(spans.values() if spans is not None else ()):
            await self._transact(items, spans)

    def _open_spans(self, items: Sequence[StartRequest | Message]) -> dict[int, tracing.Span]:
        """A span per message (child of its traceparent), ended once the batch committed."""
        spans: dict[int, tracing.Span] = {}
        for item in items:
            if isinstance(item, StartRequest):
                message, topic = item.message, self.requests_topic
                name = f"orchestrator start {message.saga_type}"
            else:
                message, topic = item, self.replies_topic
                name = f"orchestrator reply {message.command or message.saga_step}"
            span = tracing.message_span(SERVICE, message, name, topic)
            if span is not None:
                spans[id(item)] = span
        return spans

    async def _transact(
        self,
        items: Sequence[StartRequest | Message],
        spans: dict[int, tracing.Span] | None,
    ) -> None:
        # A lost race or a database that is down is retried here, the batch kept whole: left
        # to the processor, it would be retried record by record and then dead-lettered.
        backoff = RetryDelay(0.05, self.settings.startup_retry_max_s)
        conflicts = 0
        while True:
            try:
                async with self.engine.begin() as conn:
                    due = await self.process(conn, items, spans)
                if due is not None and self.timer_loop is not None:
                    self.timer_loop.wake_by(due)
                return
            except SagaConflict:
                conflicts += 1
                if conflicts > MAX_CONFLICT_RETRIES:
                    raise
                await asyncio.sleep(0.005 * conflicts)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning(
                    "the orchestrator database failed (%s: %s); retrying the batch in %.1fs",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    backoff.delay_s,
                )
                await backoff.wait()

    async def process(
        self,
        conn: AsyncConnection,
        items: Sequence[StartRequest | Message],
        spans: dict[int, tracing.Span] | None = None,
    ) -> float | None:
        """Apply starts and replies, in order, on `conn` (inside the caller's transaction).
        `spans` (tracing on): each item's span, the parent of the messages it causes. Returns
        the earliest due time (epoch seconds) of the timers written, None if none."""
        session = SagaSession(conn, self.registry, self.topics, self.partition_counts)
        replies = [i for i in items if isinstance(i, Message)]
        fresh = {id(m) for m in await claim_replies(conn, replies)}
        starts = [i for i in items if isinstance(i, StartRequest)]
        taken = await self._existing_starts(conn, starts)
        await session.load(m.saga_id for m in replies if id(m) in fresh and m.saga_id)
        for item in items:
            span = spans.get(id(item)) if spans is not None else None
            session.trace_parent = tracing.traceparent_of(span) if span is not None else None
            token = logs.bind(item.message if isinstance(item, StartRequest) else item)
            try:
                self._process_one(session, item, taken, fresh)
            finally:
                logs.reset(token)
        session.trace_parent = None
        await session.flush()
        return session.earliest_due

    def _process_one(
        self,
        session: SagaSession,
        item: StartRequest | Message,
        taken: dict[str, set[str]],
        fresh: set[int],
    ) -> None:
        """Apply one start or reply to the session (the batch loop binds its log context)."""
        if isinstance(item, StartRequest):
            if item.correlation_id in taken["correlation"]:
                log.debug("start of %s redelivered; already started", item.correlation_id)
                return
            if item.saga_id in taken["id"]:
                raise InvalidMessage(
                    f"start command {item.message.message_id}: saga id {item.saga_id} is "
                    f"taken by another request than {item.correlation_id}"
                )
            taken["correlation"].add(item.correlation_id)
            taken["id"].add(item.saga_id)
            message = item.message
            assert message.saga_type is not None
            session.start(
                item.saga_id,
                item.correlation_id,
                message.saga_type,
                message.payload,
                reply_to=message.reply_to,
                reply_mode=message.reply_mode,
                principal=message.principal,
                origin={
                    "message_id": message.message_id,
                    # Timer-fired commands become children of the span that started it.
                    "traceparent": session.trace_parent or message.traceparent,
                },
            )
        elif id(item) in fresh:
            assert item.saga_id is not None
            if session.get(item.saga_id) is None:
                log.warning(
                    "reply %s is for saga %s, which does not exist; ignored",
                    item.message_id,
                    item.saga_id,
                )
                return
            session.apply(item.saga_id, parse_reply(item))

    @staticmethod
    async def _existing_starts(
        conn: AsyncConnection, starts: Sequence[StartRequest]
    ) -> dict[str, set[str]]:
        taken: dict[str, set[str]] = {"correlation": set(), "id": set()}
        if not starts:
            return taken
        correlation_ids = sorted({s.correlation_id for s in starts})
        saga_ids = sorted({s.saga_id for s in starts})
        sqlite = holding_inline_transaction(conn)
        found: list[Any] = []
        if sqlite is not None:
            found = sqlite_rows.existing_starts(sqlite, correlation_ids, saga_ids)
        else:
            # Two indexed lookups: an OR of both would scan the table on SQLite.
            for query, ids in (
                (STARTS_BY_CORRELATION, correlation_ids),
                (STARTS_BY_ID, saga_ids),
            ):
                found.extend(await conn.execute(query, {"ids": ids}))
        for saga_id, correlation_id in found:
            taken["correlation"].add(correlation_id)
            taken["id"].add(saga_id)
        return taken
