"""The "needs attention" band's reads, each bounded whatever the table's size: a count capped at
CAP rows (a LIMIT inside the count, so 1M failed sagas cost CAP index entries, not 1M) and the
oldest row by one index range read. Indexes used: saga_instances (status, updated_at),
dead_letters (status, id), timers (due_at), the gateway's requests (status, received_at)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.attention import Capped
from console.models import dead_letters, gateway_requests
from console.queries.rows import aware
from orchestrator.models import saga_instances, timers

CAP = 1000
# A timeout timer this far past due has not fired: the orchestrator's timer loop normally fires
# within its poll interval (a second or so).
TIMER_GRACE_S = 30.0


async def _capped(
    conn: AsyncConnection,
    table: sa.TableClause,
    where: sa.ColumnElement[bool],
    order: sa.ColumnElement[Any],
    time_column: sa.ColumnElement[Any],
    id_column: sa.ColumnElement[Any],
) -> Capped:
    """Rows matching `where` counted up to CAP + 1, then the first by `order` (an indexed
    column, so the database reads one index entry, never sorts)."""
    limited = sa.select(sa.literal(1).label("one")).select_from(table).where(where).limit(CAP + 1)
    counted = sa.select(sa.func.count()).select_from(limited.subquery())
    count = int((await conn.execute(counted)).scalar_one())
    if not count:
        return Capped()
    first = (
        await conn.execute(sa.select(time_column, id_column).where(where).order_by(order).limit(1))
    ).first()
    return Capped(
        count=min(count, CAP),
        more=count > CAP,
        oldest=aware(first[0]) if first else None,
        sample_id=str(first[1]) if first else None,
    )


async def failed_sagas(conn: AsyncConnection) -> Capped:
    """Failed sagas of any age. Only an operator moves a saga out of `failed` (a retry, skip or
    resume that is applied), so every one still failed is unhandled."""
    t = saga_instances.c
    failed = t.status == "failed"
    return await _capped(conn, saga_instances, failed, t.updated_at, t.updated_at, t.id)


async def new_dead_letters(conn: AsyncConnection) -> Capped:
    d = dead_letters.c
    # Ids grow as letters arrive: the (status, id) index gives the oldest without a sort.
    return await _capped(conn, dead_letters, d.status == "new", d.id, d.received_at, d.id)


async def overdue_timeouts(conn: AsyncConnection, now: datetime) -> Capped:
    """Step timeouts past due by more than TIMER_GRACE_S: their sagas are stuck past their step
    timeout (a fired timer is deleted, so one still here has not been acted on)."""
    tm = timers.c
    where = sa.and_(tm.due_at < now - timedelta(seconds=TIMER_GRACE_S), tm.kind == "timeout")
    return await _capped(conn, timers, where, tm.due_at, tm.due_at, tm.saga_id)


async def held_sync_requests(conn: AsyncConnection, now: datetime, wait_s: float) -> Capped:
    """Sync requests the gateway accepted more than `wait_s` ago and still has not answered."""
    r = gateway_requests.c
    where = sa.and_(
        r.status == "accepted", r.received_at < now - timedelta(seconds=wait_s), r.mode == "sync"
    )
    return await _capped(conn, gateway_requests, where, r.received_at, r.received_at, r.id)
