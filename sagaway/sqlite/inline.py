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

SQLAlchemy's asyncio adapter still made every cursor call a coroutine — cursor, execute,
description, fetchall, close — each crossing the greenlet bridge back to the event loop and
returning at once. `InlineSQLite` (passed to the engine as its DBAPI module) adapts the sqlite3
connection directly, and `InlineAsyncEngine` skips the bridge itself where nothing can wait: the
checkout of a pooled connection, the statements and COMMIT of a transaction whose BEGIN ran
(sent by `_InlineAsyncTransaction`, which waits for a busy lock on the event loop), the close.
Opening a connection, and statements outside a transaction, still cross it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction
from sqlalchemy.ext.asyncio.result import _ensure_sync_result
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_, in_greenlet

from sagaway.observability.backoff import RetryDelay
from sagaway.sqlite.kept import kept_on
from sagaway.sqlite.options import READ_ONLY

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


async def call_when_unlocked(
    fn: Callable[[], Any], timeout_s: float, *, wait_first: bool = False
) -> Any:
    """`fn()` now (after a first pause if `wait_first`: it was just found busy); while it fails
    with SQLITE_BUSY, again after a growing asynchronous pause.

    Retrying is safe for what we run: a transaction starts with BEGIN IMMEDIATE, so the only
    statements that meet a lock are that BEGIN (nothing done yet) and COMMIT (SQLite keeps the
    transaction open when COMMIT is busy, to be retried)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # Made only once the lock was found busy: most calls never wait.
    delay: RetryDelay | None = None
    if wait_first:
        delay = RetryDelay(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        await delay.wait()
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or loop.time() >= deadline:
                raise
        if delay is None:
            delay = RetryDelay(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        await delay.wait()


def _when_unlocked(fn: Callable[[], Any], timeout_s: float) -> Any:
    """`fn()` at once; if the lock is busy, wait for it on the event loop from inside
    SQLAlchemy's greenlet (the loop keeps running; the holder may be one of its coroutines).

    Outside a greenlet (a statement run directly inside a transaction that holds its lock, see
    `_InlineAsyncConnection`) there is nothing to wait for: a busy lock there is raised."""
    try:
        return fn()
    except sqlite3.OperationalError as exc:
        if not is_busy(exc) or not in_greenlet():
            raise
    return await_(call_when_unlocked(fn, timeout_s, wait_first=True))


def _cross_bridge() -> None:
    """The one crossing SQLAlchemy's greenlet path insists on (`_Ready`); nothing to do when a
    statement runs directly, outside any greenlet."""
    if in_greenlet():
        await_(_READY)


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
        self.busy_timeout_s = busy_timeout_s

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        if self._connection is None:
            self._connection = await call_when_unlocked(self._connector, self.busy_timeout_s)
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return await call_when_unlocked(lambda: fn(*args, **kwargs), self.busy_timeout_s)

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


class _Ready:
    """An awaitable that is done at once. SQLAlchemy's AsyncConnection.execute insists that a
    statement crossed the greenlet bridge at least once (it guards against blocking drivers);
    awaiting this is that one crossing, without a coroutine or a turn of the event loop."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_READY = _Ready()


class _InlineCursor(AsyncAdapt_dbapi_cursor):
    """A cursor over the sqlite3 connection itself. Rows are fetched at execute, as SQLAlchemy's
    adapter does, so the statement is finished before the next one runs."""

    __slots__ = ()
    _awaitable_cursor_close = False

    _adapt_connection: InlineAdaptedConnection

    def __init__(self, adapt_connection: InlineAdaptedConnection) -> None:  # noqa: D107
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = adapt_connection.sqlite_connection.cursor()  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        cursor = self._cursor
        timeout_s = self._adapt_connection.busy_timeout_s
        try:
            if parameters is None:
                _when_unlocked(functools.partial(cursor.execute, operation), timeout_s)
            else:
                _when_unlocked(functools.partial(cursor.execute, operation, parameters), timeout_s)
            if cursor.description:
                self._rows = collections.deque(_when_unlocked(cursor.fetchall, timeout_s))
            _cross_bridge()
        except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy expects
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        call = functools.partial(self._cursor.executemany, operation, seq_of_parameters)
        try:
            _when_unlocked(call, self._adapt_connection.busy_timeout_s)
            _cross_bridge()
        except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy expects
            self._adapt_connection._handle_exception(error)

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        return None


class InlineAdaptedConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter, with cursors, commit and rollback calling
    sqlite3 in place (see the module docstring)."""

    __slots__ = ("busy_timeout_s",)

    def __init__(self, dbapi: Any, connection: InlineConnection) -> None:  # noqa: D107
        super().__init__(dbapi, connection)  # type: ignore[arg-type]
        self.busy_timeout_s = connection.busy_timeout_s

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        return self._connection._conn  # type: ignore[no-any-return]

    @property
    def in_transaction(self) -> bool:
        """Whether SQLite has a transaction open (a BEGIN ran and no COMMIT or ROLLBACK yet)."""
        return self.sqlite_connection.in_transaction

    def cursor(self, server_side: bool = False) -> AsyncAdapt_dbapi_cursor:
        if server_side:
            return super().cursor(server_side=True)
        return _InlineCursor(self)

    @property
    def isolation_level(self) -> str | None:
        return self.sqlite_connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self.sqlite_connection.isolation_level = value  # type: ignore[assignment]

    def commit(self) -> None:
        if self._connection._connection is None:
            return
        try:
            _when_unlocked(self.sqlite_connection.commit, self.busy_timeout_s)
        except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy expects
            self._handle_exception(error)

    def rollback(self) -> None:
        if self._connection._connection is None:
            return
        try:
            self.sqlite_connection.rollback()
        except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy expects
            self._handle_exception(error)

    def close(self) -> None:
        self._connection.stop()


class InlineSQLite(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given for inline engines: its
    connections are `InlineAdaptedConnection`s over `InlineConnection`s."""

    def __init__(self) -> None:  # noqa: D107
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> InlineAdaptedConnection:
        creator_fn = kw.pop("async_creator_fn")
        return InlineAdaptedConnection(self, await_(creator_fn(*arg, **kw)))


def holds_transaction(connection: AsyncConnection) -> bool:
    """Whether SQLite has a transaction open on this connection: its BEGIN (IMMEDIATE: the
    write lock; DEFERRED: a read snapshot) has run, so no statement of it can meet another
    connection's lock, and none needs the greenlet bridge to wait for one."""
    sync = connection.sync_connection
    if sync is None or sync.invalidated or not sync.in_transaction():
        return False
    adapted = sync.connection.dbapi_connection
    return isinstance(adapted, InlineAdaptedConnection) and adapted.in_transaction


def begin_statement(options: Mapping[str, Any]) -> str | None:
    """How a transaction on a connection with these execution options begins: None under
    AUTOCOMMIT (no transaction), DEFERRED for `READ_ONLY`, else IMMEDIATE (the write lock up
    front: a deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another writer got in between, and waiting cannot help it)."""
    if options.get("isolation_level") == "AUTOCOMMIT":
        return None
    return "BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE"


class _InlineAsyncTransaction(AsyncTransaction):
    """Begins, commits and rolls back in place. The BEGIN is sent here, waiting for another
    connection's write lock on the event loop (`call_when_unlocked`), before SQLAlchemy's own
    begin, which then finds SQLite in a transaction and sends nothing. In WAL mode a COMMIT by
    the holder of the write lock never waits for another connection."""

    __slots__ = ()

    async def start(self, is_ctxmanager: bool = False) -> AsyncTransaction:
        sync = self.connection.sync_connection
        adapted = None if sync is None or sync.invalidated else sync.connection.dbapi_connection
        if self.nested or not isinstance(adapted, InlineAdaptedConnection):
            return await super().start(is_ctxmanager)
        statement = begin_statement(sync.get_execution_options())
        sqlite = adapted.sqlite_connection
        if statement is not None and not adapted.in_transaction:
            # Its errors are the driver's, as they were from SQLAlchemy's "begin" event.
            await call_when_unlocked(lambda: sqlite.execute(statement), adapted.busy_timeout_s)
        self.sync_transaction = self._assign_proxied(sync.begin())
        if is_ctxmanager:
            self.sync_transaction.__enter__()
        return self

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if self.nested or not holds_transaction(self.connection):
            await super().__aexit__(type_, value, traceback)
            return
        self._proxied.__exit__(type_, value, traceback)


