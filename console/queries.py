"""Every read the console makes, as SQLAlchemy Core queries that an index answers.

The saga listing uses keyset pagination on (created_at, id) — never OFFSET, never a total
count — so page 1 and page 10,000 cost the same with a million rows (see bench/console_listing.py).
Indexes: saga_instances (created_at, id), (status, created_at, id), (saga_type, created_at, id),
(saga_type, status, created_at), (status, updated_at), (principal), unique correlation_id;
saga_steps (saga_id, id); timers (saga_id); outbox (key), (published_at, id); requests
(status, received_at); dead_letters (status, id).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.models import dead_letters, gateway_requests
from orchestrator.models import saga_instances, saga_steps, timers
from sagaway.outbox.models import outbox, outbox_relays

SAGA_STATUSES = ("running", "compensating", "completed", "compensated", "failed")
IN_FLIGHT = ("running", "compensating")
FINISHED = ("completed", "compensated", "failed")
# The age filter: a name in the form → (newer than, older than) in seconds.
AGES: dict[str, tuple[int | None, int | None]] = {
    "": (None, None),
    "lt5m": (300, None),
    "lt1h": (3600, None),
    "lt1d": (86400, None),
    "gt5m": (None, 300),
    "gt1h": (None, 3600),
    "gt1d": (None, 86400),
}
AGE_LABELS = {
    "": "any age",
    "lt5m": "newer than 5 min",
    "lt1h": "newer than 1 h",
    "lt1d": "newer than 1 day",
    "gt5m": "older than 5 min",
    "gt1h": "older than 1 h",
    "gt1d": "older than 1 day",
}
LIST_COLUMNS = (
    saga_instances.c.id,
    saga_instances.c.saga_type,
    saga_instances.c.status,
    saga_instances.c.current_step,
    saga_instances.c.correlation_id,
    saga_instances.c.principal,
    saga_instances.c.created_at,
    saga_instances.c.updated_at,
)


class BadFilter(ValueError):
    """A listing parameter the console does not understand (shown to the user, 400)."""


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _row(mapping: Any) -> dict[str, Any]:
    return {k: aware(v) if isinstance(v, datetime) else v for k, v in mapping.items()}


# ---------------------------------------------------------------- sagas list


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the newest-first listing: the (created_at, id) of a row."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        text = f"{self.created_at.isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            created, _, saga_id = base64.urlsafe_b64decode(padded).decode().partition("|")
            when = datetime.fromisoformat(created)
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadFilter(f"not a page cursor: {token[:40]!r}") from exc
        if not saga_id:
            raise BadFilter(f"not a page cursor: {token[:40]!r}")
        return cls(aware(when) or when, saga_id)


@dataclass(frozen=True, slots=True)
class SagaFilter:
    saga_type: str = ""
    status: str = ""
    age: str = ""
    search: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SagaFilter:
        status = params.get("status", "").strip()
        age = params.get("age", "").strip()
        if status and status not in SAGA_STATUSES:
            raise BadFilter(f"unknown status {status!r}: one of {', '.join(SAGA_STATUSES)}")
        if age not in AGES:
            raise BadFilter(f"unknown age {age!r}: one of {', '.join(a for a in AGES if a)}")
        saga_type = params.get("type", "").strip()
        search = params.get("q", "").strip()
        if len(saga_type) > 200 or len(search) > 200:
            raise BadFilter("filter text longer than 200 characters")
        return cls(saga_type, status, age, search)

    def params(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out), for links and forms."""
        values = {"type": self.saga_type, "status": self.status, "age": self.age, "q": self.search}
        return {k: v for k, v in values.items() if v}

    @property
    def empty(self) -> bool:
        return not self.params()

    def where(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        t = saga_instances.c
        clauses: list[sa.ColumnElement[bool]] = []
        if self.saga_type:
            clauses.append(t.saga_type == self.saga_type)
        if self.status:
            clauses.append(t.status == self.status)
        newer, older = AGES[self.age]
        if newer is not None:
            clauses.append(t.created_at >= now - timedelta(seconds=newer))
        if older is not None:
            clauses.append(t.created_at < now - timedelta(seconds=older))
        if self.search:
            clauses.append(
                sa.or_(
                    t.id == self.search,
                    t.correlation_id == self.search,
                    t.principal == self.search,
                )
            )
        return clauses


@dataclass(slots=True)
class SagaPage:
    rows: list[dict[str, Any]]
    older: Cursor | None  # set when there is a next (older) page
    newer: Cursor | None  # set when there is a previous (newer) page


async def list_sagas(
    conn: AsyncConnection,
    filters: SagaFilter,
    *,
    page_size: int,
    before: Cursor | None = None,
    after: Cursor | None = None,
    now: datetime | None = None,
) -> SagaPage:
    """One page, newest first: the rows older than `before`, or newer than `after`."""
    now = now or datetime.now(UTC)
    t = saga_instances.c
    clauses = filters.where(now)
    key = sa.tuple_(t.created_at, t.id)
    if after is not None:
        clauses.append(key > sa.tuple_(sa.literal(after.created_at), sa.literal(after.id)))
        order = (t.created_at.asc(), t.id.asc())
    else:
        if before is not None:
            clauses.append(key < sa.tuple_(sa.literal(before.created_at), sa.literal(before.id)))
        order = (t.created_at.desc(), t.id.desc())
    query = sa.select(*LIST_COLUMNS).where(*clauses).order_by(*order).limit(page_size + 1)
    rows = [_row(r) for r in (await conn.execute(query)).mappings()]
    more = len(rows) > page_size
    rows = rows[:page_size]
    if after is not None:
        rows.reverse()
    first = Cursor(rows[0]["created_at"], rows[0]["id"]) if rows else None
    last = Cursor(rows[-1]["created_at"], rows[-1]["id"]) if rows else None
    if after is not None:
        return SagaPage(rows, older=last, newer=first if more else None)
    return SagaPage(rows, older=last if more else None, newer=first if before else None)


async def count_sagas(
    conn: AsyncConnection, filters: SagaFilter, *, limit: int, now: datetime | None = None
) -> int:
    """How many sagas match, counting at most `limit` + 1 (a bulk action's confirmation)."""
    inner = (
        sa.select(saga_instances.c.id)
        .where(*filters.where(now or datetime.now(UTC)))
        .limit(limit + 1)
    ).subquery()
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(inner)) or 0)


