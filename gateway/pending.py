"""The correlation map: request id → the futures of the HTTP requests held open for it.

The replier completes them when the final reply is stored here; for replies stored by another
instance, `PendingPoller` looks the held ids up in the database every few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.request_state import RequestState

log = logging.getLogger("sagaway.gateway.pending")


class PendingRequests:
    """Futures by request id; several clients may wait on one id (idempotent retries)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[RequestState]]] = {}
        # Set while some request is held: the poller sleeps on it instead of waking for nothing.
        self.held = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())

    def ids(self) -> list[str]:
        return list(self._waiting)

    def register(self, request_id: str) -> asyncio.Future[RequestState]:
        future: asyncio.Future[RequestState] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(request_id, []).append(future)
        self.held.set()
        return future

    def discard(self, request_id: str, future: asyncio.Future[RequestState]) -> None:
        futures = self._waiting.get(request_id)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self._waiting[request_id]
            if not self._waiting:
                self.held.clear()

    def complete(self, state: RequestState) -> int:
        """Wake everyone waiting for `state.id`; returns how many were woken."""
        futures = self._waiting.pop(state.id, [])
        if not self._waiting:
            self.held.clear()
        for future in futures:
            if not future.done():
                future.set_result(state)
        return len(futures)


class PendingPoller:
    """Completes held requests whose results another instance stored (or that were stored while
    this instance was not listening) by polling the requests table."""

    def __init__(
        self,
        pending: PendingRequests,
        lookup: Callable[[Sequence[str]], Awaitable[list[RequestState]]],
        interval_s: float,
    ) -> None:
        self.pending = pending
        self.lookup = lookup
        self.interval_s = interval_s
        self.completed = 0

    async def poll_once(self) -> int:
        ids = self.pending.ids()
        if not ids:
            return 0
        woken = 0
        for state in await self.lookup(ids):
            woken += self.pending.complete(state)
        self.completed += woken
        return woken

    async def run(self) -> None:
        while True:
            await self.pending.held.wait()
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database blip: the next round tries again
                log.warning("could not look up pending requests: %s", exc)
