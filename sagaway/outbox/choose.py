"""The one place that decides which relay publishes a database's outbox: the WAL relay on
PostgreSQL, the polling relay on SQLite (or on PostgreSQL when asked for)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.transport import Transport
from sagaway.outbox.poll_relay import PollRelay
from sagaway.outbox.wal_relay import WalRelay
from sagaway.settings import RelaySettings

RelayMode = Literal["wal", "poll"]
Relay = WalRelay | PollRelay


class RelayModeError(ValueError):
    """The relay mode asked for cannot run on this database (WAL needs PostgreSQL)."""


def relay_mode(engine: AsyncEngine, requested: str | None = None) -> RelayMode:
    """The mode to run: `requested` if this database supports it, else the database's default."""
    postgresql = engine.dialect.name == "postgresql"
    if requested is None:
        return "wal" if postgresql else "poll"
    if requested == "wal" and not postgresql:
        raise RelayModeError("the WAL relay needs PostgreSQL; SQLite uses the polling relay")
    if requested not in ("wal", "poll"):
        raise RelayModeError(f"unknown relay mode {requested!r} (wal or poll)")
    return "wal" if requested == "wal" else "poll"


def make_relay(
    settings: RelaySettings,
    service: str,
    engine: AsyncEngine,
    transport: Transport,
    mode: str | None = None,
    *,
    woken_by_commits: bool = True,
) -> Relay:
    """The relay of `service`'s outbox in `engine`, publishing through `transport`.
    `woken_by_commits=False` for a relay in a process apart from its writers: a polling relay
    there cannot be woken by their commits and looks every `relay_poll_interval_ms`."""
    if relay_mode(engine, mode) == "wal":
        return WalRelay(settings, service, engine, transport)
    return PollRelay(settings, service, engine, transport, woken_by_commits=woken_by_commits)
