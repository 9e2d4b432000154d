"""The saga listing: filtered, searched, sorted by age or duration, keyset-paged, with its capped
count and links to the bulk actions."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.links import link
from console.queries.saga_list import (
    AGE_LABELS,
    COUNT_CAP,
    SAGA_STATUSES,
    SORTS,
    Cursor,
    SagaFilter,
    count_sagas,
    list_sagas,
    parse_sort,
    saga_types,
)
from console.state import console_of
from console.views.actions import BULK_ACTIONS


def _page_cursors(request: Request) -> tuple[Cursor | None, Cursor | None]:
    before = request.query_params.get("before")
    after = request.query_params.get("after")
    return (
        Cursor.decode(before) if before else None,
        Cursor.decode(after) if after else None,
    )


def duration_text(seconds: float) -> str:
    """A duration as an operator reads it: ms below a second, then s, min, h, d."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


async def saga_list(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    filters = SagaFilter.from_params(request.query_params)
    sort = parse_sort(request.query_params.get("sort", ""))
    before, after = _page_cursors(request)
    now = datetime.now(UTC)
    async with console.db.connect() as conn:
        page = await list_sagas(
            conn,
            filters,
            page_size=console.config.page_size,
            before=before,
            after=after,
            now=now,
            sort=sort,
        )
        total = await count_sagas(conn, filters, limit=COUNT_CAP, now=now)
        types = await saga_types(conn)
    for row in page.rows:
        row["duration"] = duration_text(row["duration_s"])
    params = filters.params()
    bulk_params = dict(params)
    if sort != "newest":
        params["sort"] = sort
    return console.render(
        request,
        "sagas.html",
        page=page,
        filters=filters,
        sort=sort,
        sorts=SORTS,
        total=total,
        count_cap=COUNT_CAP,
        duration_column=True,
        types=types,
        statuses=SAGA_STATUSES,
        ages=AGE_LABELS,
        older_link=link(request, "saga_list", {**params, "before": page.older.encode()})
        if page.older
        else None,
        newer_link=link(request, "saga_list", {**params, "after": page.newer.encode()})
        if page.newer
        else None,
        first_link=link(request, "saga_list", params) if (before or after) else None,
        bulk_links={
            action: link(request, "bulk_confirm", {**bulk_params, "action": action})
            for action in BULK_ACTIONS
        },
    )
