"""`ParticipantRunner`: consumes `<name>.requests` and answers each command exactly once.

Inside the transaction of the consumed batch: the batch's commands claim their inbox rows in one
statement; a duplicate gets its stored reply again (stamped with the current delivery's attempt);
a new command's handler runs, and a `Rejection` — or a reply that does not match the handler's
contract, answered the same way (`ContractMismatch`) — must undo its writes but keep the inbox
row and the failure reply. That takes a SAVEPOINT per command — two more statements (round trips on
PostgreSQL) for every command, to serve the few that are rejected. So a batch first runs without
savepoints; at the first rejection it rolls back and runs again with one per command (handlers
already run again whenever a batch is redone, below). The replies are stored with the inbox rows and
written to the outbox together at the batch's end (one statement each, not one per command);
the relay publishes them. Anything else a handler raises rolls the batch back and is left to
`RecordProcessor`: retried record by record with backoff, then dead-lettered.

Why one transaction per batch (savepoints inside it) rather than one per command: a
commit is the expensive part (an fsync on PostgreSQL, the write lock on SQLite), and all the
commands of a batch come from partitions this member owns, so sharing it costs nothing in
isolation. The price is paid only on a transient failure, when the batch is redone one record at
a time — its rolled-back work, inbox rows included, is simply done again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from participants.sdk import CommandContext, ContractMismatch, Participant, Rejection
from sagaway.inbox import StoredReply, claim_many, store_replies, stored_reply
from sagaway.messaging.envelope import Message, new_message_id, now_rfc3339, reply_to
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability import logs, tracing
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings import ParticipantSettings

log = logging.getLogger("sagaway.participant")

ORCHESTRATOR = "orchestrator"


class UnanswerableMessage(ValueError):
    """A record on a participant's requests topic that it cannot answer (not a command, or a
    reply-to that is not a topic); after the processor's retries it goes to the DLQ."""


class RejectedWithoutSavepoint(Exception):
    """A handler rejected a command of a batch run without savepoints: the batch must run
    again with them (the transaction it was raised in rolls back)."""


@dataclass
class RunnerStats:
    """Committed work: commands handled (success + rejected), rejections, duplicates answered."""

    succeeded: int = 0
    rejected: int = 0
    duplicates: int = 0

    def add(self, other: RunnerStats) -> None:
        self.succeeded += other.succeeded
        self.rejected += other.rejected
        self.duplicates += other.duplicates


@dataclass
class BatchReplies:
    """The replies a batch's commands produced, written at the end of its transaction."""

    stored: dict[str, StoredReply]  # command message id → its reply, for the inbox
    outbox: list[tuple[str, Message]]
    claimed: set[str]  # inbox rows this batch inserted whose command has not run yet

    @classmethod
    def empty(cls) -> BatchReplies:
        return cls(stored={}, outbox=[], claimed=set())


def group_id_for(topic_prefix: str, participant: str) -> str:
    """The consumer group of a participant's instances (they share its partitions)."""
    return f"{topic_prefix}participant.{participant}"


def _json_object(value: Any, *, lenient: bool) -> dict[str, Any]:
    """A handler's result as a plain JSON object (pydantic models are dumped; None → {})."""
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not isinstance(value, dict):
        raise TypeError(f"a handler must return a dict (a JSON object), not {type(value).__name__}")
    options = orjson.OPT_NON_STR_KEYS
    # Rejection details are shown, never computed on: text for anything JSON cannot hold.
    encoded = orjson.dumps(value, option=options, default=str if lenient else None)
    result: dict[str, Any] = orjson.loads(encoded)
    return result


