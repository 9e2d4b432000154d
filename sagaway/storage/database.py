"""Engines for a service's database: SQLite tuned for concurrent writers, PostgreSQL via asyncpg.

`connect_database` is what a process calls at start-up: it waits, with backoff, for a database
that is down instead of dying with a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sagaway.observability.startup import retry_until_up
from sagaway.settings import StorageSettings
from sagaway.sqlite import checkpointer
from sagaway.sqlite.inline import (
    InlineAsyncEngine,
    InlineSQLite,
    begin_statement,
    inline_connector,
)
from sagaway.sqlite.options import READ_ONLY

SQLITE_BUSY_TIMEOUT_MS = 5_000

# Plain scheme names a user may write → the async driver Sagaway runs on.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}
# The async driver → the blocking driver Alembic and the WAL relay (psycopg2) use.
_SYNC_DRIVERS = {
    "postgresql+asyncpg": "postgresql+psycopg2",
    "sqlite+aiosqlite": "sqlite",
}


class UnsupportedDatabase(ValueError):
    """The URL names a database Sagaway does not run on (only PostgreSQL and SQLite)."""


def async_url(url: str | URL) -> URL:
    """`url` with the async driver Sagaway uses (`postgresql://` → `postgresql+asyncpg://`)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise UnsupportedDatabase(
            f"unsupported database URL scheme {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)}: use postgresql+asyncpg:// or "
            "sqlite+aiosqlite://"
        )
    return parsed.set(drivername=driver)


def sync_url(url: str | URL) -> str:
    """The blocking-driver twin of an async URL, password included, for Alembic and psycopg2."""
    parsed = async_url(url)
    return parsed.set(drivername=_SYNC_DRIVERS[parsed.drivername]).render_as_string(
        hide_password=False
    )


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def describe_database(url: str | URL) -> str:
    """A human name for log lines and errors, never with the password:
    "PostgreSQL at host:port/db" or "SQLite file /path/x.db"."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        return f"SQLite file {path.resolve()}" if path else "SQLite in-memory database"
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    return f"PostgreSQL at {host}:{port}/{parsed.database or ''}"


def json_text(value: Any) -> str:
    """A JSON column's stored text: the engines' serializer. orjson is several times faster than
    json on the hot path; it also writes datetimes (RFC 3339)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def from_json_text(text: str | None) -> Any:
    """A JSON column's value from its stored text, as sqlite3 returns it (SQL NULL is None)."""
    return None if text is None else orjson.loads(text)


