"""An outbox row as the relays see it, and how it becomes a broker record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.envelope import PARTITION_COUNT_HEADER
from sagaway.messaging.records import Record
from sagaway.storage.models import from_sqlite_timestamp_text


def stable_partition(key: bytes | None, count: object) -> int:
    """The partition of a keyed record carrying a partition count, else -1 (the transport's own
    choice). The count is the one in force when its saga first sent to the topic
    (docs/scaling.md, "Growing a topic"), so a topic grown while the saga runs keeps all of the
    saga's records on one partition."""
    if key is None or count is None:
        return -1
    try:
        partitions = int(str(count))
    except ValueError:
        return -1
    return default_partition(key, partitions) if partitions > 0 else -1


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message to publish. `payload` is the JSON text of the record value, kept as bytes so
    the WAL relay can forward the database's own text without parsing it."""

    id: int
    topic: str
    key: str | None
    headers: dict[str, str]
    payload: bytes
    created_at: datetime | None = field(default=None, compare=False)

    def to_record(self) -> Record:
        key = self.key.encode() if self.key is not None else None
        return Record(
            topic=self.topic,
            key=key,
            value=self.payload,
            headers=tuple((name, str(value).encode()) for name, value in self.headers.items()),
            partition=stable_partition(key, self.headers.get(PARTITION_COUNT_HEADER)),
        )

    @classmethod
    def from_sqlite_text(
        cls, id: int, topic: str, key: str | None, headers: str, payload: str, created_at: str
    ) -> OutboxRow:
        """From a row as sqlite3 gives it: JSON and timestamps still text. The payload's text
        is the record's value as it is, like the WAL relay's."""
        return cls(
            id=id,
            topic=topic,
            key=key,
            headers=orjson.loads(headers),
            payload=payload.encode(),
            created_at=from_sqlite_timestamp_text(created_at),
        )

    @classmethod
    def from_columns(
        cls,
        id: int,
        topic: str,
        key: str | None,
        headers: Any,
        payload: Any,
        created_at: datetime | None = None,
    ) -> OutboxRow:
        """From decoded column values (JSON already parsed by the driver)."""
        return cls(
            id=int(id),
            topic=topic,
            key=key,
            headers=dict(headers or {}),
            payload=orjson.dumps(payload),
            created_at=created_at,
        )
