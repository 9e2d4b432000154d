"""Reading back what a relay published: every record of some topics, through a consumer group."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from sagaway.messaging.records import Record
from sagaway.messaging.transport import Transport
from tests.harness.waiting import eventually


class BrokerReader:
    """A consumer-group member that collects records until told how many to expect."""

    def __init__(self, transport: Transport, topics: Sequence[str]) -> None:
        self.subscription = transport.subscribe(f"reader-{uuid.uuid4().hex[:8]}", list(topics))
        self.records: list[Record] = []

    async def __aenter__(self) -> BrokerReader:
        await self.subscription.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.subscription.close()

    async def read_until(self, count: int, timeout_s: float = 30.0) -> list[Record]:
        """Fetch until at least `count` records arrived in total; AssertionError otherwise."""

        async def enough() -> bool:
            if len(self.records) >= count:
                return True
            batch = await self.subscription.fetch(5000, 200)
            if batch:
                self.records.extend(batch)
                await self.subscription.commit(batch)
            return False

        await eventually(
            enough,
            timeout_s=timeout_s,
            what=lambda: f"{count} records (got {len(self.records)})",
            interval_s=0,
        )
        return self.records

    async def read_for(self, seconds: float) -> list[Record]:
        """Fetch whatever arrives during `seconds` (to show nothing more comes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            batch = await self.subscription.fetch(5000, 100)
            if batch:
                self.records.extend(batch)
                await self.subscription.commit(batch)
        return self.records