def create_database_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    application_name: str | None = None,
    sqlite_inline: bool = True,
    **engine_options: Any,
) -> AsyncEngine:
    """An AsyncEngine for `url`. SQLite gets WAL, a busy timeout, foreign keys and BEGIN
    IMMEDIATE transactions, and runs its statements on the event loop's thread unless
    `sqlite_inline` is False (see sqlite_inline.py; the console keeps aiosqlite's worker thread
    for its long listing queries); PostgreSQL gets an asyncpg pool that survives restarts
    without a round trip per checkout (`_replace_closed_connections`)."""
    parsed = async_url(url)
    options: dict[str, Any] = {
        "json_serializer": json_text,
        "json_deserializer": orjson.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A fixed pool, as for PostgreSQL below: overflow connections were opened (four
            # PRAGMAs each) and closed again for every burst of concurrent transactions.
            options.update(pool_size=pool_size, max_overflow=0, pool_timeout=30)
        if sqlite_inline:
            args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(parsed)
            options["async_creator"] = inline_connector(args, kwargs, SQLITE_BUSY_TIMEOUT_MS / 1000)
            options["module"] = InlineSQLite()
        options.update(engine_options)
        engine = create_async_engine(parsed, **options)
        if sqlite_inline:
            engine = InlineAsyncEngine(engine.sync_engine)
        _tune_sqlite(engine, busy_timeout_ms=0 if sqlite_inline else SQLITE_BUSY_TIMEOUT_MS)
        if path is not None:
            checkpointer.watch(path, engine.sync_engine)
        return engine
    connect_args: dict[str, Any] = {}
    if application_name:
        connect_args["server_settings"] = {"application_name": application_name}
    options.update(
        pool_size=pool_size,
        # No overflow: a connection opened for a burst was closed when handed back, so a busy
        # gateway opened (TLS handshake attempt, a backend forked) and closed one per request.
        # Callers past pool_size wait their turn; a transaction here lasts milliseconds.
        max_overflow=0,
        pool_timeout=30,
        connect_args=connect_args,
    )
    options.update(engine_options)
    engine = create_async_engine(parsed, **options)
    _replace_closed_connections(engine)
    return engine


def _replace_closed_connections(engine: AsyncEngine) -> None:
    """Discard, at checkout, a pooled connection whose server went away (a restart), so the
    first query after it does not fail with "connection is closed".

    asyncpg keeps reading its socket while idle, so it knows at once when the server closed
    it: checking costs nothing, where `pool_pre_ping` spent a round trip (and a wake-up of the
    server) on every checkout — one more per transaction, ~10 % of a role's PostgreSQL calls.
    A connection that dies after this check fails its transaction, which every caller retries."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise sa.exc.DisconnectionError("the PostgreSQL server closed this pooled connection")


def _tune_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 driver (it would not BEGIN before a SELECT
        # and begins deferred), so that _on_begin decides how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints run on a thread of their own (checkpointer.py), not inside a commit.
            cursor.execute(f"PRAGMA wal_autocheckpoint={checkpointer.AUTOCHECKPOINT_PAGES}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # IMMEDIATE, or DEFERRED on a `read_only` connection (a snapshot; in WAL mode it neither
        # waits for nor blocks a writer): sqlite.inline.begin_statement says why. An inline
        # engine's transaction has sent it already (waiting for the lock on the event loop).
        statement = begin_statement(connection.get_execution_options())
        adapted = connection.connection.dbapi_connection
        if statement is None or getattr(adapted, "in_transaction", False):
            return
        # Sent on the driver's cursor: SQLAlchemy's execution path costs more than the statement.
        cursor = connection.connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


@contextlib.asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection that only reads. On SQLite its transaction takes no write lock (every other
    transaction there takes it up front); elsewhere it is a plain connection. Writing on it
    fails on SQLite with "database is locked" if another connection writes meanwhile."""
    if isinstance(engine, InlineAsyncEngine):
        async with engine.reading() as conn:
            yield conn
        return
    async with engine.connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})
        yield conn


# SQLSTATEs that waiting will not cure: the database or role does not exist, a bad password.
_CONFIGURATION_SQLSTATES = {"3D000", "28000", "28P01"}


class DatabaseMisconfigured(RuntimeError):
    """The server answered but refused us for a reason retrying cannot fix."""


class DatabaseUnavailable(RuntimeError):
    """The database did not answer within the time we were willing to wait."""


async def ping(engine: AsyncEngine) -> None:
    """One round trip; raises if the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))


async def wait_for_database(
    engine: AsyncEngine,
    *,
    max_backoff_s: float = 30.0,
    give_up_after_s: float | None = None,
) -> AsyncEngine:
    """Return `engine` once it answers `SELECT 1`, logging which database is down meanwhile.

    Raises DatabaseMisconfigured at once for a missing database/role or a bad password, and
    DatabaseUnavailable when `give_up_after_s` runs out; both name the database."""
    what = describe_database(engine.url)

    async def probe() -> DatabaseMisconfigured | None:
        try:
            await ping(engine)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _CONFIGURATION_SQLSTATES:
                return DatabaseMisconfigured(f"{what} refused the connection: {exc.orig}")
            raise
        return None

    try:
        refused = await retry_until_up(
            what, probe, max_backoff_s=max_backoff_s, give_up_after_s=give_up_after_s
        )
    except Exception as exc:  # noqa: BLE001 - whatever the last failure was, report it in one line
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseUnavailable(
            f"{what} is unreachable after {give_up_after_s:g}s "
            f"({type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else ''})"
        ) from exc
    if refused is not None:
        raise refused
    return engine


async def connect_database(
    settings: StorageSettings, service: str, *, give_up_after_s: float | None = None
) -> AsyncEngine:
    """The engine of `service`'s database, once it is up (waits forever unless told otherwise)."""
    engine = create_database_engine(
        settings.database_url_for(service),
        pool_size=settings.database_pool_size,
        application_name=f"sagaway-{service}",
    )
    try:
        return await wait_for_database(
            engine, max_backoff_s=settings.startup_retry_max_s, give_up_after_s=give_up_after_s
        )
    except BaseException:
        await engine.dispose()
        raise
