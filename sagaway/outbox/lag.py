"""How far behind a relay is: unpublished rows, age of the oldest, slot lag in bytes, and the
commit → broker time of a heartbeat row written on a timer (see docs/outbox.md).

`measure_lag` is what the console and `/metrics` read; the relays call `record_heartbeat` when a
heartbeat row they wrote comes back through their own publish path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagaway.messaging.envelope import Message
from sagaway.messaging.topics import TopicNames
from sagaway.outbox.models import outbox, outbox_relays
from sagaway.storage.database import read_only

HEARTBEAT_TOPIC = "sagaway.heartbeats"

UNPUBLISHED_ROWS = Gauge(
    "sagaway_outbox_unpublished_rows",
    "Outbox rows not yet published (or not yet pruned).",
    ["service"],
)
OLDEST_AGE = Gauge(
    "sagaway_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
SLOT_LAG = Gauge(
    "sagaway_relay_slot_lag_bytes",
    "WAL the relay's replication slot still holds back.",
    ["service"],
)
HEARTBEAT_LAG = Gauge(
    "sagaway_relay_heartbeat_lag_seconds",
    "Commit → broker acknowledgement of the last heartbeat row.",
    ["service"],
)


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """A relay's lag at one moment; None where a figure does not apply (no slot on SQLite)."""

    unpublished_rows: int
    oldest_age_s: float | None
    slot_lag_bytes: int | None
    heartbeat_lag_s: float | None
    heartbeat_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["heartbeat_at"] = self.heartbeat_at.isoformat() if self.heartbeat_at else None
        return data


def heartbeat_topic(topics: TopicNames) -> str:
    return topics.named(HEARTBEAT_TOPIC)


def heartbeat_message(service: str, relay: str) -> Message:
    """The heartbeat event a relay writes to its own outbox on a timer."""
    return Message(message_type="event", payload={"service": service, "relay": relay})


def _aware(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def measure_lag(engine: AsyncEngine, relay: str, slot_name: str | None = None) -> OutboxLag:
    """Read the lag figures of `relay` (its outbox_relays row) and, on PostgreSQL, of the slot.

    With the WAL relay, published rows are deleted a moment after the broker acknowledged them
    (relay_prune_interval_s), so "unpublished" counts those few too.
    """
    async with read_only(engine) as conn:
        count, oldest = (
            await conn.execute(
                sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                    outbox.c.published_at.is_(None)
                )
            )
        ).one()
        slot_lag: int | None = None
        if slot_name is not None and conn.dialect.name == "postgresql":
            lag = await conn.scalar(
                sa.text(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                    " FROM pg_replication_slots WHERE slot_name = :slot"
                ),
                {"slot": slot_name},
            )
            slot_lag = int(lag) if lag is not None else None
        status = (
            await conn.execute(
                sa.select(outbox_relays.c.heartbeat_lag_s, outbox_relays.c.heartbeat_at).where(
                    outbox_relays.c.name == relay
                )
            )
        ).first()
    now = datetime.now(UTC)
    return OutboxLag(
        unpublished_rows=int(count),
        oldest_age_s=(now - _aware(oldest)).total_seconds() if oldest is not None else None,
        slot_lag_bytes=slot_lag,
        heartbeat_lag_s=status.heartbeat_lag_s if status else None,
        heartbeat_at=_aware(status.heartbeat_at) if status and status.heartbeat_at else None,
    )


def export_lag(service: str, lag: OutboxLag) -> None:
    """Put the figures into the Prometheus gauges (labelled by service)."""
    UNPUBLISHED_ROWS.labels(service).set(lag.unpublished_rows)
    OLDEST_AGE.labels(service).set(lag.oldest_age_s or 0.0)
    if lag.slot_lag_bytes is not None:
        SLOT_LAG.labels(service).set(lag.slot_lag_bytes)
    if lag.heartbeat_lag_s is not None:
        HEARTBEAT_LAG.labels(service).set(lag.heartbeat_lag_s)


def _upsert(conn: AsyncConnection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        outbox_relays
    )


async def save_relay_state(conn: AsyncConnection, name: str, mode: str, **values: Any) -> None:
    """Create or update the outbox_relays row `name` with `values` (columns of the table)."""
    values["updated_at"] = datetime.now(UTC)
    insert = _upsert(conn).values({"name": name, "mode": mode, "snapshot_done": False, **values})
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[outbox_relays.c.name], set_={"mode": mode, **values}
        )
    )


async def record_heartbeat(
    engine: AsyncEngine, name: str, mode: str, created_at: datetime, published_at: datetime
) -> float:
    """Store the commit → broker lag of a heartbeat row; returns it in seconds."""
    lag = max(0.0, (published_at - _aware(created_at)).total_seconds())
    async with engine.begin() as conn:
        await save_relay_state(conn, name, mode, heartbeat_lag_s=lag, heartbeat_at=published_at)
    return lag


async def write_heartbeat(engine: AsyncEngine, topic: str, service: str, relay: str) -> None:
    """Commit one heartbeat row to the outbox; its trip to the broker is the relay's lag."""
    from sagaway.outbox.writer import add_to_outbox

    async with engine.begin() as conn:
        await add_to_outbox(conn, [(topic, heartbeat_message(service, relay))])
