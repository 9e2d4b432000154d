"""The audit page's read: every operator action, newest first, filtered by operator, action and
time, keyset-paged on id (indexes: (actor, id), (action, id), created_at, the primary key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.queries.rows import row_dict
from orchestrator.models import operator_actions, saga_instances


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        t = operator_actions.c
        clauses: list[sa.ColumnElement[bool]] = []
        if self.actor:
            clauses.append(t.actor == self.actor)
        if self.action:
            clauses.append(t.action == self.action)
        if self.since is not None:
            clauses.append(t.created_at >= self.since)
        if self.until is not None:
            clauses.append(t.created_at < self.until)
        return clauses


async def audit_page(
    conn: AsyncConnection, filters: AuditFilter, *, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` actions older than `before_id`, newest first; `saga_known` says whether the
    saga an action names exists (links only to sagas that do)."""
    t = operator_actions.c
    clauses = filters.where()
    if before_id is not None:
        clauses.append(t.id < before_id)
    query = (
        sa.select(operator_actions, saga_instances.c.id.label("saga_known"))
        .select_from(
            operator_actions.outerjoin(saga_instances, saga_instances.c.id == t.saga_id)
        )
        .where(*clauses)
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [row_dict(r) for r in (await conn.execute(query)).mappings()]
