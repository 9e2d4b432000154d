"""The broker-neutral record: what every transport produces and hands to consumers."""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka-style record. `partition`/`offset` are -1 until the broker has stored it."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = field(default=0, compare=False)

    def header(self, name: str) -> bytes | None:
        """The first header of that name, or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
