"""The dead letters page's reads: one status's letters newest first, one letter, counts by
status."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.models import dead_letters
from console.queries.rows import row_dict


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
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]


async def get_dead_letter(conn: AsyncConnection, letter_id: int) -> dict[str, Any] | None:
    row = (
        (await conn.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id)))
        .mappings()
        .first()
    )
    return row_dict(row) if row else None


async def dead_letter_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(dead_letters.c.status, sa.func.count()).group_by(dead_letters.c.status)
    )
    return {status: int(n) for status, n in rows}
