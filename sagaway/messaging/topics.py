"""Topic names: `<service>.requests`, `<service>.replies`, `<topic>.dlq`, under a prefix
(see docs/messages.md)."""

from __future__ import annotations

DLQ_SUFFIX = ".dlq"


class TopicNames:
    """Builds every topic name from the configured prefix, so nothing hard-codes one."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def requests(self, service: str) -> str:
        """Commands to `service`."""
        return f"{self.prefix}{service}.requests"

    def replies(self, service: str) -> str:
        """Answers to commands that `service` sent."""
        return f"{self.prefix}{service}.replies"

    def named(self, name: str) -> str:
        """Any other topic of Sagaway's, prefixed."""
        return f"{self.prefix}{name}"

    @staticmethod
    def dlq(topic: str) -> str:
        """The dead-letter topic of `topic` (already prefixed)."""
        return topic + DLQ_SUFFIX

    @staticmethod
    def is_dlq(topic: str) -> bool:
        return topic.endswith(DLQ_SUFFIX)
