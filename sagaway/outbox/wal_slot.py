"""The WAL relay's replication slot and publication: their names, creating them on a first start
(publishing the rows older than the slot from its exported snapshot), and dropping them
(`sagaway relay drop-slot`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagaway.outbox.lag import save_relay_state
from sagaway.outbox.models import outbox_relays
from sagaway.settings import RelaySettings
from sagaway.storage.database import sync_url

log = logging.getLogger("sagaway.relay.wal")

# Publishes the rows visible in an exported snapshot; returns how many it published.
SnapshotPublisher = Callable[[str], Awaitable[int]]


class RelayError(RuntimeError):
    """The relay cannot run against this database (not PostgreSQL, no logical WAL, ...)."""


class SlotInUse(RelayError):
    """The replication slot is being read by a running relay (so it cannot be dropped)."""


def slot_name(settings: RelaySettings, service: str) -> str:
    """The slot (and publication) of `service`: `sagaway_<service>`, or the configured name;
    folded to what PostgreSQL allows in slot names (lower case, digits, underscore)."""
    raw = settings.relay_slot_name or f"sagaway_{service}"
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower())[:63]
    if not name:
        raise RelayError(f"cannot derive a replication slot name from {raw!r}")
    return name


def replication_dsn(url: str) -> dict[str, Any]:
    """psycopg2 connection keywords for the database of a SQLAlchemy URL."""
    parsed = make_url(sync_url(url))
    if parsed.get_backend_name() != "postgresql":
        raise RelayError("the WAL relay needs PostgreSQL; use --mode poll on SQLite")
    params: dict[str, Any] = {"dbname": parsed.database}
    if parsed.host:
        params["host"] = parsed.host
    if parsed.port:
        params["port"] = parsed.port
    if parsed.username:
        params["user"] = parsed.username
    if parsed.password:
        params["password"] = parsed.password
    for name, value in parsed.query.items():
        params[name] = value if isinstance(value, str) else value[-1]
    params.setdefault("application_name", "sagaway-relay")
    return params


def lock_key(slot: str) -> int:
    """The session advisory lock whose holder is the slot's one reader."""
    digest = hashlib.sha256(f"sagaway-relay:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lsn_text(lsn: int) -> str:
    """PostgreSQL's text form of a WAL position ("16/B374D848")."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """A WAL position from its text form."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


async def ensure_publication(conn: AsyncConnection, publication: str) -> None:
    """Check the server can stream logical changes, and create the outbox's publication."""
    level = await conn.scalar(sa.text("SHOW wal_level"))
    if level != "logical":
        raise RelayError(f"the WAL relay needs wal_level=logical (the server has {level})")
    exists = await conn.scalar(
        sa.text("SELECT 1 FROM pg_publication WHERE pubname = :p"), {"p": publication}
    )
    if not exists:
        await conn.execute(
            sa.text(
                f"CREATE PUBLICATION \"{publication}\" FOR TABLE outbox WITH (publish = 'insert')"
            )
        )
        log.info("created publication %s on outbox (inserts)", publication)


async def ensure_slot(
    conn: AsyncConnection,
    repl: Any,
    slot: str,
    owner: str,
    publish_snapshot: SnapshotPublisher,
) -> int:
    """Make sure the slot exists and the rows older than it were published; returns the
    slot's confirmed position. `repl` is the replication connection that creates the slot."""
    existing = (
        await conn.execute(
            sa.text(
                "SELECT confirmed_flush_lsn::text AS lsn, plugin FROM pg_replication_slots "
                "WHERE slot_name = :s"
            ),
            {"s": slot},
        )
    ).first()
    done = await conn.scalar(
        sa.select(outbox_relays.c.snapshot_done).where(outbox_relays.c.name == slot)
    )
    if existing is not None and done:
        return parse_lsn(existing.lsn)
    if existing is not None:
        # A previous first start died before its snapshot was published: start it over.
        log.info("slot %s has no finished snapshot; creating it again", slot)
        await conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
    await save_relay_state(conn, slot, "wal", snapshot_done=False, owner=owner)
    cursor = repl.cursor()
    await asyncio.to_thread(
        cursor.execute,
        f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL pgoutput EXPORT_SNAPSHOT',
    )
    _, consistent_point, snapshot, _ = await asyncio.to_thread(cursor.fetchone)
    log.info("created replication slot %s at %s", slot, consistent_point)
    published = await publish_snapshot(snapshot)
    await save_relay_state(conn, slot, "wal", snapshot_done=True)
    if published:
        log.info("published %d outbox rows committed before the slot existed", published)
    return parse_lsn(consistent_point)


async def drop_slot(engine: AsyncEngine, settings: RelaySettings, service: str) -> list[str]:
    """Drop the service's replication slot, publication and relay state (`sagaway relay
    drop-slot`). Refuses while a relay is reading the slot. Returns what was dropped."""
    name = slot_name(settings, service)
    dropped: list[str] = []
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.dialect.name != "postgresql":
            raise RelayError("replication slots exist only on PostgreSQL")
        slot = (
            await conn.execute(
                sa.text("SELECT active_pid FROM pg_replication_slots WHERE slot_name = :s"),
                {"s": name},
            )
        ).first()
        if slot is not None:
            if slot.active_pid is not None:
                raise SlotInUse(
                    f"replication slot {name} is being read by a relay (backend pid "
                    f"{slot.active_pid}); stop the relay first"
                )
            await conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": name})
            dropped.append(f"replication slot {name}")
        if await conn.scalar(
            sa.text("SELECT 1 FROM pg_publication WHERE pubname = :p"), {"p": name}
        ):
            await conn.execute(sa.text(f'DROP PUBLICATION "{name}"'))
            dropped.append(f"publication {name}")
        await conn.execute(sa.delete(outbox_relays).where(outbox_relays.c.name == name))
    return dropped
