"""The message envelope: commands, replies and events, to and from Kafka records (the headers each
part sends are in docs/messages.md).

Parsing is strict: anything a consumer cannot trust raises `EnvelopeError`, which consumers turn
into a dead letter instead of a crash.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from sagaway.messaging.records import Record

MessageType = Literal["command", "reply", "event"]
ReplyMode = Literal["sync", "async"]
Outcome = Literal["success", "failure"]

MESSAGE_TYPES: frozenset[str] = frozenset({"command", "reply", "event"})
REPLY_MODES: frozenset[str] = frozenset({"sync", "async"})
OUTCOMES: frozenset[str] = frozenset({"success", "failure"})

# Header name -> Message attribute, in the order headers are written.
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("message-id", "message_id"),
    ("message-type", "message_type"),
    ("command", "command"),
    ("correlation-id", "correlation_id"),
    ("causation-id", "causation_id"),
    ("saga-id", "saga_id"),
    ("saga-type", "saga_type"),
    ("saga-step", "saga_step"),
    ("attempt", "attempt"),
    ("reply-to", "reply_to"),
    ("reply-mode", "reply_mode"),
    ("outcome", "outcome"),
    ("principal", "principal"),
    ("traceparent", "traceparent"),
    ("sent-at", "sent_at"),
)
KNOWN_HEADERS: frozenset[str] = frozenset(name for name, _ in HEADER_FIELDS)

# The partition count a saga's records are placed by, stamped by the orchestrator when the saga
# first sends to a topic (docs/scaling.md, "Growing a topic"): a command carries its own topic's
# count, and the count of its reply topic for the participant to put on the reply.
PARTITION_COUNT_HEADER = "partition-count"
REPLY_PARTITION_COUNT_HEADER = "reply-partition-count"


class EnvelopeError(ValueError):
    """A record is not a valid Sagaway message; the text says what is wrong with it."""


def new_message_id() -> str:
    return str(uuid.uuid4())


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Message:
    """A command, reply or event. `payload` is the JSON object carried as the record value."""

    message_type: MessageType
    payload: dict[str, Any]
    message_id: str = field(default_factory=new_message_id)
    command: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    saga_id: str | None = None
    saga_type: str | None = None
    saga_step: str | None = None
    attempt: int | None = None
    reply_to: str | None = None
    reply_mode: ReplyMode | None = None
    outcome: Outcome | None = None
    principal: str | None = None
    traceparent: str | None = None
    sent_at: str = field(default_factory=now_rfc3339)
    extra_headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def key(self) -> str | None:
        """Records are keyed by saga id so one saga's traffic keeps its partition and order."""
        return self.saga_id

    def headers(self) -> dict[str, str]:
        """The headers as text, without the ones that are unset."""
        out: dict[str, str] = {}
        for name, attr in HEADER_FIELDS:
            value = getattr(self, attr)
            if value is not None:
                out[name] = str(value)
        for name, value in self.extra_headers:
            out[name] = value
        return out

    def to_record(self, topic: str) -> Record:
        """Turn the message into a record for `topic`: key = saga id, value = JSON payload."""
        return Record(
            topic=topic,
            key=self.key.encode() if self.key is not None else None,
            value=orjson.dumps(self.payload),
            headers=tuple((name, value.encode()) for name, value in self.headers().items()),
        )

    def evolve(self, **changes: Any) -> Message:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_headers(cls, headers: dict[str, str], payload: Any) -> Message:
        """Build from text headers and a decoded payload; raises EnvelopeError if invalid."""
        if not isinstance(payload, dict):
            raise EnvelopeError(f"value must be a JSON object, got {type(payload).__name__}")
        kwargs: dict[str, Any] = {}
        for name, attr in HEADER_FIELDS:
            if name in headers:
                kwargs[attr] = headers[name]
        missing = [
            name for name in ("message-id", "message-type", "sent-at") if name not in headers
        ]
        if missing:
            raise EnvelopeError(f"missing header(s): {', '.join(missing)}")
        if "attempt" in kwargs:
            try:
                kwargs["attempt"] = int(kwargs["attempt"])
            except ValueError:
                raise EnvelopeError(
                    f"header attempt is not an integer: {kwargs['attempt']!r}"
                ) from None
        extra = tuple((k, v) for k, v in headers.items() if k not in KNOWN_HEADERS)
        return cls(payload=payload, extra_headers=extra, **kwargs)

    @classmethod
    def from_record(cls, record: Record) -> Message:
        """Parse and validate a consumed record; raises EnvelopeError on anything untrustworthy."""
        headers: dict[str, str] = {}
        for name, raw in record.headers:
            if raw is None:
                raise EnvelopeError(f"header {name} has no value")
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise EnvelopeError(f"header {name} is not UTF-8") from None
            if name in headers and name in KNOWN_HEADERS:
                raise EnvelopeError(f"header {name} appears twice")
            headers[name] = text
        try:
            payload = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"value is not UTF-8 JSON: {exc}") from None
        message = cls.from_headers(headers, payload)
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        if message.saga_id is not None and key != message.saga_id:
            raise EnvelopeError(f"record key {key!r} differs from saga-id {message.saga_id!r}")
        return message


