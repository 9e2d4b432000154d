"""Wakes a polling relay as soon as a transaction of its own process that wrote outbox rows
commits, instead of at its next poll. Without it every hop of a saga in `sagaway dev` waited
half a poll interval on average; writers in other processes are still found by polling."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

OUTBOX_WRITTEN = "sagaway.outbox_written"


class Doorbell:
    """A ring that is never lost: one that comes while nobody waits makes the next wait return
    at once (the relay may have read just before that row committed)."""

    def __init__(self) -> None:
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        self._rung = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout_s: float) -> bool:
        """Return on a ring (past or future) or after `timeout_s`, whichever comes first;
        True if it rang."""
        if not self._rung:
            self._waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter, timeout_s)
            self._waiter = None
        rung, self._rung = self._rung, False
        return rung


_DOORBELLS: weakref.WeakKeyDictionary[Engine, Doorbell] = weakref.WeakKeyDictionary()


def doorbell_for(engine: AsyncEngine) -> Doorbell:
    """The doorbell rung when a transaction on `engine` that wrote outbox rows commits."""
    sync_engine = engine.sync_engine
    bell = _DOORBELLS.get(sync_engine)
    if bell is None:
        bell = _DOORBELLS[sync_engine] = Doorbell()
        _ring_on_commit(sync_engine, bell)
    return bell


def _ring_on_commit(sync_engine: Engine, bell: Doorbell) -> None:
    @event.listens_for(sync_engine, "commit")
    def _on_commit(conn: Any) -> None:
        if conn.info.pop(OUTBOX_WRITTEN, False):
            # Rung on the loop's next turn: the COMMIT this event precedes has finished by then
            # on SQLite (its statements run inline); if not, the relay's next poll finds the rows.
            asyncio.get_running_loop().call_soon(bell.ring)

    @event.listens_for(sync_engine, "rollback")
    def _on_rollback(conn: Any) -> None:
        conn.info.pop(OUTBOX_WRITTEN, None)


def note_outbox_written(conn: AsyncConnection) -> None:
    """Mark `conn`'s transaction as one that wrote outbox rows (its commit rings the doorbell)."""
    conn.info[OUTBOX_WRITTEN] = True
