"""The saga listing: its filter (type, status, age, search), keyset page cursors on
(created_at, id), and the counts and matches a bulk action confirms and acts on."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from console.inputs import has_control_character
from console.queries.rows import aware, row_dict
from orchestrator.models import saga_instances

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
        if not saga_id or len(saga_id) > 200 or has_control_character(saga_id):
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
        if has_control_character(saga_type) or has_control_character(search):
            raise BadFilter("filter text holds a control character")
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
    rows = [row_dict(r) for r in (await conn.execute(query)).mappings()]
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
