"""SQLite on the event loop's own thread, waiting for another writer's lock without blocking it.

aiosqlite hands every statement to a worker thread and back: two thread switches, a futex wake
and a self-pipe write per statement. A saga step runs a dozen statements, so in `sagaway dev`
those switches, not SQL, were most of the CPU (the kernel's futex and scheduler code took more
than half of it). In WAL mode with `synchronous=NORMAL` a commit does not fsync, and a statement
on our small indexed tables takes microseconds, so running it in place is cheaper than any hop.

The one thing that may wait is the write lock held by another connection (another role or
process on the same file). SQLite's busy handler would sleep with the event loop blocked — and if
the holder is a coroutine of this same loop, it could never finish. So the busy timeout is 0 and
`SQLITE_BUSY` is retried here with `asyncio.sleep`, up to the same overall timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import aiosqlite

SQLITE_BUSY = 5
SQLITE_LOCKED = 6
FIRST_BACKOFF_S = 0.0005
MAX_BACKOFF_S = 0.02


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): a lock is taken; trying later may work."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)
    return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


async def call_when_unlocked(fn: Callable[[], Any], timeout_s: float) -> Any:
    """`fn()` now; while it fails with SQLITE_BUSY, again after a growing asynchronous pause.

    Retrying is safe for what we run: a transaction starts with BEGIN IMMEDIATE, so the only
    statements that meet a lock are that BEGIN (nothing done yet) and COMMIT (SQLite keeps the
    transaction open when COMMIT is busy, to be retried)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)


class _RunAtOnce:
    """Stands in for aiosqlite's queue to its worker thread: SQLAlchemy's adapter puts some
    calls (setting isolation_level) on that queue directly; they run here and then."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, as SQLAlchemy's aiosqlite dialect expects it, but every call runs
    at once on the calling thread (see the module docstring); its worker thread never starts."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], busy_timeout_s: float) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunAtOnce()  # type: ignore[assignment]
        self._busy_timeout_s = busy_timeout_s

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        if self._connection is None:
            self._connection = await call_when_unlocked(self._connector, self._busy_timeout_s)
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return await call_when_unlocked(lambda: fn(*args, **kwargs), self._busy_timeout_s)

    def stop(self) -> None:
        """Close the sqlite3 connection here; there is no worker thread to stop."""
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def inline_connector(
    args: Sequence[Any], kwargs: Mapping[str, Any], busy_timeout_s: float
) -> Callable[[], InlineConnection]:
    """An `async_creator` for SQLAlchemy: a new InlineConnection per call, opened with the
    arguments SQLAlchemy's own dialect derives from the URL (path, `uri=True`...)."""
    options = {**kwargs, "check_same_thread": False}  # the pool may close it from a finalizer

    def connect() -> InlineConnection:
        return InlineConnection(lambda: sqlite3.connect(*args, **options), busy_timeout_s)

    return connect
