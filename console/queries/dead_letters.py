"""The dead letters pages' reads: one status's letters newest first (of one source topic, up to
an id), one letter and the replays that failed again, counts by status, whether a saga exists."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.models import dead_letters
from console.queries.rows import row_dict
from orchestrator.models import saga_instances


def _where(
    status: str, topic: str | None, before_id: int | None, up_to: int | None
) -> list[sa.ColumnElement[bool]]:
    d = dead_letters.c
    clauses = [d.status == status]
    if topic:
        clauses.append(d.source_topic == topic)
    if before_id is not None:
        clauses.append(d.id < before_id)
    if up_to is not None:
        clauses.append(d.id <= up_to)
    return clauses


async def list_dead_letters(
    conn: AsyncConnection,
    *,
    status: str,
    before_id: int | None,
    limit: int,
    topic: str | None = None,
    up_to: int | None = None,
) -> list[dict[str, Any]]:
    """One page, newest first (`up_to`: no letter newer than that id, as a bulk confirmed)."""
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
        d.replay_of,
    ).where(*_where(status, topic, before_id, up_to))
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


async def count_dead_letters(
    conn: AsyncConnection, *, status: str, topic: str | None, up_to: int | None, limit: int
) -> int:
    """How many letters match, counting at most `limit` + 1."""
    inner = (
        sa.select(dead_letters.c.id).where(*_where(status, topic, None, up_to)).limit(limit + 1)
    ).subquery()
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(inner)) or 0)


async def newest_id(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.max(dead_letters.c.id))) or 0)


async def dead_letter_ids(
    conn: AsyncConnection, *, status: str, topic: str | None, up_to: int, limit: int
) -> list[int]:
    """The ids a bulk action acts on: up to `limit`, newest first."""
    query = (
        sa.select(dead_letters.c.id)
        .where(*_where(status, topic, None, up_to))
        .order_by(dead_letters.c.id.desc())
        .limit(limit)
    )
    return [int(r[0]) for r in await conn.execute(query)]


async def replays_that_failed(conn: AsyncConnection, letter_id: int) -> list[dict[str, Any]]:
    """The letters that are replays of this one: each time its replay failed again."""
    d = dead_letters.c
    query = (
        sa.select(d.id, d.status, d.error, d.received_at)
        .where(d.replay_of == letter_id)
        .order_by(d.id)
        .limit(100)
    )
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]


async def saga_exists(conn: AsyncConnection, saga_id: str) -> bool:
    if not saga_id or len(saga_id) > 36:
        return False
    found = await conn.scalar(
        sa.select(saga_instances.c.id).where(saga_instances.c.id == saga_id)
    )
    return found is not None
