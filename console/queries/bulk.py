"""The sagas a bulk action acts on: the listing filter, narrowed to the statuses the action applies
to and to sagas created before the confirmation was shown — counted, paged for the confirmation,
and read whole (at most the bulk limit) to act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.queries.rows import row_dict
from console.queries.saga_list import LIST_COLUMNS, Cursor, SagaFilter
from orchestrator.models import saga_instances


@dataclass(frozen=True, slots=True)
class BulkTargets:
    """`filters` ∧ status in `statuses` ∧ created at or before `until`."""

    filters: SagaFilter
    statuses: tuple[str, ...]
    until: datetime

    def where(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        t = saga_instances.c
        return [
            *self.filters.where(now),
            t.status.in_(self.statuses),
            t.created_at <= self.until,
        ]


async def count_targets(
    conn: AsyncConnection, targets: BulkTargets, *, limit: int, now: datetime
) -> int:
    """How many sagas it acts on, counting at most `limit` + 1."""
    inner = sa.select(saga_instances.c.id).where(*targets.where(now)).limit(limit + 1).subquery()
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(inner)) or 0)


async def skipped_by_status(
    conn: AsyncConnection, targets: BulkTargets, *, limit: int, now: datetime
) -> dict[str, int]:
    """The sagas the filter matches that the action leaves alone, by status (each count stops
    at `limit` + 1)."""
    t = saga_instances.c
    inner = (
        sa.select(t.status)
        .where(
            *targets.filters.where(now),
            t.status.not_in(targets.statuses),
            t.created_at <= targets.until,
        )
        .limit(limit + 1)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(inner.c.status, sa.func.count()).group_by(inner.c.status)
    )
    return {str(status): int(n) for status, n in rows}


async def target_page(
    conn: AsyncConnection,
    targets: BulkTargets,
    *,
    page_size: int,
    before: Cursor | None,
    now: datetime,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of the targets, newest first, and the cursor of the next page (None: last)."""
    t = saga_instances.c
    clauses = targets.where(now)
    if before is not None:
        clauses.append(
            sa.tuple_(t.created_at, t.id)
            < sa.tuple_(sa.literal(before.created_at), sa.literal(before.id))
        )
    query = (
        sa.select(*LIST_COLUMNS)
        .where(*clauses)
        .order_by(t.created_at.desc(), t.id.desc())
        .limit(page_size + 1)
    )
    rows = [row_dict(r) for r in (await conn.execute(query)).mappings()]
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, Cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None


async def all_targets(
    conn: AsyncConnection, targets: BulkTargets, *, limit: int, now: datetime
) -> list[dict[str, Any]]:
    """The ids, statuses and current steps of up to `limit` targets, newest first."""
    t = saga_instances.c
    query = (
        sa.select(t.id, t.status, t.current_step)
        .where(*targets.where(now))
        .order_by(t.created_at.desc(), t.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]
