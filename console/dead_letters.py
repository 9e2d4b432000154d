"""Dead letters: records that failed in some consumer land on `<topic>.dlq`; the console copies
them into its `dead_letters` table, where an operator inspects them, replays one (the original
record produced back to its source topic) or discards it. Both are recorded in the audit log,
filed under the letter (and under its saga only when that saga exists). A replay carries the
letter's id in a `replay-of` header, so a replay that fails again is linked to its original."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from console.models import dead_letters
from orchestrator.models import operator_actions, saga_instances
from sagaway.messaging.processing import DLQ_HEADERS
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Subscription, Transport
from sagaway.observability.backoff import RetryDelay
from sagaway.settings import ConsoleSettings

log = logging.getLogger(__name__)

GROUP_ID = "sagaway-console-dlq"
NEW, REPLAYED, DISCARDED = "new", "replayed", "discarded"
# The header a replayed record carries: the id of the dead letter it replays.
REPLAY_OF = "replay-of"
TARGET_KIND = "dead-letter"
# Ids are 64-bit: a larger number names no letter (and neither database could compare it).
MAX_ID = 2**63 - 1


class DeadLetterNotFound(LookupError):
    pass


class DeadLetterResolved(RuntimeError):
    """Already replayed or discarded: nothing done again."""


def dead_letter_topics(config: ConsoleSettings, topic_prefix: str) -> list[str]:
    """The `<topic>.dlq` topics the console reads (topic names start with `topic_prefix`)."""
    topics = TopicNames(topic_prefix)
    sources = config.dead_letter_topics or [
        name
        for service in config.services
        for name in (topics.requests(service), topics.replies(service))
    ]
    return [TopicNames.dlq(t) for t in dict.fromkeys(sources)]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _letter_id(text: str | None) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def letter_row(record: Record, now: datetime) -> dict[str, object]:
    """The dead_letters row of a DLQ record (pure)."""
    headers = {name: value.decode("utf-8", errors="replace") for name, value in record.headers}
    source = headers.get("dlq-source-topic") or record.topic.removesuffix(".dlq")
    return {
        "dlq_topic": record.topic,
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "source_topic": source,
        "key": (_text(record.key) or "")[:300] or None,
        "headers": headers,
        "value_text": record.value.decode("utf-8", errors="replace"),
        "value_b64": base64.b64encode(record.value).decode(),
        "error": headers.get("dlq-error"),
        "failed_at": _parse_time(headers.get("dlq-failed-at")),
        "received_at": now,
        "status": NEW,
        "replay_of": _letter_id(headers.get(REPLAY_OF)),
    }


def _insert_ignoring_duplicates(conn: AsyncConnection) -> sa.Insert:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(dead_letters).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["dlq_topic", "dlq_partition", "dlq_offset"]
    )


async def store(engine: AsyncEngine, records: Sequence[Record]) -> int:
    """Insert the records' rows; reading one twice (redelivery) stores it once."""
    if not records:
        return 0
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        result = await conn.execute(
            _insert_ignoring_duplicates(conn), [letter_row(r, now) for r in records]
        )
    return int(result.rowcount or 0)


class DeadLetterCollector:
    """Reads the DLQ `topics` in the console's own consumer group into the table."""

    def __init__(self, topics: Sequence[str], transport: Transport, engine: AsyncEngine) -> None:
        self.transport = transport
        self.engine = engine
        self.topics = list(topics)
        self.subscription: Subscription | None = None

    async def run(self) -> None:
        messaging = self.transport.settings
        await self.transport.create_topics({t: messaging.partitions for t in self.topics})
        self.subscription = self.transport.subscribe(GROUP_ID, self.topics)
        await self.subscription.start()
        try:
            while True:
                # A new record ends the wait at once; the timeout only bounds an idle loop.
                records = await self.subscription.fetch(messaging.consumer_max_records, 5000)
                if not records:
                    continue
                await store(self.engine, records)
                await self.subscription.commit(records)
        finally:
            await self.subscription.close()


async def run_collector(collector: DeadLetterCollector) -> None:
    """Keep collecting; a broker hiccup is logged and retried, never fatal to the console."""
    backoff = RetryDelay(0.5, 30.0)
    while True:
        try:
            await collector.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged; retried with backoff
            log.exception("dead-letter collector failed; retrying in %.1fs", backoff.delay_s)
            await backoff.wait()


async def _audit(
    conn: AsyncConnection, letter: dict[str, object], action: str, actor: str, detail: str
) -> None:
    headers = letter["headers"] if isinstance(letter["headers"], dict) else {}
    named = str(headers.get("saga-id") or letter.get("key") or "")[:36]
    # Filed under the saga only if there is one: a poison record may name anything.
    saga_id = named and await conn.scalar(
        sa.select(saga_instances.c.id).where(saga_instances.c.id == named)
    )
    await conn.execute(
        operator_actions.insert().values(
            saga_id=saga_id or None,
            target_kind=TARGET_KIND,
            target_id=str(letter["id"]),
            action=action,
            step=headers.get("saga-step"),
            params={"dead_letter_id": letter["id"], "source_topic": letter["source_topic"]},
            actor=actor,
            outcome="applied",
            detail=detail,
            created_at=datetime.now(UTC),
        )
    )


async def _claim(
    conn: AsyncConnection, letter_id: int, status: str, actor: str
) -> dict[str, object]:
    row = (
        (await conn.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
    updated = await conn.execute(
        dead_letters.update()
        .where(dead_letters.c.id == letter_id, dead_letters.c.status == NEW)
        .values(status=status, resolved_by=actor, resolved_at=datetime.now(UTC))
    )
    if updated.rowcount != 1:
        raise DeadLetterResolved(f"dead letter {letter_id} is already {row['status']}")
    return dict(row)


def replay_record(letter: dict[str, object]) -> Record:
    """The original record, minus the dlq-* headers, addressed to its source topic and marked as
    a replay of this letter (pure)."""
    headers = letter["headers"] if isinstance(letter["headers"], dict) else {}
    key = letter.get("key")
    return Record(
        topic=str(letter["source_topic"]),
        value=base64.b64decode(str(letter["value_b64"])),
        key=str(key).encode() if key else None,
        headers=tuple(
            (name, str(value).encode())
            for name, value in headers.items()
            if name not in DLQ_HEADERS and name != REPLAY_OF
        )
        + ((REPLAY_OF, str(letter["id"]).encode()),),
    )


async def replay(engine: AsyncEngine, transport: Transport, letter_id: int, actor: str) -> None:
    """Produce the letter back to its source topic, then mark it replayed and audit it, in one
    transaction that commits only after the broker acknowledged (a failed produce changes
    nothing; a crash between the two replays it again — consumers deduplicate by message-id)."""
    async with engine.begin() as conn:
        letter = await _claim(conn, letter_id, REPLAYED, actor)
        await transport.produce([replay_record(letter)])
        await _audit(conn, letter, "replay-dlq", actor, f"replayed to {letter['source_topic']}")


async def discard(engine: AsyncEngine, letter_id: int, actor: str) -> None:
    async with engine.begin() as conn:
        letter = await _claim(conn, letter_id, DISCARDED, actor)
        await _audit(conn, letter, "discard-dlq", actor, "discarded")
