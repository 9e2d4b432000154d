"""Creating a service's database before its first migration (`sagaway migrate
--create-database`): on PostgreSQL the database itself, through the server's maintenance
database; on SQLite the file's directory (the file is made by its first connection)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.storage.database import (
    DatabaseMisconfigured,
    async_url,
    create_database_engine,
    describe_database,
    sqlite_path,
    wait_for_database,
)

# Tried in turn to reach the server: every cluster has both unless an administrator dropped one.
MAINTENANCE_DATABASES = ("postgres", "template1")
# Another `migrate --create-database` created it first: duplicate_database, unique_violation.
_ALREADY_THERE = {"42P04", "23505"}


class CannotCreateDatabase(RuntimeError):
    """The server refused CREATE DATABASE (no CREATEDB privilege, a bad name...)."""


async def create_database_if_missing(
    url: str | URL, *, max_backoff_s: float = 30.0, give_up_after_s: float | None = None
) -> str:
    """Make sure the database of `url` exists, waiting for a server that is down; says what it
    did, in one line naming the database (never the password)."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is None:
            return "SQLite in-memory database: nothing to create"
        directory = path.resolve().parent
        if directory.is_dir():
            return f"{describe_database(parsed)}: its directory {directory} exists"
        directory.mkdir(parents=True, exist_ok=True)
        return f"{describe_database(parsed)}: created its directory {directory}"
    name = parsed.database
    if not name:
        raise CannotCreateDatabase(f"{describe_database(parsed)}: the URL names no database")
    engine = await _maintenance_engine(parsed, max_backoff_s, give_up_after_s)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            exists = await conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return f"{describe_database(parsed)} exists"
            try:
                await conn.execute(sa.text(f"CREATE DATABASE {_quoted(name)}"))
            except sa.exc.DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) in _ALREADY_THERE:
                    return f"{describe_database(parsed)} exists"
                first = str(exc.orig).strip().splitlines()
                raise CannotCreateDatabase(
                    f"cannot create {describe_database(parsed)}: "
                    f"{type(exc.orig).__name__}: {first[0] if first else ''} (the user needs "
                    "the CREATEDB privilege; or create it with `createdb`)"
                ) from None
            return f"created {describe_database(parsed)}"
    finally:
        await engine.dispose()


async def _maintenance_engine(
    url: URL, max_backoff_s: float, give_up_after_s: float | None
) -> AsyncEngine:
    """An engine on the server's maintenance database, once the server answers."""
    refused: DatabaseMisconfigured | None = None
    for database in MAINTENANCE_DATABASES:
        engine = create_database_engine(url.set(database=database), pool_size=1)
        try:
            return await wait_for_database(
                engine, max_backoff_s=max_backoff_s, give_up_after_s=give_up_after_s
            )
        except DatabaseMisconfigured as exc:
            await engine.dispose()
            refused = exc
        except BaseException:
            await engine.dispose()
            raise
    assert refused is not None
    raise refused


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
