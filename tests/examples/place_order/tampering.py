"""A transport that tampers with what one process publishes: duplicates records or holds some
back until the test lets them go — the broker misbehaving in the ways a saga must survive."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sagaway.messaging.records import Record
from sagaway.messaging.transport import Subscription, Transport

RecordTest = Callable[[Record], bool]


class TamperingTransport(Transport):
    """Delegates to `inner`; records matching `duplicate` are published twice, and records
    matching `hold` are kept back (in `held`) until `release_held()` — every copy of them, since
    a relay may publish a row again (at-least-once)."""

    def __init__(
        self,
        inner: Transport,
        *,
        duplicate: RecordTest | None = None,
        hold: RecordTest | None = None,
    ) -> None:
        self.inner = inner
        self.settings = inner.settings
        self.duplicate = duplicate
        self.hold = hold
        self.held: list[Record] = []
        self.duplicated = 0

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def create_topics(self, partitions: Mapping[str, int]) -> None:
        await self.inner.create_topics(partitions)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        return await self.inner.partition_counts(topics)

    async def produce(self, records: Sequence[Record]) -> None:
        out: list[Record] = []
        for record in records:
            if self.hold and self.hold(record):
                self.held.append(record)
                continue
            out.append(record)
            if self.duplicate and self.duplicate(record):
                out.append(record)
                self.duplicated += 1
        if out:
            await self.inner.produce(out)

    async def release_held(self) -> None:
        held, self.held, self.hold = self.held, [], None
        await self.inner.produce(held)

    def subscribe(self, group_id: str, topics: Sequence[str]) -> Subscription:
        return self.inner.subscribe(group_id, topics)

    async def ping(self) -> None:
        await self.inner.ping()


def command_named(name: str) -> RecordTest:
    return lambda record: record.header("command") == name.encode() and record.header(
        "message-type"
    ) == b"command"


def any_participant_command(record: Record) -> bool:
    return record.header("message-type") == b"command" and not record.topic.endswith(
        "orchestrator.requests"
    )
