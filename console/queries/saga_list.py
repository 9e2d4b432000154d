"""The saga listing: its filter (type, status, age, search), its sorts (by age, by duration), keyset
page cursors, its capped count, and the counts and matches a bulk action confirms and acts on."""

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
from console.queries.duration import IN_FLIGHT as IN_FLIGHT
from console.queries.duration import duration_ms, duration_s
from console.queries.rows import aware, row_dict
from console.queries.saga_search import search_clause
from orchestrator.models import saga_instances

SAGA_STATUSES = ("running", "compensating", "completed", "compensated", "failed")
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
# The listing counts at most this many matches ("more than 10,000" beyond), and sorts by duration
# the newest this many: both stay one short index walk at a million sagas.
COUNT_CAP = 10_000
SORTS = {
    "newest": "newest first",
    "oldest": "oldest first",
    "longest": "longest first",
    "shortest": "shortest first",
}


class BadFilter(ValueError):
    """A listing parameter the console does not understand (shown to the user, 400)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the listing: the (created_at, id) of a row, and its duration in
    milliseconds when the listing is sorted by duration."""

    created_at: datetime
    id: str
    duration_ms: int | None = None

    def encode(self) -> str:
        text = f"{self.created_at.isoformat()}|{self.id}"
        if self.duration_ms is not None:
            text = f"d{self.duration_ms}|{text}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            text = base64.urlsafe_b64decode(padded).decode()
            duration: int | None = None
            if text.startswith("d"):
                millis, _, text = text[1:].partition("|")
                duration = int(millis)
            created, _, saga_id = text.partition("|")
            when = datetime.fromisoformat(created)
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadFilter(f"not a page cursor: {token[:40]!r}") from exc
        if not saga_id or len(saga_id) > 200 or has_control_character(saga_id):
            raise BadFilter(f"not a page cursor: {token[:40]!r}")
        return cls(aware(when) or when, saga_id, duration)


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
            clauses.append(search_clause(self.search))
        return clauses


@dataclass(slots=True)
class SagaPage:
    rows: list[dict[str, Any]]
    older: Cursor | None  # set when there is a next page (older, newest first)
    newer: Cursor | None  # set when there is a previous page


def parse_sort(value: str) -> str:
    """The `sort` parameter, checked (default: newest first)."""
    value = value.strip() or "newest"
    if value not in SORTS:
        raise BadFilter(f"unknown sort {value!r}: one of {', '.join(SORTS)}")
    return value


async def list_sagas(
    conn: AsyncConnection,
    filters: SagaFilter,
    *,
    page_size: int,
    before: Cursor | None = None,
    after: Cursor | None = None,
    now: datetime | None = None,
    sort: str = "newest",
) -> SagaPage:
    """One page in `sort` order: the rows after `before` in that order, or those before `after`.
    Each row carries its `duration_s`. Sorted by duration, the page ranks the newest
    `COUNT_CAP` matching sagas."""
    now = now or datetime.now(UTC)
    t = saga_instances.c
    source: Any = saga_instances
    columns: list[Any] = list(LIST_COLUMNS)
    clauses: list[sa.ColumnElement[bool]] = []
    if sort in ("longest", "shortest"):
        window = (
            sa.select(*LIST_COLUMNS, duration_ms(now).label("duration_ms"))
            .where(*filters.where(now))
            .order_by(t.created_at.desc(), t.id.desc())
            .limit(COUNT_CAP)
            .subquery("newest")
        )
        source, columns = window, list(window.c)
        key: tuple[Any, Any] = (window.c.duration_ms, window.c.id)
    else:
        clauses = filters.where(now)
        key = (t.created_at, t.id)
    descending = sort in ("newest", "longest")

    def position(cursor: Cursor) -> Any:
        first = cursor.created_at if key[0] is t.created_at else cursor.duration_ms
        return sa.tuple_(sa.literal(first), sa.literal(cursor.id))

    # Forward: the rows after the cursor in listing order; backward (`after`): those before it,
    # read in reverse order and then turned around.
    cursor, forward = (after, False) if after is not None else (before, True)
    ahead = descending == forward  # listing order runs down the key
    if cursor is not None:
        if cursor.duration_ms is None and key[0] is not t.created_at:
            raise BadFilter("this page cursor belongs to another sort")
        row_key = sa.tuple_(*key)
        clauses.append(row_key < position(cursor) if ahead else row_key > position(cursor))
    order = [k.desc() for k in key] if ahead else [k.asc() for k in key]
    query = sa.select(*columns).select_from(source).where(*clauses).order_by(*order)
    rows = [row_dict(r) for r in (await conn.execute(query.limit(page_size + 1))).mappings()]
    more = len(rows) > page_size
    rows = rows[:page_size]
    if not forward:
        rows.reverse()
    for row in rows:
        row["duration_s"] = duration_s(row, now)
    first = _cursor(rows[0]) if rows else None
    last = _cursor(rows[-1]) if rows else None
    if not forward:
        return SagaPage(rows, older=last, newer=first if more else None)
    return SagaPage(rows, older=last if more else None, newer=first if before else None)


def _cursor(row: dict[str, Any]) -> Cursor:
    return Cursor(row["created_at"], row["id"], row.get("duration_ms"))


async def count_sagas(
    conn: AsyncConnection, filters: SagaFilter, *, limit: int, now: datetime | None = None
) -> int:
    """How many sagas match, counting at most `limit` + 1 (the listing's count, a bulk action's
    confirmation)."""
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
