"""One saga's rows for its page: the instance, its steps, timers, unpublished outbox rows and what
operators did to it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.queries.rows import row_dict
from orchestrator.models import saga_instances, saga_steps, timers
from sagaway.outbox.models import outbox


async def get_saga(conn: AsyncConnection, saga_id: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(sa.select(saga_instances).where(saga_instances.c.id == saga_id)))
        .mappings()
        .first()
    )
    return row_dict(row) if row else None


async def saga_step_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(saga_steps)
        .where(saga_steps.c.saga_id == saga_id)
        .order_by(saga_steps.c.id)
        .limit(2000)
    )
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]


async def saga_timer_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(timers).where(timers.c.saga_id == saga_id).order_by(timers.c.due_at).limit(200)
    )
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]


# The saga page looks for a saga's messages among the outbox's unpublished rows, through the
# (published_at, id) index the polling relay reads. Outbox rows are not indexed by key: that
# index cost a b-tree page in every commit that wrote a message (docs/console.md). A published
# message is in the timeline, and on PostgreSQL the relay deletes it at once anyway.
UNPUBLISHED_SEARCHED = 20_000


def _oldest_unpublished(limit: int, *columns: sa.ColumnElement[Any]) -> sa.Subquery:
    return (
        sa.select(*columns)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.published_at, outbox.c.id)
        .limit(limit)
        .subquery("oldest")
    )


async def saga_outbox_rows(
    conn: AsyncConnection, saga_id: str
) -> tuple[list[dict[str, Any]], bool]:
    """The saga's messages not yet published, and whether every unpublished row was searched
    (False: more than `UNPUBLISHED_SEARCHED` wait, and only the oldest were)."""
    # Counted from the index alone; the rows are read for their key only up to the limit.
    counted = _oldest_unpublished(UNPUBLISHED_SEARCHED + 1, outbox.c.id)
    waiting = await conn.scalar(sa.select(sa.func.count()).select_from(counted))
    oldest = _oldest_unpublished(UNPUBLISHED_SEARCHED, *outbox.c)
    query = oldest.select().where(oldest.c.key == saga_id).order_by(oldest.c.id).limit(500)
    rows = [row_dict(r) for r in (await conn.execute(query)).mappings()]
    return rows, (waiting or 0) <= UNPUBLISHED_SEARCHED


async def audit_rows(
    conn: AsyncConnection, audit: sa.Table | None, saga_id: str
) -> list[dict[str, Any]]:
    """What operators did to this saga (the operator_actions table), oldest first."""
    if audit is None:
        return []
    order = audit.c.id if "id" in audit.c else audit.c.at
    query = sa.select(audit).where(audit.c.saga_id == saga_id).order_by(order).limit(500)
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]
