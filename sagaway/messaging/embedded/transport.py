"""`EmbeddedTransport`: the broker file behind the `Transport` interface, on the event loop.

Threading: every broker operation (a whole batch insert, a whole multi-partition fetch, a commit
with its ownership check) runs as one call on the event loop's own thread, on the transport's
sqlite3 connection: in WAL mode with synchronous=NORMAL they take microseconds, and handing them
to a worker thread costs more in thread switches than the SQL itself. Another process's write lock
is waited for asynchronously (busy timeout 0, `call_when_unlocked`), never with the loop blocked.
Only pruning, which may delete many rows, runs on a worker thread with a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sagaway.messaging.embedded import crossbell
from sagaway.messaging.embedded.bell import bell_for
from sagaway.messaging.embedded.store import BUSY_TIMEOUT_S, BrokerFile
from sagaway.messaging.embedded.subscription import EmbeddedSubscription
from sagaway.messaging.records import Record
from sagaway.messaging.topic_plan import partitions_for
from sagaway.messaging.transport import Transport, TransportError
from sagaway.settings import MessagingSettings
from sagaway.sqlite.inline import call_when_unlocked

log = logging.getLogger("sagaway.embedded")
T = TypeVar("T")


class EmbeddedTransport(Transport):
    """The durable in-process broker; `EmbeddedTransport(settings)` uses data_dir/broker.db."""

    def __init__(
        self,
        path_or_settings: MessagingSettings | str | Path,
        settings: MessagingSettings | None = None,
    ) -> None:
        if isinstance(path_or_settings, MessagingSettings):
            self.settings = path_or_settings
            self.path = Path(self.settings.data_dir) / "broker.db"
        else:
            self.settings = settings or MessagingSettings()
            self.path = Path(path_or_settings)
        self._executor: ThreadPoolExecutor | None = None
        self._file: BrokerFile | None = None
        self._pruner: BrokerFile | None = None
        self.bell = bell_for(self.path)
        self._cross: crossbell.CrossProcessBell | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._subscriptions: weakref.WeakSet[EmbeddedSubscription] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"EmbeddedTransport({str(self.path)!r})"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a BrokerFile method here, waiting (asynchronously) for another writer's lock."""
        if self._file is None:
            raise TransportError(f"{self!r} is not started")
        try:
            result: T = await call_when_unlocked(lambda: fn(*args), BUSY_TIMEOUT_S)
            return result
        except sqlite3.Error as exc:
            raise TransportError(f"embedded broker {self.path}: {exc}") from exc

    @property
    def file(self) -> BrokerFile:
        if self._file is None:
            raise TransportError(f"{self!r} is not started")
        return self._file

    async def start(self) -> None:
        if self._file is not None:
            return
        try:
            self._file = await call_when_unlocked(
                lambda: BrokerFile(
                    self.path,
                    busy_timeout_ms=0,
                    counts_max_age_ms=self.settings.metadata_max_age_ms,
                ),
                BUSY_TIMEOUT_S,
            )
        except (sqlite3.Error, OSError) as exc:
            raise TransportError(f"cannot open embedded broker {self.path}: {exc}") from exc
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagaway-prune")
        self._prune_task = asyncio.create_task(
            self._prune_periodically(), name="embedded-broker-prune"
        )
        self._cross = crossbell.acquire(self.path, self.bell)

    async def close(self) -> None:
        if self._cross is not None:
            self._cross.release()
            self._cross = None
        for subscription in list(self._subscriptions):
            await subscription.close()
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
            self._prune_task = None
        if self._executor is not None:
            if self._pruner is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._pruner.close)
            self._executor.shutdown(wait=True)
        if self._file is not None:
            self._file.close()
        self._executor = None
        self._pruner = None
        self._file = None

    async def create_topics(self, partitions: Mapping[str, int]) -> None:
        wanted = {name: partitions_for(self.settings, name, n) for name, n in partitions.items()}
        await self.run(self.file.create_topics, wanted)

    async def list_topics(self) -> dict[str, int]:
        return await self.run(self.file.list_topics)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        found = await self.list_topics()
        return {topic: found[topic] for topic in topics if topic in found}

    async def produce(self, records: Sequence[Record]) -> None:
        await self.append(records)

    async def append(self, records: Sequence[Record]) -> list[Record]:
        """Like produce, returning the records with their partition and offset."""
        if not records:
            return []
        stored = await self.run(self.file.append, list(records))
        topics = {record.topic for record in stored}
        self.bell.ring(topics)
        if self._cross is not None:
            self._cross.notify(topics)
        return stored

    def subscribe(self, group_id: str, topics: Sequence[str]) -> EmbeddedSubscription:
        subscription = EmbeddedSubscription(self, group_id, topics)
        self._subscriptions.add(subscription)
        return subscription

    async def ping(self) -> None:
        await self.run(self.file.ping)

    async def prune(self, retention_s: float | None = None) -> int:
        """Delete records every group has consumed that are older than the retention."""
        retention = self.settings.embedded_retention_s if retention_s is None else retention_s
        if self._executor is None:
            raise TransportError(f"{self!r} is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._prune_on_worker, int(retention * 1000)
            )
        except sqlite3.Error as exc:
            raise TransportError(f"embedded broker {self.path}: {exc}") from exc

    def _prune_on_worker(self, retention_ms: int) -> int:
        # A connection of the worker's own, with a blocking busy timeout: it may wait there.
        if self._pruner is None:
            self._pruner = BrokerFile(self.path)
        return self._pruner.prune(retention_ms)

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.embedded_prune_interval_s)
            try:
                deleted = await self.prune()
                if deleted:
                    log.debug("pruned %d consumed records from %s", deleted, self.path)
            except TransportError as exc:
                log.warning("pruning the embedded broker failed: %s", exc)
