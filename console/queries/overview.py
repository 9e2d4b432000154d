"""The overview's figures: sagas by type and status, finishes per minute, recent sagas, the
gateway's unanswered requests and each service's outbox backlog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.models import gateway_requests
from console.queries.rows import aware, row_dict
from console.queries.saga_list import FINISHED, IN_FLIGHT, LIST_COLUMNS
from orchestrator.models import saga_instances
from sagaway.outbox.models import outbox, outbox_relays


@dataclass(slots=True)
class SagaCounts:
    """Sagas by type and status: in flight now, and finished within the last hour."""

    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    finished_last_hour: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return sorted({t for t, _ in self.in_flight} | {t for t, _ in self.finished_last_hour})

    def get(self, saga_type: str, status: str) -> int:
        return self.in_flight.get((saga_type, status)) or self.finished_last_hour.get(
            (saga_type, status), 0
        )

    def total(self, status: str) -> int:
        source = self.in_flight if status in IN_FLIGHT else self.finished_last_hour
        return sum(n for (_, s), n in source.items() if s == status)


async def saga_counts(conn: AsyncConnection, now: datetime) -> SagaCounts:
    t = saga_instances.c
    counts = SagaCounts()
    # Both read the (status, updated_at) index: in-flight sagas are few, finished ones are bounded
    # by the hour.
    rows = await conn.execute(
        sa.select(t.saga_type, t.status, sa.func.count())
        .where(t.status.in_(IN_FLIGHT))
        .group_by(t.saga_type, t.status)
    )
    counts.in_flight = {(r[0], r[1]): int(r[2]) for r in rows}
    rows = await conn.execute(
        sa.select(t.saga_type, t.status, sa.func.count())
        .where(t.status.in_(FINISHED), t.updated_at >= now - timedelta(hours=1))
        .group_by(t.saga_type, t.status)
    )
    counts.finished_last_hour = {(r[0], r[1]): int(r[2]) for r in rows}
    return counts


def _minute(conn: AsyncConnection, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return sa.func.date_trunc("minute", column)
    return sa.func.strftime("%Y-%m-%d %H:%M", column)


def _parse_minute(value: Any) -> datetime:
    if isinstance(value, datetime):
        return aware(value.replace(second=0, microsecond=0)) or value
    return datetime.strptime(str(value), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


async def finishes_per_minute(
    conn: AsyncConnection, now: datetime, minutes: int = 60
) -> dict[str, list[tuple[datetime, int]]]:
    """Completions and compensations per minute over the last `minutes` (oldest first, zeros
    included), from the (status, updated_at) index."""
    t = saga_instances.c
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    bucket = _minute(conn, t.updated_at).label("minute")
    rows = await conn.execute(
        sa.select(t.status, bucket, sa.func.count())
        .where(t.status.in_(("completed", "compensated")), t.updated_at >= start)
        .group_by(t.status, bucket)
    )
    found: dict[tuple[str, datetime], int] = {}
    for status, minute, n in rows:
        found[(status, _parse_minute(minute))] = int(n)
    slots = [start + timedelta(minutes=i) for i in range(minutes)]
    return {
        status: [(slot, found.get((status, slot), 0)) for slot in slots]
        for status in ("completed", "compensated")
    }


async def recent_sagas(
    conn: AsyncConnection, statuses: Sequence[str], *, limit: int, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The most recently updated sagas of these statuses: one index range per status, merged."""
    t = saga_instances.c
    found: list[dict[str, Any]] = []
    for status in statuses:
        query = sa.select(*LIST_COLUMNS).where(t.status == status)
        if since is not None:
            query = query.where(t.updated_at >= since)
        query = query.order_by(t.updated_at.desc()).limit(limit)
        found.extend(row_dict(r) for r in (await conn.execute(query)).mappings())
    found.sort(key=lambda r: r["updated_at"], reverse=True)
    return found[:limit]


@dataclass(slots=True)
class RequestFigures:
    """The gateway's requests accepted and not yet answered."""

    accepted: int = 0
    oldest: datetime | None = None
    by_mode: dict[str, int] = field(default_factory=dict)
    pending_sync_by_gateway: dict[str, int] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)


async def request_figures(conn: AsyncConnection, *, limit: int = 20) -> RequestFigures:
    r = gateway_requests.c
    accepted = r.status == "accepted"
    figures = RequestFigures()
    rows = await conn.execute(
        sa.select(r.mode, r.gateway_id, sa.func.count(), sa.func.min(r.received_at))
        .where(accepted)
        .group_by(r.mode, r.gateway_id)
    )
    for mode, gateway_id, n, oldest in rows:
        figures.accepted += int(n)
        figures.by_mode[mode] = figures.by_mode.get(mode, 0) + int(n)
        if mode == "sync":
            name = gateway_id or "(unnamed)"
            figures.pending_sync_by_gateway[name] = figures.pending_sync_by_gateway.get(
                name, 0
            ) + int(n)
        oldest = aware(oldest)
        if oldest is not None and (figures.oldest is None or oldest < figures.oldest):
            figures.oldest = oldest
    query = (
        sa.select(r.id, r.saga_type, r.mode, r.gateway_id, r.principal, r.received_at)
        .where(accepted)
        .order_by(r.received_at.desc())
        .limit(limit)
    )
    figures.recent = [row_dict(m) for m in (await conn.execute(query)).mappings()]
    return figures


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """One service's outbox: unpublished rows, age of the oldest, the relay's heartbeat lag."""

    service: str
    unpublished: int
    oldest_age_s: float | None
    relay_lag_s: float | None
    relay_seen_at: datetime | None
    error: str | None = None


async def outbox_figures(conn: AsyncConnection, service: str, now: datetime) -> OutboxFigures:
    count, oldest = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                outbox.c.published_at.is_(None)
            )
        )
    ).one()
    # Several relays may have written heartbeats (a WAL relay and a poller): the freshest counts.
    relay = (
        await conn.execute(
            sa.select(outbox_relays.c.heartbeat_lag_s, outbox_relays.c.heartbeat_at)
            .where(outbox_relays.c.heartbeat_at.is_not(None))
            .order_by(outbox_relays.c.heartbeat_at.desc())
            .limit(1)
        )
    ).first()
    oldest = aware(oldest)
    return OutboxFigures(
        service=service,
        unpublished=int(count),
        oldest_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        relay_lag_s=relay[0] if relay else None,
        relay_seen_at=aware(relay[1]) if relay else None,
    )