async def matching_sagas(
    conn: AsyncConnection, filters: SagaFilter, *, limit: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The ids, statuses and current steps of up to `limit` matching sagas, newest first."""
    t = saga_instances.c
    query = (
        sa.select(t.id, t.status, t.current_step)
        .where(*filters.where(now or datetime.now(UTC)))
        .order_by(t.created_at.desc(), t.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def saga_types(conn: AsyncConnection) -> list[str]:
    """The saga types for the filter's drop-down: one short index skip per type on PostgreSQL."""
    t = saga_instances.c
    if conn.dialect.name == "postgresql":
        # A recursive "loose index scan" over (saga_type, ...): DISTINCT would read every row.
        rows = await conn.execute(
            sa.text(
                "WITH RECURSIVE types(t) AS ("
                " (SELECT saga_type FROM saga_instances ORDER BY saga_type LIMIT 1)"
                " UNION ALL SELECT (SELECT saga_type FROM saga_instances"
                "  WHERE saga_type > types.t ORDER BY saga_type LIMIT 1) FROM types"
                "  WHERE types.t IS NOT NULL)"
                " SELECT t FROM types WHERE t IS NOT NULL LIMIT 200"
            )
        )
        return [r[0] for r in rows]
    rows = await conn.execute(sa.select(t.saga_type).distinct().order_by(t.saga_type).limit(200))
    return [r[0] for r in rows]


# ---------------------------------------------------------------- one saga


async def get_saga(conn: AsyncConnection, saga_id: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(sa.select(saga_instances).where(saga_instances.c.id == saga_id)))
        .mappings()
        .first()
    )
    return _row(row) if row else None


async def saga_step_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(saga_steps)
        .where(saga_steps.c.saga_id == saga_id)
        .order_by(saga_steps.c.id)
        .limit(2000)
    )
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def saga_timer_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(timers).where(timers.c.saga_id == saga_id).order_by(timers.c.due_at).limit(200)
    )
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def saga_outbox_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    """Messages the saga sent that are still in the outbox (published ones are pruned)."""
    query = sa.select(outbox).where(outbox.c.key == saga_id).order_by(outbox.c.id).limit(500)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def audit_rows(
    conn: AsyncConnection, audit: sa.Table | None, saga_id: str
) -> list[dict[str, Any]]:
    """What operators did to this saga (the operator_actions table), oldest first."""
    if audit is None:
        return []
    order = audit.c.id if "id" in audit.c else audit.c.at
    query = sa.select(audit).where(audit.c.saga_id == saga_id).order_by(order).limit(500)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


# ---------------------------------------------------------------- overview


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
        found.extend(_row(r) for r in (await conn.execute(query)).mappings())
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
    figures.recent = [_row(m) for m in (await conn.execute(query)).mappings()]
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


# ---------------------------------------------------------------- dead letters


async def list_dead_letters(
    conn: AsyncConnection, *, status: str, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    d = dead_letters.c
    query = sa.select(
        d.id,
        d.dlq_topic,
        d.source_topic,
        d.key,
        d.error,
        d.failed_at,
        d.received_at,
        d.status,
        d.resolved_by,
        d.resolved_at,
    ).where(d.status == status)
    if before_id is not None:
        query = query.where(d.id < before_id)
    query = query.order_by(d.id.desc()).limit(limit)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def get_dead_letter(conn: AsyncConnection, letter_id: int) -> dict[str, Any] | None:
    row = (
        (await conn.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id)))
        .mappings()
        .first()
    )
    return _row(row) if row else None


async def dead_letter_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(dead_letters.c.status, sa.func.count()).group_by(dead_letters.c.status)
    )
    return {status: int(n) for status, n in rows}