class ParticipantRunner:
    """Runs `participant`'s handlers against `engine` for commands on its requests topic.

    `await start()` / `await stop()`; `wait_assigned()` waits for the group join. The replies go
    to the outbox of `engine`: run a relay on that database too (`ParticipantService` does).
    The topic prefix and partition count are the transport's (`transport.settings`). Handlers
    get `participant_settings` as `ctx.settings`; without it, start() builds the participant's
    own (`participant.settings()`).
    """

    def __init__(
        self,
        participant: Participant,
        settings: ParticipantSettings,
        engine: AsyncEngine,
        transport: Transport,
        *,
        group_id: str | None = None,
        participant_settings: Any = None,
    ) -> None:
        self.participant = participant
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self.participant_settings = participant_settings
        self._settings_built = participant_settings is not None
        topic_prefix = transport.settings.topic_prefix
        topics = TopicNames(topic_prefix)
        self.requests_topic = topics.requests(participant.name)
        self.default_reply_topic = topics.replies(ORCHESTRATOR)
        self.consumer = participant.name
        self.stats = RunnerStats()
        self.processor = RecordProcessor(
            transport,
            transport.settings,
            group_id or group_id_for(topic_prefix, participant.name),
            [self.requests_topic],
            self.handle_batch,
        )

    def __repr__(self) -> str:
        return f"ParticipantRunner({self.participant.name!r}, topic={self.requests_topic!r})"

    async def start(self) -> None:
        """Build the participant's settings (unless given), create the topics it reads and
        answers on (if missing), then join the group."""
        self._handler_settings()
        partitions = self.transport.settings.partitions
        await self.transport.create_topics(
            {self.requests_topic: partitions, self.default_reply_topic: partitions}
        )
        await self.processor.start()

    def _handler_settings(self) -> Any:
        """The participant's own settings, built once (a bad value fails start(), not a
        command)."""
        if not self._settings_built:
            self.participant_settings = self.participant.settings()
            self._settings_built = True
        return self.participant_settings

    async def stop(self, grace_s: float = 10.0) -> None:
        await self.processor.stop(grace_s)

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        await self.processor.wait_assigned(timeout_s)

    @property
    def dead_lettered(self) -> int:
        return self.processor.dead_lettered

    # -- handling -----------------------------------------------------------------------------

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        """Answer every command of the batch in one transaction (see the module docstring)."""
        if tracing.enabled():
            # Savepoints from the start: a second run would leave a failed span per command.
            stats = RunnerStats()
            await self._handle_traced(batch, stats)
        else:
            try:
                stats = await self._handle(batch, savepoints=False)
            except RejectedWithoutSavepoint:
                log.debug("a command of the batch was rejected: running it again with savepoints")
                stats = await self._handle(batch, savepoints=True)
        self.stats.add(stats)

    async def _handle(
        self, batch: list[tuple[Record, Message]], *, savepoints: bool
    ) -> RunnerStats:
        stats = RunnerStats()
        async with self.engine.begin() as conn:
            replies = await self.claim_batch(conn, batch)
            for _record, message in batch:
                token = logs.bind(message)
                try:
                    await self.handle_command(conn, message, stats, replies, savepoints=savepoints)
                finally:
                    logs.reset(token)
            await self.write_replies(conn, replies)
        return stats

    async def claim_batch(
        self, conn: AsyncConnection, batch: list[tuple[Record, Message]]
    ) -> BatchReplies:
        """Claim the inbox rows of the batch's commands in one statement (a round trip per
        batch, not per command); `handle_command` runs those claimed, and answers the others
        as duplicates."""
        ids = [message.message_id for _, message in batch if message.message_type == "command"]
        replies = BatchReplies.empty()
        replies.claimed = await claim_many(conn, self.consumer, ids)
        return replies

    async def write_replies(self, conn: AsyncConnection, replies: BatchReplies) -> None:
        """Store the batch's replies with their inbox rows and put them in the outbox."""
        await store_replies(conn, self.consumer, replies.stored)
        await add_to_outbox(conn, replies.outbox)

    async def _handle_traced(self, batch: list[tuple[Record, Message]], stats: RunnerStats) -> None:
        """handle_batch with a span per command (child of its traceparent, parent of the reply
        and of any span the handler makes), ended once the batch committed."""
        spans: list[tracing.Span] = []
        with tracing.ending(spans):
            async with self.engine.begin() as conn:
                replies = await self.claim_batch(conn, batch)
                for record, message in batch:
                    span = tracing.message_span(
                        self.participant.name,
                        message,
                        f"{self.participant.name} handle {message.command}",
                        record.topic,
                    )
                    assert span is not None
                    spans.append(span)
                    traced = message.evolve(traceparent=tracing.traceparent_of(span))
                    token = logs.bind(traced)
                    try:
                        with tracing.use_span(span):
                            await self.handle_command(conn, traced, stats, replies)
                    finally:
                        logs.reset(token)
                await self.write_replies(conn, replies)

    async def handle_command(
        self,
        conn: AsyncConnection,
        message: Message,
        stats: RunnerStats,
        replies: BatchReplies,
        *,
        savepoints: bool = True,
    ) -> None:
        """Run (or recall) and answer one command of a batch `claim_batch` claimed, on
        `conn`, the caller's transaction; its reply joins `replies`, which the caller writes
        before it commits. Without `savepoints`, a rejection raises RejectedWithoutSavepoint:
        only rolling back the whole transaction can undo the handler's writes."""
        if message.message_type != "command":
            raise UnanswerableMessage(
                f"{self.requests_topic} takes commands, got a {message.message_type} "
                f"({message.message_id})"
            )
        topic = self._reply_topic(message)
        if message.message_id in replies.claimed:
            # Taken: a second copy of it later in this batch is a duplicate.
            replies.claimed.discard(message.message_id)
        else:
            # Handled earlier in this very batch (its reply is not stored yet), or committed.
            stored = replies.stored.get(message.message_id) or await stored_reply(
                conn, self.consumer, message.message_id
            )
            if stored is not None:
                replies.outbox.append((topic, self._again(stored.message, message)))
            stats.duplicates += 1
            return
        reply = await self._run(conn, message, stats, savepoints)
        replies.stored[message.message_id] = StoredReply(topic, reply)
        replies.outbox.append((topic, reply))

    async def _run(
        self, conn: AsyncConnection, message: Message, stats: RunnerStats, savepoints: bool
    ) -> Message:
        spec = self.participant.handler_for(message.command)
        if spec is None:
            stats.rejected += 1
            return reply_to(
                message,
                "failure",
                {
                    "reason": f"{self.participant.name} has no handler for {message.command}",
                    "known_commands": self.participant.commands,
                },
            )
        try:
            payload = spec.parse(message.payload)
        except Rejection as rejection:
            stats.rejected += 1
            return reply_to(message, "failure", _json_object(rejection.to_payload(), lenient=True))
        context = CommandContext(
            message, conn, self._handler_settings(), self.participant.name
        )
        savepoint = await conn.begin_nested() if savepoints else None
        try:
            result = await spec.handler(context, payload)
            body = _json_object(spec.reply_body(result), lenient=False)
        except Rejection as rejection:
            if savepoint is None:
                raise RejectedWithoutSavepoint(message.message_id) from rejection
            await savepoint.rollback()
            stats.rejected += 1
            if isinstance(rejection, ContractMismatch):
                log.warning("%s for saga %s: %s", message.command, message.saga_id, rejection)
            else:
                log.debug("%s rejected %s: %s", message.command, message.saga_id, rejection.reason)
            refusal = spec.refusal_body(rejection)
            return reply_to(message, "failure", _json_object(refusal, lenient=True))
        if savepoint is not None:
            await savepoint.commit()
        stats.succeeded += 1
        return reply_to(message, "success", body)

    def _reply_topic(self, message: Message) -> str:
        target = message.reply_to
        if target is None:
            return self.default_reply_topic
        if "://" in target:
            raise UnanswerableMessage(
                f"reply-to {target[:100]!r} is a URL; participants answer on a topic"
            )
        return target

    @staticmethod
    def _again(stored: Message, delivery: Message) -> Message:
        """The stored reply, answering this delivery: its attempt, causation and trace. An exact
        redelivery (same attempt) keeps the reply's message id, so the receiver dedupes it."""
        same = stored.attempt == delivery.attempt
        return stored.evolve(
            message_id=stored.message_id if same else new_message_id(),
            attempt=delivery.attempt,
            causation_id=delivery.message_id,
            traceparent=delivery.traceparent or stored.traceparent,
            sent_at=now_rfc3339(),
        )


__all__ = ["ParticipantRunner", "RunnerStats", "UnanswerableMessage", "group_id_for"]