class _InlineAsyncConnection(AsyncConnection):
    """Runs statements in place once its transaction began. SQLAlchemy's AsyncConnection
    runs each call in a greenlet of its own so that a driver may suspend; here only the BEGIN
    (another connection may hold the write lock: `_when_unlocked` waits on the loop) and the
    first connect need that, and the rest cost twice the statement in greenlet switches
    (docs/benchmarks.md, "Round seven": 40 µs a statement through the bridge, 20 µs in place).

    Also closes in place. SQLAlchemy closes a connection leaving `async with` in a task of its
    own, shielded, so that a cancelled caller cannot abandon the close halfway; an inline
    SQLite connection's close never suspends, so nothing can interrupt it, and the task cost
    two more turns of the event loop per transaction."""

    async def execute(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> Any:
        if not holds_transaction(self):
            return await super().execute(statement, parameters, execution_options=execution_options)
        result = self._proxied.execute(statement, parameters, execution_options=execution_options)
        return await _ensure_sync_result(result, self.execute)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> Any:
        if not holds_transaction(self):
            return await super().exec_driver_sql(statement, parameters, execution_options)
        result = self._proxied.exec_driver_sql(statement, parameters, execution_options)
        return await _ensure_sync_result(result, self.exec_driver_sql)

    async def start(self, is_ctxmanager: bool = False) -> AsyncConnection:
        """Check a connection out of the pool in place; through the greenlet bridge only when
        a new one must be opened (or the pool is empty and the checkout must wait): pool code
        gives back what it took when that raises MissingGreenlet."""
        if self.sync_connection:
            return await super().start(is_ctxmanager)
        try:
            self.sync_connection = self._assign_proxied(self.sync_engine.connect())
        except MissingGreenlet:
            return await super().start(is_ctxmanager)
        return self

    def begin(self) -> AsyncTransaction:
        assert self._proxied
        return _InlineAsyncTransaction(self)

    async def close(self) -> None:
        # Giving the connection back rolls back what is left of its transaction: a plain
        # sqlite3 call (InlineAdaptedConnection.rollback), and a put on the pool's queue.
        self._proxied.close()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()


class InlineAsyncEngine(AsyncEngine):
    """The AsyncEngine of an inline SQLite database (see `_InlineAsyncConnection`).

    `begin()` (through `writing()`) and `reading()` keep the connection of a block that ended
    cleanly for the next one, instead of giving it back to the pool (sagaway/sqlite/kept.py
    says why)."""

    __slots__ = ()
    _connection_cls = _InlineAsyncConnection

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.writing() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A connection for writes, outside any transaction (`begin()` starts one on it); kept
        for the next block if this one ended cleanly."""
        kept = kept_on(self.sync_engine)
        conn = kept.take(reader=False) or await self.connect().start()
        clean = False
        try:
            yield conn
            clean = True
        finally:
            if not (clean and kept.give_back(conn, reader=False)):
                await conn.close()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose transactions only read (`READ_ONLY`: BEGIN DEFERRED, no write
        lock); the transaction its first statement began ends when the block does."""
        kept = kept_on(self.sync_engine)
        conn = kept.take(reader=True)
        if conn is None:
            conn = await self.connect().start()
            await conn.execution_options(**{READ_ONLY: True})
        clean = False
        try:
            yield conn
            clean = True
        finally:
            sync = conn.sync_connection
            try:
                if clean and sync is not None and sync.in_transaction() and not sync.invalidated:
                    # Ends the snapshot now (a plain sqlite3 call): one left open would hold
                    # back every checkpoint of the file.
                    sync.rollback()
            finally:
                # A rollback that failed leaves it in its transaction: given back, not kept.
                if not (clean and kept.give_back(conn, reader=True)):
                    await conn.close()

    async def dispose(self, close: bool = True) -> None:
        for conn in kept_on(self.sync_engine).drain():
            await conn.close()
        await super().dispose(close)
