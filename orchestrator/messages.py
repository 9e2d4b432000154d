"""The orchestrator's messages: the start commands and replies it reads, checked and turned into
engine events, and the commands and final replies it writes for the engine's decisions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from orchestrator.engine.effects import Command, Final
from orchestrator.engine.events import Reply
from orchestrator.reply_inbox import INBOX_NAMESPACE
from orchestrator.saga_rows import LoadedSaga
from sagaway.messaging.envelope import (
    PARTITION_COUNT_HEADER,
    REPLY_PARTITION_COUNT_HEADER,
    Message,
)
from sagaway.messaging.partition_counts import PartitionCounts
from sagaway.messaging.topics import TopicNames
from sagaway.observability import tracing

SERVICE = "orchestrator"
START_COMMAND = "orchestrator.start"
# Final replies whose reply-to is a URL go here; the gateway's callback sender POSTs them.
CALLBACK_TOPIC = "gateway.callbacks"
CALLBACK_URL_HEADER = "callback-url"
MAX_SAGA_ID = 36
MAX_CORRELATION_ID = 100


class InvalidMessage(ValueError):
    """A record on an orchestrator topic is not a start command or reply it can act on."""


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A start command, checked: which saga it creates, for which request."""

    saga_id: str
    correlation_id: str
    message: Message

    @classmethod
    def parse(cls, message: Message) -> StartRequest:
        if not message.saga_type:
            raise InvalidMessage(f"start command {message.message_id} has no saga-type header")
        stored = (
            message.saga_type,
            message.saga_id,
            message.correlation_id,
            message.principal,
            message.reply_to,
            message.traceparent,
        )
        if any(value and "\x00" in value for value in stored):
            raise InvalidMessage(
                f"a header of start command {message.message_id} holds a NUL character"
            )
        correlation_id = message.correlation_id or message.saga_id or message.message_id
        if len(correlation_id) > MAX_CORRELATION_ID:
            raise InvalidMessage(
                f"correlation-id of start command {message.message_id} is longer than "
                f"{MAX_CORRELATION_ID} characters"
            )
        saga_id = message.saga_id or correlation_id
        if len(saga_id) > MAX_SAGA_ID:
            if message.saga_id:
                raise InvalidMessage(
                    f"saga-id of start command {message.message_id} is longer than {MAX_SAGA_ID}"
                )
            saga_id = str(uuid.uuid5(INBOX_NAMESPACE, correlation_id))
        return cls(saga_id, correlation_id, message)


def parse_reply(message: Message) -> Reply:
    """A participant's reply as the engine's `Reply` event, stamped with the time it is handled."""
    if not message.saga_id or not message.saga_step:
        raise InvalidMessage(f"reply {message.message_id} lacks a saga-id or saga-step header")
    assert message.outcome is not None and message.causation_id is not None
    return Reply(
        step=message.saga_step,
        causation_id=message.causation_id,
        attempt=message.attempt or 1,
        outcome=message.outcome,
        payload=message.payload,
        now=time.time(),
    )


def _is_url(reply_to: str) -> bool:
    return reply_to.startswith(("http://", "https://"))


def partition_stamps(
    saga: LoadedSaga, topic: str, reply_topic: str, counts: PartitionCounts | None
) -> tuple[tuple[str, str], ...]:
    """The command's partition-count headers: the counts the saga was stamped with for its topic
    and its reply topic, stamping now (from `counts`) a topic the saga has not sent to before."""
    headers: list[tuple[str, str]] = []
    for name, target in (
        (PARTITION_COUNT_HEADER, topic),
        (REPLY_PARTITION_COUNT_HEADER, reply_topic),
    ):
        count = saga.partitions.get(target)
        if count is None and counts is not None:
            count = counts.get(target)
            if count is not None:
                saga.partitions[target] = count
        if count is not None:
            headers.append((name, str(count)))
    return tuple(headers)


def command_message(
    saga: LoadedSaga,
    cmd: Command,
    topics: TopicNames,
    trace_parent: str | None,
    counts: PartitionCounts | None = None,
) -> tuple[str, Message]:
    """The topic and message of a command the engine sends. `trace_parent`: the span handling
    the event that caused it (tracing on); None makes it a child of the saga's origin."""
    topic = topics.requests(cmd.service)
    reply_topic = topics.replies(SERVICE)
    traceparent = tracing.child_traceparent(
        trace_parent or saga.origin.get("traceparent"),
        f"send {cmd.command}",
        service=SERVICE,
        destination=topic,
        message_id=cmd.message_id,
        correlation_id=saga.correlation_id,
        saga_id=saga.id,
        saga_step=cmd.step,
        attempt=cmd.attempt,
    )
    return topic, Message(
        message_type="command",
        command=cmd.command,
        payload=cmd.payload,
        message_id=cmd.message_id,
        correlation_id=saga.correlation_id,
        saga_id=saga.id,
        saga_type=saga.saga_type,
        saga_step=cmd.step,
        attempt=cmd.attempt,
        reply_to=reply_topic,
        principal=saga.principal,
        traceparent=traceparent,
        extra_headers=partition_stamps(saga, topic, reply_topic, counts),
    )


def final_reply(
    saga: LoadedSaga, final: Final, topics: TopicNames, trace_parent: str | None
) -> tuple[str, Message] | None:
    """The topic and message answering the client of a finished saga; None when it asked for no
    reply. A URL reply-to goes to the gateway's callback topic, the URL in a header."""
    if not saga.reply_to:
        return None
    extra: tuple[tuple[str, str], ...] = ()
    topic = saga.reply_to
    if _is_url(saga.reply_to):
        topic = topics.named(CALLBACK_TOPIC)
        extra = ((CALLBACK_URL_HEADER, saga.reply_to),)
    traceparent = tracing.child_traceparent(
        trace_parent or saga.origin.get("traceparent"),
        f"send final reply ({final.status})",
        service=SERVICE,
        destination=topic,
        correlation_id=saga.correlation_id,
        saga_id=saga.id,
    )
    reply = Message(
        message_type="reply",
        payload={
            "saga_id": saga.id,
            "saga_type": saga.saga_type,
            "status": final.status,
            "result": final.result,
            "failure": final.failure,
        },
        outcome="success" if final.status == "completed" else "failure",
        causation_id=saga.origin.get("message_id") or saga.id,
        correlation_id=saga.correlation_id,
        saga_id=saga.id,
        saga_type=saga.saga_type,
        reply_mode=saga.reply_mode,  # type: ignore[arg-type]
        principal=saga.principal,
        traceparent=traceparent,
        extra_headers=extra,
    )
    return topic, reply
