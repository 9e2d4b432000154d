"""The saga listing: filtered, keyset-paged, newest first, with links to the bulk actions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.links import link
from console.queries.saga_list import (
    AGE_LABELS,
    SAGA_STATUSES,
    Cursor,
    SagaFilter,
    list_sagas,
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


async def saga_list(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    filters = SagaFilter.from_params(request.query_params)
    before, after = _page_cursors(request)
    async with console.db.connect() as conn:
        page = await list_sagas(
            conn, filters, page_size=console.config.page_size, before=before, after=after
        )
        types = await saga_types(conn)
    params = filters.params()
    return console.render(
        request,
        "sagas.html",
        page=page,
        filters=filters,
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
            action: link(request, "bulk_confirm", {**params, "action": action})
            for action in BULK_ACTIONS
        },
    )
