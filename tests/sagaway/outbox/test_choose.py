"""The one choice of relay: WAL on PostgreSQL, polling on SQLite, and a clear error otherwise."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sagaway.outbox.choose import RelayModeError, relay_mode


def test_each_database_gets_its_default_relay_and_postgresql_may_poll() -> None:
    sqlite = create_async_engine("sqlite+aiosqlite://")
    postgresql = create_async_engine("postgresql+asyncpg://u:p@127.0.0.1:1/db")

    assert relay_mode(sqlite) == "poll"
    assert relay_mode(postgresql) == "wal"
    assert relay_mode(postgresql, "poll") == "poll"


def test_a_wal_relay_on_sqlite_or_an_unknown_mode_is_refused() -> None:
    sqlite = create_async_engine("sqlite+aiosqlite://")

    with pytest.raises(RelayModeError, match="needs PostgreSQL"):
        relay_mode(sqlite, "wal")
    with pytest.raises(RelayModeError, match="unknown relay mode"):
        relay_mode(sqlite, "stream")
