"""The one choice of relay: WAL on PostgreSQL, polling on SQLite, and a clear error otherwise."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.outbox.choose import RelayModeError, make_relay, relay_mode
from sagaway.outbox.poll_relay import PollRelay
from sagaway.settings import MessagingSettings, RelaySettings


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


def test_a_polling_relay_apart_from_its_writers_polls_and_one_beside_them_is_woken() -> None:
    """Beside its writers the doorbell brings every row and the look at rest is seconds apart;
    `sagaway relay --mode poll` runs apart from them and can only poll."""
    sqlite = create_async_engine("sqlite+aiosqlite://")
    settings = RelaySettings(relay_poll_interval_ms=20, relay_idle_poll_s=2.0)
    transport = EmbeddedTransport(MessagingSettings())

    beside = make_relay(settings, "orders", sqlite, transport)
    apart = make_relay(settings, "orders", sqlite, transport, woken_by_commits=False)

    assert isinstance(beside, PollRelay) and isinstance(apart, PollRelay)
    assert beside.idle_wait_s == 2.0
    assert apart.idle_wait_s == 0.02
