"""An outbox row as the relays see it, and how it becomes a broker record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from sagaway.messaging.records import Record


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
        return Record(
            topic=self.topic,
            key=self.key.encode() if self.key is not None else None,
            value=self.payload,
            headers=tuple((name, str(value).encode()) for name, value in self.headers.items()),
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
