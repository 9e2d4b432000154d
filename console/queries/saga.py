"""One saga's rows for its page: the instance, its steps, timers, unsent outbox rows and what
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


async def saga_outbox_rows(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    """Messages the saga sent that are still in the outbox (published ones are pruned)."""
    query = sa.select(outbox).where(outbox.c.key == saga_id).order_by(outbox.c.id).limit(500)
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]


async def audit_rows(
    conn: AsyncConnection, audit: sa.Table | None, saga_id: str
) -> list[dict[str, Any]]:
    """What operators did to this saga (the operator_actions table), oldest first."""
    if audit is None:
        return []
    order = audit.c.id if "id" in audit.c else audit.c.at
    query = sa.select(audit).where(audit.c.saga_id == saga_id).order_by(order).limit(500)
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]