def _validate(message: Message) -> None:
    if message.message_type not in MESSAGE_TYPES:
        raise EnvelopeError(
            f"message-type must be one of {sorted(MESSAGE_TYPES)}, got {message.message_type!r}"
        )
    try:
        uuid.UUID(message.message_id)
    except (ValueError, AttributeError, TypeError):
        raise EnvelopeError(f"message-id is not a UUID: {message.message_id!r}") from None
    if not isinstance(message.payload, dict):
        raise EnvelopeError("payload must be a JSON object")
    try:
        datetime.fromisoformat(message.sent_at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise EnvelopeError(f"sent-at is not an RFC 3339 timestamp: {message.sent_at!r}") from None
    if message.message_type == "command":
        if not message.command or "." not in message.command.strip("."):
            raise EnvelopeError(
                f"a command needs a command header <service>.<verb>, got {message.command!r}"
            )
    if message.message_type == "reply":
        if message.outcome not in OUTCOMES:
            raise EnvelopeError(f"a reply needs outcome success|failure, got {message.outcome!r}")
        if not message.causation_id:
            raise EnvelopeError("a reply needs a causation-id (the command it answers)")
    elif message.outcome is not None and message.outcome not in OUTCOMES:
        raise EnvelopeError(f"outcome must be success|failure, got {message.outcome!r}")
    if message.reply_mode is not None and message.reply_mode not in REPLY_MODES:
        raise EnvelopeError(f"reply-mode must be sync|async, got {message.reply_mode!r}")
    if message.attempt is not None and (
        not isinstance(message.attempt, int) or message.attempt < 1
    ):
        raise EnvelopeError(f"attempt must be a positive integer, got {message.attempt!r}")


def command(
    name: str,
    payload: dict[str, Any],
    **headers: Any,
) -> Message:
    """A command to `<service>.<verb>`."""
    return Message(message_type="command", command=name, payload=payload, **headers)


def reply_to(
    cmd: Message,
    outcome: Outcome,
    payload: dict[str, Any],
    **headers: Any,
) -> Message:
    """The reply answering `cmd`: same saga, step, attempt and correlation; causation = its id.
    The command's reply partition count becomes the reply's own, so a grown reply topic keeps
    the saga's replies on one partition."""
    stamp = [
        (PARTITION_COUNT_HEADER, v)
        for k, v in cmd.extra_headers
        if k == REPLY_PARTITION_COUNT_HEADER
    ]
    if stamp:
        headers["extra_headers"] = (*stamp[:1], *headers.get("extra_headers", ()))
    return Message(
        message_type="reply",
        payload=payload,
        outcome=outcome,
        causation_id=cmd.message_id,
        correlation_id=cmd.correlation_id,
        saga_id=cmd.saga_id,
        saga_type=cmd.saga_type,
        saga_step=cmd.saga_step,
        attempt=cmd.attempt,
        command=cmd.command,
        reply_mode=cmd.reply_mode,
        principal=cmd.principal,
        traceparent=cmd.traceparent,
        **headers,
    )
