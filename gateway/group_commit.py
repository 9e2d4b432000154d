"""Group commit: requests that arrive while a transaction is being written share the next one.

Accepting a request costs a transaction; under load most of that cost is the transaction itself
(BEGIN, COMMIT, a pooled connection), not the two rows. Batching keeps each caller's answer its
own: when a shared transaction fails for a reason that may belong to one item (an integrity
error on one request's idempotency key), each item is written again alone, so only that request
gets the error. Errors that are nobody's own (the database is down) go to all at once.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
MAX_BATCH = 256


class GroupCommit(Generic[Item]):
    """Calls `write(items)` for everything submitted since the last write started; a submitter
    returns (or raises) when its own item is durable (or was refused).

    `write` must be all-or-nothing for its batch (one transaction). `shared_errors` are the
    exceptions that say nothing about a particular item (e.g. the database is unavailable)."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[None]],
        shared_errors: tuple[type[BaseException], ...] = (),
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write = write
        self._shared_errors = shared_errors
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> None:
        """Return once `item` is committed; raise what writing it raised."""
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._writer.get_loop() is not loop:
            # The loop the writer ran on is gone (an app served by a new loop, as in tests).
            self._writer = None
            self._queue = [entry for entry in self._queue if entry[1].get_loop() is loop]
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((item, done))
        if self._writer is None:
            # An empty context: the writer serves many requests, and must not log as the first.
            self._writer = loop.create_task(self._drain(), context=contextvars.Context())
        # Shielded: a client that goes away does not cancel the batch the others wait on. Its
        # request is then committed or not exactly as if the commit had raced the disconnect.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._write_batch(batch)
        finally:
            self._writer = None
            # Cancelled (shutdown): nobody may wait forever on a batch that will not be written.
            for _, done in batch + self._queue:
                if not done.done():
                    done.cancel()
            self._queue.clear()

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        try:
            await self._write([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the submitters
            if len(batch) == 1 or isinstance(exc, self._shared_errors):
                for _, done in batch:
                    _settle(done, exc)
                return
            for item, done in batch:  # whose was it? each alone
                try:
                    await self._write([item])
                except Exception as own:  # noqa: BLE001 - handed to its own submitter
                    _settle(done, own)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
